"""Helpers shared by the metrics: discretisation, discrete mutual information, normalisation,
splits and label encoding (ports of disentanglement_lib ``evaluation/metrics/utils.py``).

Layout convention: disentanglement_lib passes codes as (num_codes, num_points); every function
here and in the metric modules takes (num_points, num_codes), the numpy / torch habit. The
``*_reference`` variants call scikit-learn exactly as dlib does; the vectorised ones compute the
same formulas in one pass (they agree to floating-point rounding).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, TypeVar

import numpy as np

Mode = Literal["reference", "fast"]
T = TypeVar("T")
R = TypeVar("R")
MODES: tuple[str, ...] = ("reference", "fast")


def check_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode  # type: ignore[return-value]


def histogram_discretize(x: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """dlib's ``_histogram_discretize``: per column, equal-width bins over the sample's own range,
    ``np.digitize(x, edges[:-1])`` -> values 1..num_bins.

    The column keeps its dtype on purpose: np.histogram's edges depend on it (float32 codes are
    compared with float64 edges, as in dlib), so casting first could move values across edges.
    """
    x = np.asarray(x)
    out = np.empty(x.shape, dtype=np.int64)
    for i in range(x.shape[1]):
        col = x[:, i]
        out[:, i] = np.digitize(col, np.histogram(col, num_bins)[1][:-1])
    return out


def mutual_info_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(p, q) matrix of ``sklearn.metrics.mutual_info_score(b[:, j], a[:, i])`` in nats, the
    double loop of dlib's ``discrete_mutual_info``."""
    from sklearn.metrics import mutual_info_score

    m = np.zeros((a.shape[1], b.shape[1]))
    for i in range(a.shape[1]):
        for j in range(b.shape[1]):
            m[i, j] = mutual_info_score(b[:, j], a[:, i])
    return m


