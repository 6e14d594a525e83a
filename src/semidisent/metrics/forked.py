"""CPU-bound torch work on several cores in forked processes: ``fork_map`` (a map whose items
run at the same time) and ``fork_start`` (one call running in the background while this process
goes on).

The fast boosted trees (``gbt.fit_gbt``) issue thousands of small torch operations per
boosting stage; in Python threads the interpreter lock serialises the Python side of every
one of them, which cost ~20% of the two-worker DCI on the 2-core CPU (measured: the same two
task groups in two processes instead of two threads, 10.6-11.6 s against 12.0-12.6 s).
A forked child shares the parent's memory (copy on write), so nothing is pickled on the way
in; only the result comes back through a pipe. Children run torch on one thread and never
touch CUDA. Where ``fork`` is not available (not Linux-like), threads are used instead
(``fork_map``) or the call runs here when its result is asked for (``fork_start``).

A child's exception is raised in the parent as itself (its type, so that e.g. a ``ValueError``
about bad input stays one), with the child's traceback as a note; one that cannot be pickled
becomes a ``RuntimeError`` carrying that traceback.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import traceback
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from .utils import _glibc, mark_forked_child, parallel_map, torch_threads

# prctl option (linux/prctl.h): the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1

T = TypeVar("T")
R = TypeVar("R")


def fork_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]``: the first item in this process, each other one in a forked
    child at the same time, every one of them on one torch thread. A child's exception is
    raised here (module docstring); a child that dies (killed, out of memory) raises
    ``RuntimeError``. An item whose fork fails (``OSError``: e.g. strict memory overcommit
    refusing a copy of a large process) runs here afterwards."""
    if len(items) < 2:
        return [fn(x) for x in items]
    if "fork" not in mp.get_all_start_methods():
        return parallel_map(fn, items, len(items))
    ctx = mp.get_context("fork")
    children: list[tuple] = []  # (process, pipe end) or (None, item) where the fork failed
    with torch_threads(1):
        for x in items[1:]:
            receive, send = ctx.Pipe(duplex=False)
            child = ctx.Process(target=_child, args=(fn, x, send), daemon=True)
            try:
                child.start()
            except OSError:
                receive.close()
                children.append((None, x))
                continue
            finally:
                send.close()
            children.append((child, receive))
        try:
            first = fn(items[0])
            here = {i: fn(x) for i, (child, x) in enumerate(children) if child is None}
        except BaseException:
            for child, receive in children:
                if child is not None:
                    child.join(10.0)
                    if child.is_alive():
                        child.terminate()
                        child.join()
                    receive.close()
            raise
    results = [first]
    for i, (child, receive) in enumerate(children):
        if child is None:
            results.append(here[i])
            continue
        results.append(_receive(child, receive))
    return results


class Forked(Generic[R]):
    """A call running in a forked child (:func:`fork_start`); ``result()`` waits for it and
    returns its value or raises its exception, ``cancel()`` stops it and every process it
    started."""

    def __init__(self, fn: Callable[[], R], child=None, receive=None) -> None:
        self._fn, self._child, self._receive = fn, child, receive

    @property
    def forked(self) -> bool:
        """Whether the call runs in another process (else it runs in ``result()``)."""
        return self._child is not None

    def result(self, timeout: float | None = None) -> R:
        """The call's value (or its exception raised here); ``timeout``: seconds to wait, after
        which the call is cancelled and ``TimeoutError`` raised."""
        if self._child is None:
            return self._fn()
        if timeout is not None and not self._receive.poll(timeout):
            self.cancel()
            raise TimeoutError(f"a forked call took more than {timeout} s; cancelled")
        child, receive = self._child, self._receive
        self._child = None
        self._fn = _already_collected
        return _receive(child, receive)

    def cancel(self) -> None:
        if self._child is None:
            return
        child, self._child = self._child, None
        self._fn = _already_collected
        if child.is_alive():
            # The child leads its own process group: its forked workers go with it.
            try:
                os.killpg(child.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                child.terminate()
        child.join()
        self._receive.close()


def fork_start(fn: Callable[[], R]) -> Forked[R]:
    """Start ``fn()`` in a forked child, on one torch thread, and return at once: this process
    goes on with other work meanwhile (the child shares its memory as it was at the fork, copy
    on write). The child is not a daemon, so that it may fork workers of its own
    (``fork_map``); it leads a new process group, so that ``cancel()`` stops them too. Where
    fork is not available or the fork fails (``OSError``), ``fn`` runs in ``result()``."""
    if "fork" not in mp.get_all_start_methods():
        return Forked(fn)
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_own_group, args=(fn, send), daemon=False)
    with torch_threads(1):
        try:
            child.start()
        except OSError:
            receive.close()
            return Forked(fn)
        finally:
            send.close()
    return Forked(fn, child, receive)


def _already_collected():
    raise RuntimeError("the result of this forked call was already collected or cancelled")


def _receive(child, receive):
    """The value a child sent, or its exception raised here (module docstring)."""
    try:
        ok, value, trace = receive.recv()
    except EOFError:
        child.join()
        raise RuntimeError(f"a forked worker died (exit code {child.exitcode})") from None
    finally:
        receive.close()
    child.join()
    if ok:
        return value
    error = None
    if value is not None:
        try:
            error = pickle.loads(value)
        except Exception:  # an exception class that cannot be rebuilt from its arguments
            error = None
    if not isinstance(error, BaseException):
        raise RuntimeError(f"a forked worker failed:\n{trace}")
    if hasattr(error, "add_note"):  # Python >= 3.11
        error.add_note(f"raised in a forked worker:\n{trace}")
    raise error


def _own_group(fn: Callable, send) -> None:
    """A ``fork_start`` child: it leads its own process group, stops the group (its forked
    workers) on SIGTERM, and gets SIGTERM when the parent dies (Linux: a parent killed
    outright never calls ``cancel()``)."""
    os.setpgid(0, 0)
    leader = os.getpid()
    parent = os.getppid()

    def stop(signum, frame) -> None:
        if os.getpid() == leader:  # the workers inherit this handler: only the leader
            os.killpg(leader, signal.SIGKILL)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    libc = _glibc()
    if libc is not None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl
            stop(signal.SIGTERM, None)
    _child(lambda _: fn(), None, send)


def _child(fn: Callable, x, send) -> None:
    mark_forked_child()  # one thread, for good (metrics/utils.py: _FORKED_CHILD)
    try:
        send.send((True, fn(x), ""))
    except BaseException as exc:  # reported to the parent, which raises (also: unpicklable value)
        trace = traceback.format_exc()
        try:
            data = pickle.dumps(exc)
        except Exception:
            data = None
        send.send((False, data, trace))
    finally:
        send.close()
