"""fork_map and fork_start: results from other processes, a child's failure raised in the parent
as itself, its death as RuntimeError, its processes stopped when the parent gives up."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from semidisent.metrics.forked import fork_map, fork_start


def _work(seed: int) -> tuple[int, np.ndarray, int]:
    g = torch.Generator().manual_seed(seed)
    return os.getpid(), torch.randn(1000, generator=g).cumsum(0).numpy(), torch.get_num_threads()


def test_fork_map_returns_results_in_order_from_other_processes():
    got = fork_map(_work, [0, 1, 2])
    for seed, (_, values, threads) in enumerate(got):
        np.testing.assert_array_equal(values, _work(seed)[1])
        assert threads == 1
    pids = [pid for pid, _, _ in got]
    assert pids[0] == os.getpid() and len(set(pids)) == 3  # the first item runs here


def _fails(x: int) -> int:
    if x == 1:
        raise ValueError("bad item 1")
    return x


def _dies(x: int) -> int:
    if x == 1:
        os._exit(3)
    return x


def test_fork_map_raises_a_childs_error_and_death():
    with pytest.raises(ValueError, match="bad item 1") as caught:
        fork_map(_fails, [0, 1])
    notes = getattr(caught.value, "__notes__", None)
    if notes is not None:  # Python >= 3.11: the child's traceback comes along
        assert "forked worker" in notes[0] and "_fails" in notes[0]
    with pytest.raises(RuntimeError, match="exit code 3"):
        fork_map(_dies, [0, 1])
    assert fork_map(_fails, [5]) == [5]


def test_fork_map_reaps_its_children_when_this_process_fails():
    import multiprocessing

    with pytest.raises(ValueError, match="bad item 0"):
        fork_map(_fails_here, [0, 1, 2])
    assert multiprocessing.active_children() == []


def _fails_here(x: int) -> int:
    if x == 0:
        raise ValueError("bad item 0")
    return x


def test_fork_map_runs_an_item_here_when_its_fork_fails(monkeypatch):
    from multiprocessing.context import ForkProcess

    started = []

    def start(self):
        if not started:  # the first fork fails as under strict memory overcommit
            started.append(self)
            raise OSError(12, "Cannot allocate memory")
        return original(self)

    original = ForkProcess.start
    monkeypatch.setattr(ForkProcess, "start", start)
    got = fork_map(_work, [0, 1, 2])
    for seed, (_, values, _) in enumerate(got):
        np.testing.assert_array_equal(values, _work(seed)[1])
    pids = [pid for pid, _, _ in got]
    assert pids[0] == pids[1] == os.getpid() != pids[2]


class _UnpicklableError(Exception):
    def __init__(self, a, b):  # pickle rebuilds exceptions from args: (message,) lacks b
        super().__init__(f"{a} {b}")


def _raises_unpicklable(x: int) -> int:
    if x == 1:
        raise _UnpicklableError("odd", "error")
    return x


def test_an_exception_that_cannot_be_rebuilt_arrives_as_its_traceback():
    with pytest.raises(RuntimeError, match="_UnpicklableError: odd error"):
        fork_map(_raises_unpicklable, [0, 1])


def test_fork_start_runs_in_the_background_and_returns_the_value():
    call = fork_start(lambda: _work(7))
    assert call.forked
    pid, values, threads = call.result()
    assert pid != os.getpid() and threads == 1
    np.testing.assert_array_equal(values, _work(7)[1])
    with pytest.raises(RuntimeError, match="already collected"):
        call.result()


def test_fork_start_raises_the_childs_error_and_death():
    with pytest.raises(ValueError, match="bad item 1"):
        fork_start(lambda: _fails(1)).result()
    with pytest.raises(RuntimeError, match="exit code 3"):
        fork_start(lambda: _dies(1)).result()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting for its parent does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _sleep_and_report(path: str) -> None:
    """A background call that forks workers of its own (fork_map), records every pid and
    sleeps."""
    import time

    def work(i: int) -> int:
        with open(f"{path}.{i}", "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)
        return i

    fork_map(work, [0, 1, 2])


def _worker_pids(path: str) -> list[int]:
    """The three pids ``_sleep_and_report`` records, once it has."""
    import time

    files = [Path(f"{path}.{i}") for i in range(3)]
    deadline = time.monotonic() + 30
    while not all(f.exists() and f.stat().st_size for f in files):
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.05)
    return [int(f.read_text()) for f in files]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc to see processes")
def test_cancel_stops_the_background_call_and_the_workers_it_forked(tmp_path):
    import multiprocessing
    import time

    path = str(tmp_path / "pid")
    call = fork_start(lambda: _sleep_and_report(path))
    pids = _worker_pids(path)
    assert len(set(pids)) == 3 and os.getpid() not in pids
    call.cancel()
    assert multiprocessing.active_children() == []
    deadline = time.monotonic() + 10  # SIGTERM reaches the group at once; reaping may lag
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "a forked worker outlived the cancelled call"
        time.sleep(0.05)


def test_fork_start_runs_the_call_on_result_when_its_fork_fails(monkeypatch):
    from multiprocessing.context import ForkProcess

    def start(self):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(ForkProcess, "start", start)
    call = fork_start(lambda: _work(2))
    assert not call.forked
    pid, values, _ = call.result()
    assert pid == os.getpid()
    np.testing.assert_array_equal(values, _work(2)[1])


def _threads_inside(n: int) -> int:
    """Torch's thread count inside ``torch_threads(n)`` after an OpenMP-parallel op there."""
    from semidisent.metrics.utils import torch_threads

    with torch_threads(n):
        torch.ones(1 << 22).mul_(2.0).sum()
        return torch.get_num_threads()


def test_a_forked_child_stays_on_one_thread_whatever_it_asks_for():
    """GNU OpenMP's pool, copied without its threads, deadlocked a forked child that asked for
    two threads (a VAE encoder wrapped with two, evaluated in the concurrent DCI)."""
    assert _threads_inside(2) == 2  # here the pool exists and has run with two threads
    assert fork_start(lambda: _threads_inside(2)).result(timeout=60) == 1
    assert fork_map(_threads_inside, [2, 2]) == [2, 1]


def test_result_gives_up_after_its_timeout():
    import multiprocessing
    import time

    call = fork_start(lambda: time.sleep(60))
    with pytest.raises(TimeoutError, match="cancelled"):
        call.result(timeout=0.5)
    assert multiprocessing.active_children() == []


_ORPHAN = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from semidisent.metrics.forked import fork_start
from test_forked import _sleep_and_report, _worker_pids
call = fork_start(lambda: _sleep_and_report({path!r}))
_worker_pids({path!r})
os.kill(os.getpid(), signal.SIGKILL)  # no cancel(), no finally
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc to see processes")
def test_a_background_call_dies_with_a_parent_killed_outright(tmp_path):
    import subprocess
    import sys
    import time

    path = str(tmp_path / "pid")
    script = _ORPHAN.format(tests=str(Path(__file__).parent), path=path)
    done = subprocess.run([sys.executable, "-c", script], timeout=120, check=False)
    assert done.returncode == -9
    pids = _worker_pids(path)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "the background call outlived its parent"
        time.sleep(0.05)