def _dense_labels(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: labels renumbered 0..u-1 (int64 (n, p)) and the number of values u (p,)."""
    out = np.empty(x.shape, dtype=np.int64)
    sizes = np.empty(x.shape[1], dtype=np.int64)
    for i in range(x.shape[1]):
        uniq, inv = np.unique(x[:, i], return_inverse=True)
        out[:, i] = inv.reshape(-1)
        sizes[i] = len(uniq)
    return out, sizes


def mutual_info_fast(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The same matrix as :func:`mutual_info_reference` from one joint histogram of every
    (column of a, column of b) pair, with sklearn's formula on the non-zero cells."""
    a = np.asarray(a)
    b = np.asarray(b)
    n, p = a.shape
    q = b.shape[1]
    if n == 0:
        return np.zeros((p, q))
    la, na = _dense_labels(a)
    lb, nb = _dense_labels(b)
    cells = (na[:, None] * nb[None, :]).reshape(-1)  # joint table size of each pair
    offsets = np.concatenate([[0], np.cumsum(cells)[:-1]])
    joint = la[:, :, None] * nb[None, None, :] + lb[:, None, :] + offsets.reshape(p, q)[None]
    counts = np.bincount(joint.reshape(-1), minlength=int(cells.sum()))
    pair = np.repeat(np.arange(p * q), cells)
    # Marginal counts of each joint cell: row value r = cell // nb, column value c = cell % nb.
    local = np.arange(int(cells.sum())) - np.repeat(offsets, cells)
    nb_of_cell = np.repeat(np.tile(nb, p), cells)
    row = local // nb_of_cell
    col = local % nb_of_cell
    pi = np.zeros((p, int(na.max())), dtype=np.int64)
    pj = np.zeros((q, int(nb.max())), dtype=np.int64)
    for i in range(p):
        pi[i, : na[i]] = np.bincount(la[:, i], minlength=int(na[i]))
    for j in range(q):
        pj[j, : nb[j]] = np.bincount(lb[:, j], minlength=int(nb[j]))
    i_of_cell = pair // q
    j_of_cell = pair % q
    nz = counts > 0
    c = counts[nz].astype(np.float64)
    outer = pi[i_of_cell[nz], row[nz]] * pj[j_of_cell[nz], col[nz]]
    log_n = math.log(n)
    c_nm = c / n
    mi_cell = c_nm * (np.log(c) - log_n) + c_nm * (-np.log(outer.astype(np.float64)) + 2 * log_n)
    mi_cell = np.where(np.abs(mi_cell) < np.finfo(np.float64).eps, 0.0, mi_cell)
    mi = np.bincount(pair[nz], weights=mi_cell, minlength=p * q).reshape(p, q)
    mi = np.clip(mi, 0.0, None)
    # sklearn: a labelling with a single value carries no information.
    mi[(na == 1)[:, None] | (nb == 1)[None, :]] = 0.0
    return mi


def mutual_info(a: np.ndarray, b: np.ndarray, mode: Mode = "reference") -> np.ndarray:
    return mutual_info_reference(a, b) if mode == "reference" else mutual_info_fast(a, b)


def discrete_entropy(y: np.ndarray, mode: Mode = "reference") -> np.ndarray:
    """Empirical entropy (nats) of each column: dlib's ``mutual_info_score(y, y)``."""
    y = np.asarray(y)
    if mode == "reference":
        from sklearn.metrics import mutual_info_score

        return np.array([mutual_info_score(y[:, j], y[:, j]) for j in range(y.shape[1])])
    out = np.zeros(y.shape[1])
    for j in range(y.shape[1]):
        counts = np.unique(y[:, j], return_counts=True)[1]
        if len(counts) > 1:
            pr = counts / counts.sum()
            out[j] = float(-(pr * np.log(pr)).sum())
    return out


def normalize_data(
    x: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise standardisation with (optionally given) train statistics, ddof 0.

    Deviation from dlib: a constant column (std 0) is divided by 1 instead of 0; dlib would
    produce NaN and its logistic regression would raise.
    """
    x = np.asarray(x, dtype=np.float64)
    if mean is None:
        mean = x.mean(axis=0)
    if std is None:
        std = x.std(axis=0)
    safe = np.where(std > 0, std, 1.0)
    return (x - mean) / safe, mean, std


def split_train_test(x: np.ndarray, train_percentage: float) -> tuple[np.ndarray, np.ndarray]:
    """dlib's ``split_train_test`` along rows: the first ceil(n * p) rows train, the rest test."""
    n_train = int(np.ceil(len(x) * train_percentage))
    return x[:n_train], x[n_train:]


def split_labelled(
    codes: np.ndarray, labels: np.ndarray, observed: np.ndarray | None, train_percentage: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """A fixed labelled set (the few-label variants) split like dlib: (x_train, y_train, x_test,
    y_test, observed split or None when every label is observed)."""
    x_train, x_test = split_train_test(codes, train_percentage)
    y_train, y_test = split_train_test(labels, train_percentage)
    obs = None
    if observed is not None and not observed.all():
        obs = split_train_test(observed, train_percentage)
    return x_train, y_train, x_test, y_test, obs


def encode_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes, encoded) as sklearn classifiers see labels: sorted unique values, 0..K-1."""
    classes, encoded = np.unique(np.asarray(y), return_inverse=True)
    return classes, encoded.reshape(-1).astype(np.int64)


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda" when a GPU is visible, else "cpu"."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def torch_linear_models(mode: str, device: str) -> bool:
    """Whether fast mode fits its logistic regressions with torch (on a GPU) rather than
    scikit-learn's lbfgs: on CPU scikit-learn is faster for these small problems (measured
    1.2 s vs 1.7 s for the five explicitness fits of dSprites), on a GPU torch avoids the
    host."""
    return mode == "fast" and not str(device).startswith("cpu")


def as_float(x: object) -> float | int:
    """Plain Python numbers for JSON (numpy scalars are not serialisable)."""
    if isinstance(x, (bool, np.bool_)):
        return int(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    return float(x)  # type: ignore[arg-type]


# Set in a process forked by metrics/forked.py, which runs torch on one thread there: GNU OpenMP's
# thread pool, copied from the parent without its threads, deadlocks when a forked child uses
# more than one thread (seen: a VAE encoder wrapped with two threads hung in a forked DCI).
# ``limit_threads`` and ``torch_threads`` then leave the thread counts alone.
_FORKED_CHILD = False


def mark_forked_child() -> None:
    """This process was forked: run torch, OpenMP and BLAS on one thread from now on."""
    global _FORKED_CHILD
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(limits=1)  # BLAS and OpenMP of the other libraries, for the process
    _FORKED_CHILD = True


@contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Run torch, OpenMP (scikit-learn's and torch's) and BLAS on ``n`` threads (0: leave them
    as they are), restoring the settings afterwards.

    The estimators run many small operations; on a machine whose cores are shared with other
    work, OpenMP threads waiting on a descheduled sibling made them 10-15x slower in our
    measurements, while one thread loses little on an idle machine (docs/metrics.md).
    threadpoolctl is scikit-learn's own dependency for exactly this.
    """
    import torch
    from threadpoolctl import threadpool_limits

    if n <= 0 or _FORKED_CHILD:  # a forked child stays on its one thread (mark_forked_child)
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(old)


# glibc mallopt parameters (malloc.h) and the values restored afterwards: the steady state that
# glibc's own dynamic threshold reaches in a process that frees large blocks (32 MiB mmap
# threshold, trim threshold twice that).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_HEAP_DURING = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 1 << 30, _M_TOP_PAD: 64 << 20}
_HEAP_AFTER = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 64 << 20, _M_TOP_PAD: 0}


