"""fork_map: results in item order, a child's failure or death raised in the parent."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from semidisent.metrics.forked import fork_map


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
    with pytest.raises(RuntimeError, match="ValueError: bad item 1"):
        fork_map(_fails, [0, 1])
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
