"""``fork_map``: CPU-bound torch work on several cores in forked processes.

The fast boosted trees (``gbt.fit_gbt``) issue thousands of small torch operations per
boosting stage; in Python threads the interpreter lock serialises the Python side of every
one of them, which cost ~20% of the two-worker DCI on the 2-core CPU (measured: the same two
task groups in two processes instead of two threads, 10.6-11.6 s against 12.0-12.6 s).
A forked child shares the parent's memory (copy on write), so nothing is pickled on the way
in; only the result comes back through a pipe. Children run torch on one thread and never
touch CUDA. Where ``fork`` is not available (not Linux-like), threads are used instead.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable, Sequence
from typing import TypeVar

from .utils import parallel_map, torch_threads

T = TypeVar("T")
R = TypeVar("R")


def fork_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]``: the first item in this process, each other one in a forked
    child at the same time, every one of them on one torch thread. A child's exception is
    raised here with its traceback; a child that dies (killed, out of memory) raises
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
        try:
            ok, value = receive.recv()
        except EOFError:
            child.join()
            raise RuntimeError(f"a forked worker died (exit code {child.exitcode})") from None
        finally:
            receive.close()
        child.join()
        if not ok:
            raise RuntimeError(f"a forked worker failed:\n{value}")
        results.append(value)
    return results


def _child(fn: Callable, x, send) -> None:
    import torch

    torch.set_num_threads(1)
    try:
        send.send((True, fn(x)))
    except BaseException:  # reported to the parent, which raises
        send.send((False, traceback.format_exc()))
    finally:
        send.close()