def _glibc():
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


@contextmanager
def keep_heap() -> Iterator[None]:
    """Keep freed memory in the process heap inside the block (glibc; elsewhere a no-op).

    The fast estimators allocate and free many multi-megabyte temporaries (e.g. (rows, trees)
    arrays, a dozen per boosting stage). By default glibc hands such blocks back to the kernel
    when they are freed and the next allocation faults in fresh zeroed pages; on our 2-core VM
    that cost ~15% of the fast DCI (30 boosting stages, best of 2: 3.0 s instead of 3.5 s on one
    worker, 1.7 s instead of 2.0 s on two).
    PyTorch's CPU tuning guide suggests an allocator that keeps memory (jemalloc, tcmalloc) for
    the same reason; ``mallopt`` gets it without LD_PRELOAD. Afterwards the thresholds are set
    to glibc's dynamic steady state and free memory is returned with ``malloc_trim``.
    """
    libc = _glibc()
    if libc is None:
        yield
        return
    for param, value in _HEAP_DURING.items():
        libc.mallopt(param, value)
    try:
        yield
    finally:
        for param, value in _HEAP_AFTER.items():
            libc.mallopt(param, value)
        libc.malloc_trim(0)


def resolve_workers(n: int) -> int:
    """``n`` workers, or one per CPU this process may use when ``n`` is 0: the cores it may
    run on, capped by its cgroup's CPU quota (a pod's CPU limit; without the cap a 4-CPU pod
    on a 64-core node would start 64 workers and be throttled)."""
    if n > 0:
        return n
    from ..cpus import available_cpus

    return available_cpus()


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]``, up to ``workers`` at a time in Python threads.

    For estimators whose work happens in native code that releases the GIL (torch kernels,
    scikit-learn's tree builder); torch runs on one thread meanwhile, so that the workers, not
    OpenMP teams, use the cores (no thread waits at a barrier for a descheduled sibling).
    """
    if workers <= 1 or len(items) < 2:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with torch_threads(1), ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch CPU ops on ``n`` threads (0: unchanged) inside the block; restored afterwards."""
    import torch

    old = torch.get_num_threads()
    if n <= 0 or n == old or _FORKED_CHILD:  # a forked child stays on its one thread
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
