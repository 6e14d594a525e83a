"""Fast-mode gradient-boosted trees: scikit-learn's ``GradientBoostingClassifier()`` algorithm,
every tree of a boosting stage grown at once in torch (CPU or GPU), with scikit-learn's exact
split search.

What is the same as scikit-learn 1.9 (``ensemble/_gb.py``, ``tree/_splitter.pyx``,
``tree/_partitioner.pyx``, ``tree/_criterion.pyx``), so that DCI's impurity importances and
accuracies agree:

- defaults: 100 stages, learning rate 0.1, depth 3, subsample 1, ``min_samples_leaf`` 1;
- multinomial deviance for K >= 3 classes (one regression tree per class per stage, fitted to
  the residual y_k - p_k of the stage's start), binomial for K = 2 (one tree per stage);
  the prior as initial prediction;
- squared-error regression trees on float32 features. **The candidate splits are
  scikit-learn's:** in each node, between every two adjacent values x_a < x_b of the node's
  rows with x_b > float32(x_a + 1e-7) (``FEATURE_THRESHOLD``, added in float32: e.g. adjacent
  float32 values in [1, 2) are never split, and values ~1e-4 apart by ~1e-8 are split only in
  nodes whose rows around the gap are further apart). The split maximises the SSE reduction
  N_L N_R / N (mean_L - mean_R)^2 (scikit-learn's proxy S_L^2 / N_L + S_R^2 / N_R has the same
  argmax); ties go to the lowest threshold within a feature and, between features, to a feature
  order drawn per node (scikit-learn draws it from ``random_state``, here from a hash of the
  seed, stage, level, node and tree: the draws differ, the rule is the same, so e.g. a
  duplicated feature gets about half the splits of the pair, not all of them); the threshold is
  x_a / 2 + x_b / 2 in float64 and samples go left when x <= threshold; nodes whose variance
  is <= float64 eps are not split;
- Newton leaf values sum(g) / sum(p (1 - p)), times (K - 1) / K for multinomial;
- importances: per tree, the SSE reduction of each split credited to its feature, summed over
  all trees and stages, normalised to sum 1 (scikit-learn's per-tree division by N and its
  averaging over trees are constant factors that the normalisation removes).

What differs (why fast mode is not bit-exact):

- precision: scikit-learn sums gradients sample by sample in float64; here per-bin sums are
  float32 (the histogram products) and what is computed from them float64. Gains within 1e-6
  (relative, ``_TIE``) of each other are treated as ties (position, then feature order), since
  float32 sums cannot rank them, and scikit-learn decides such near-ties by its own rounding.
  Boosting is chaotic: one decision taken the other way changes the later trees a little;
- scikit-learn may split a node of constant gradients when rounding leaves its impurity just
  above eps (a split with no gain: same predictions, no importance); fast mode does not.

How the exact search stays cheap: a branch and bound over histograms. Each feature's training
rows are sorted once. With at most 2 ``max_bins`` distinct values (small problems, few-label
pools) every value gets its own bin and all bin edges are evaluated, nothing else is needed.
Otherwise consecutive sorted values form ``max_bins`` fine bins of ~n / max_bins rows (a value
repeated that often gets its own bin), ``_COARSE`` (8) fine bins a coarse bin, and per tree
level, for every (feature, node, tree):

1. histograms come from one sparse one-hot (feature-bin x sample) by (sample x column) product:
   gradient sums and counts of the left children (the right sibling's are its parent's minus its
   left sibling's) and sums of |gradient - c| with c the node's mean (the last level: the
   parent's mean, so that these too can be subtracted); coarse bins sum 8 fine bins. Each
   level's product inputs and outputs are buffers kept from stage to stage (``_Workspace``);
   each block of input columns is written by one broadcast operation over the nodes;
2. every coarse-bin edge is evaluated (float32, a few features at a time; each feature's best
   again in float64): an edge is a valid candidate in every node with rows on both sides, unless
   its gap is "soft" (<= 1e-7, see above: such edges are kept aside and checked, from the node's
   rows on either side, only if they could win). G* = the best valid gain so far;
3. a split strictly inside a bin (c node rows, left counts C_0 / C_1 and F = N S_L - S N_L at its
   two edges, A its rows' sum of |gradient - node mean|) has gain at most
   (|F_0 + F_1| + N A)^2 / (4 min over its positions of N_L N_R): F moves by N (g_i - mean) per
   row, so it rises above the mean of its end values by at most half of N A (plus N c |mean - c|
   when the deviations are centred on the parent's mean, plus a bound of the float32 rounding).
   Coarse bins whose bound reaches G* are opened: their fine edges are evaluated, the bound is
   applied to each fine bin, and the rows of the fine bins that still qualify are scanned in
   sorted order (cumulative sums of the node's gradients give every midpoint's gain; a split
   after a node row is valid if the next node row of the bin lies past the end of the row's
   run of values without a gap above 1e-7, when that run spans at most 1e-7, else by their
   values). The two coarse bins around each node's best coarse edge go first: the best split
   is usually near it, and the higher G* it gives opens fewer bins. G* is raised by every
   valid candidate found, and pruning keeps whatever may still tie with it (within 3e-6,
   ``_KEEP``). On the dSprites DCI problems ~7% of the coarse bins are opened;
4. per (node, tree) the best candidate (ties as above); its threshold comes from the values of
   the N_L-th and (N_L + 1)-th node rows in the feature's sorted order.

Results do not depend on how trees are grouped into workers: the product's columns are padded
to a multiple of 32 (the sparse kernel's summation order depends on the number of columns
otherwise), coarse sums are added in a fixed order and gains use no fused multiply-add (whose
vector and scalar paths round differently).

Rows carry their node in every tree as one byte; a level routes them by looking up each row's
(node, tree) feature and threshold with the int32 (node, tree) index that also serves
``bincount`` (node sums, leaf values) and gathering its value; one exp gives every task's class
probabilities. Test rows are routed after each stage with its splits. On the CPU, groups of
tasks can be boosted side by side in forked processes (``workers``). Cost: on the dSprites DCI
problem (10,000 rows, 10 features, 113 trees per stage) one worker spends ~45% of its time in
the search (steps 2-4; the fine edges and row scans of the opened bins ~30%), ~25% in the
histograms (step 1, about half of it the product), ~10% routing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .forked import fork_map
from .utils import encode_labels

EPSILON = float(np.finfo(np.float64).eps)
# scikit-learn's FEATURE_THRESHOLD (tree/_partitioner.pxd), a float32 added in float32.
FEATURE_THRESHOLD = np.float32(1e-7)
# Fine bins per coarse bin of the branch and bound (features with fewer than 4 coarse bins'
# worth of fine bins are searched bin by bin).
_COARSE = 8
# Relative rounding of one float32 addition (unit roundoff): a float32 sum of c terms is within
# c times this of the sum, relative to the sum of their absolute values.
_F32_SUM = float(np.finfo(np.float32).eps)
_F64 = torch.float64
# Gains closer than this (relative) count as tied (_Candidates).
_TIE = 1e-6
# A candidate below this fraction of its node's best valid gain so far cannot be chosen (nor
# be tied with the chosen one: ties are within _TIE of the best feature's best, itself within
# _TIE of the node's best): it is not kept.
_KEEP = 1 - 3 * _TIE
# Elements of a (features, bins, nodes, trees) block evaluated at once on the CPU: 2^18 float32
# = 1 MiB, so that its few temporaries stay in cache.
_CHUNK = 1 << 18


@dataclass
class GBTResult:
    importances: list[np.ndarray]  # per task: (D,) normalised to sum 1 (zeros if no split)
    train_pred: list[np.ndarray]  # per task: predicted labels of the training rows
    test_pred: list[np.ndarray]  # per task: predicted labels of the test rows


def _bins(x: np.ndarray, max_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sort one float32 feature and cut the sorted values into bins.

    Returns the stable sort order, the sorted values, the bin (0, 1, ...) of each sorted
    position and, per bin, whether the gap before it is "soft": its value is at most
    float32(previous value + 1e-7), so scikit-learn splits there only in nodes whose rows
    around the gap are further apart. With at most ``max_bins`` distinct values each gets its
    own bin; otherwise bins hold about n / max_bins rows, and a value repeated at least that
    often gets a bin of its own.
    """
    order = np.argsort(x, kind="stable")
    xs = x[order]
    n = len(xs)
    first = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # first position of each value
    uniq = xs[first]
    counts = np.diff(np.r_[first, n])
    if len(uniq) <= max_bins:
        start = np.r_[False, np.ones(len(uniq) - 1, bool)]
    else:
        target = n / max_bins
        quantile = np.floor(first / target)  # first = number of rows below the value
        heavy = counts >= target
        start = np.r_[False, (quantile[1:] > quantile[:-1]) | heavy[1:] | heavy[:-1]]
    soft = ~np.r_[True, uniq[1:] > uniq[:-1] + FEATURE_THRESHOLD]  # float32 arithmetic
    return order, xs, np.repeat(np.cumsum(start), counts), soft[start | (np.arange(len(uniq)) == 0)]


class _Histograms:
    """(D * B) x n one-hot matrix of training samples' bins; ``of(W)`` = per-bin sums of the
    columns of W (n, k) -> (D, B, k)."""

    dtype = torch.float32

    def __init__(self, bins: np.ndarray, n_bins: int, device: torch.device):
        n, d = bins.shape
        self.d, self.b = d, n_bins
        rows = (np.arange(d)[None, :] * n_bins + bins).reshape(-1)
        cols = np.repeat(np.arange(n), d)
        if device.type == "cpu":
            order = np.argsort(rows, kind="stable")
            crow = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=d * n_bins))])
            with warnings.catch_warnings():  # "CSR support is in beta" on every call
                warnings.simplefilter("ignore", UserWarning)
                self.matrix = torch.sparse_csr_tensor(
                    torch.from_numpy(crow),
                    torch.from_numpy(cols[order]),
                    torch.ones(len(rows), dtype=self.dtype),
                    size=(d * n_bins, n),
                    check_invariants=False,
                )
        else:  # dense one-hot: one cuBLAS GEMM beats sparse kernels at these sizes
            dense = torch.zeros(d * n_bins, n, dtype=self.dtype, device=device)
            dense[torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)] = 1.0
            self.matrix = dense

    def of(self, w: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``out``: a (D B, k) buffer to write into. Without it the sparse product zeroes a fresh
        result and copies it (measured: ~40% of the product's time at ~1400 columns); addmm with
        beta 0 ignores the buffer's contents (same sums, bit for bit)."""
        if out is None:
            return (self.matrix @ w).reshape(self.d, self.b, -1)
        torch.addmm(out, self.matrix, w, beta=0.0, out=out)
        return out.view(self.d, self.b, -1)

    def columns(self, n: int, k: int, device: torch.device) -> torch.Tensor:
        """An (n, k') float32 buffer for ``of``, k' >= k: on the CPU k is padded with zero columns
        to a multiple of 32, because the sparse kernel's summation order for a column depends on
        the number of columns unless it is one (measured), and a tree's histograms must not
        depend on how many trees share the product (workers). Fill its first k columns."""
        width = -(-k // 32) * 32 if self.matrix.layout == torch.sparse_csr else k
        buf = torch.empty(n, width, dtype=self.dtype, device=device)
        buf[:, k:] = 0.0
        return buf


class _Workspace:
    """One group's histogram-product buffers per tree level, kept from stage to stage (their
    shapes only depend on the level): inputs from ``_Histograms.columns`` (the zero padding is
    written once) and outputs, so that no stage allocates, zeroes or copies them again."""

    def __init__(self, hist: _Histograms) -> None:
        self.hist = hist
        self.inputs: dict[int, torch.Tensor] = {}
        self.outputs: dict[int, torch.Tensor] = {}

    def columns(self, depth: int, n: int, k: int, device: torch.device) -> torch.Tensor:
        buf = self.inputs.get(depth)
        if buf is None or buf.shape[0] != n or buf.shape[1] < k or buf.shape[1] >= k + 32:
            buf = self.inputs[depth] = self.hist.columns(n, k, device)
        return buf

    def of(self, depth: int, w: torch.Tensor) -> torch.Tensor:
        shape = (self.hist.d * self.hist.b, w.shape[1])
        out = self.outputs.get(depth)
        if out is None or out.shape != shape:
            out = self.outputs[depth] = torch.empty(shape, dtype=w.dtype, device=w.device)
        return self.hist.of(w, out)


def fit_gbt(
    x_train: np.ndarray,
    ys_train: list[np.ndarray],
    x_test: np.ndarray | None = None,
    n_estimators: int = 100,
    learning_rate: float = 0.1,
    max_depth: int = 3,
    max_bins: int = 384,
    device: str = "cpu",
    workers: int = 1,
    seed: int = 0,
) -> GBTResult:
    """Fit one boosted classifier per label vector of ``ys_train`` on the shared features
    ``x_train`` (n, D); predict the training rows and ``x_test``.

    ``max_bins``: fine histogram bins per feature of the exact split search; a speed setting
    only (the splits are the same for any value, to float rounding). ``seed``: the per-node
    feature order that breaks ties between equally good features.

    ``workers`` > 1 (CPU): the label vectors are split into that many groups of about equal
    numbers of trees, boosted at the same time in forked processes (``forked.fork_map``: in
    threads the interpreter lock serialised the Python side of the many small operations),
    each on one torch thread. The problems are independent and each tree's tie-breaking order
    depends on its index among all trees only, so the predictions are one worker's and the
    importances too, to float rounding (the sparse histogram product may sum in another order
    for another number of columns).
    """
    data = _Data(x_train, x_test, max_bins, torch.device(device))
    tasks = [encode_labels(y) for y in ys_train]
    trees = [_trees_of(classes) for classes, _ in tasks]
    first_tree = np.concatenate([[0], np.cumsum(trees)[:-1]]).astype(np.int64)
    settings = _Settings(n_estimators, learning_rate, max_depth, seed)

    def boost(group: list[int]) -> GBTResult:
        ids = [first_tree[i] + c for i in group for c in range(trees[i])]
        return _boost([tasks[i] for i in group], data, settings, np.asarray(ids, np.int64))

    groups = _groups(trees, workers)
    if data.device.type != "cpu" or len(groups) < 2:
        return boost(list(range(len(tasks))))
    parts = fork_map(boost, groups)
    # Back to the order of ys_train.
    found = {}
    for g, part in zip(groups, parts, strict=True):
        for j, i in enumerate(g):
            found[i] = (part.importances[j], part.train_pred[j], part.test_pred[j])
    imp, train, test = zip(*(found[i] for i in range(len(tasks))), strict=True)
    return GBTResult(list(imp), list(train), list(test))


@dataclass(frozen=True)
class _Settings:
    n_estimators: int
    learning_rate: float
    max_depth: int
    seed: int


def _trees_of(classes: np.ndarray) -> int:
    """Regression trees per stage: one per class (multinomial), one (binomial), none (1 class)."""
    k = len(classes)
    return k if k > 2 else (1 if k == 2 else 0)


def _groups(trees: list[int], workers: int) -> list[list[int]]:
    """Task indices in at most ``workers`` groups with about equal total trees (largest task
    first into the emptiest group); empty groups are dropped."""
    workers = max(1, min(workers, sum(1 for t in trees if t)))
    groups: list[list[int]] = [[] for _ in range(workers)]
    load = [0] * workers
    for i in sorted(range(len(trees)), key=lambda i: -trees[i]):
        g = load.index(min(load))
        groups[g].append(i)
        load[g] += trees[i]
    return [sorted(g) for g in groups if g]


class _Data:
    """What every group of problems shares: float32 features, each feature's sort order and
    sorted values, the fine bins (first and last sorted position, smallest value, whether they
    hold more than one value), the (feature-bin x sample) histogram matrix and the root's
    per-bin counts."""

    def __init__(self, x_train, x_test, max_bins: int, device: torch.device):
        x_train = np.asarray(x_train, dtype=np.float32)  # scikit-learn trees work in float32
        x_test = np.zeros((0, x_train.shape[1]), np.float32) if x_test is None else x_test
        x_test = np.asarray(x_test, dtype=np.float32)
        self.device = device
        self.n, self.d = x_train.shape
        self.m = len(x_test)
        # Up to 2 max_bins distinct values a feature gets one bin per value: its bin edges are
        # all its candidate splits, and with every feature so no search inside bins is needed
        # (coarse bins = fine bins, all edges evaluated: small problems, few-label pools).
        # (Whether every value has its own bin, not how many bins there are: 2 max_bins
        # quantile bins of a feature with more values can number fewer than 2 max_bins, which
        # doubled every table of the search on features with repeated values.)
        cut = [_bins(x_train[:, j], 2 * max_bins) for j in range(self.d)]
        cut = [
            c
            if c[2][-1] + 1 == 1 + np.count_nonzero(c[1][1:] != c[1][:-1])
            else _bins(x_train[:, j], max_bins)
            for j, c in enumerate(cut)
        ]
        fine = max(int(b[2][-1]) + 1 for b in cut)
        per_value = all(c[2][-1] + 1 == len(np.unique(c[1])) for c in cut)
        self.r = _COARSE if fine >= 4 * _COARSE and not per_value else 1
        self.per_value = per_value  # no split inside any bin: no bounds, no scans
        self.b = -(-fine // self.r) * self.r  # padded to whole coarse bins
        bins = np.empty((self.n, self.d), np.int64)
        start = np.full((self.d, self.b), self.n, np.int64)  # padding: empty bins
        stop = np.full((self.d, self.b), self.n, np.int64)
        low = np.full((self.d, self.b), np.inf, np.float32)
        high = np.full((self.d, self.b), -np.inf, np.float32)
        hard_inside = np.zeros((self.d, self.b), bool)
        simple = np.ones((self.d, self.b), bool)
        run_end = np.empty((self.d, self.n), np.int64)
        soft = np.zeros((self.d, self.b + 1), bool)  # the gap before bin b (b = B: none)
        for j, (order, xs, b, soft_j) in enumerate(cut):
            bins[order, j] = b
            soft[j, : len(soft_j)] = soft_j
            ids = np.arange(b[-1] + 1)
            start[j, ids] = np.searchsorted(b, ids, side="left")
            stop[j, ids] = np.searchsorted(b, ids, side="right")
            low[j, ids] = xs[start[j, ids]]
            high[j, ids] = xs[stop[j, ids] - 1]
            gap = np.flatnonzero(xs[1:] > xs[:-1] + FEATURE_THRESHOLD)  # hard gap after gap
            hard_inside[j] = np.bincount(b[gap], weights=b[gap + 1] == b[gap], minlength=self.b) > 0
            # Runs: sorted positions between hard gaps; a tight run spans at most 1e-7.
            first = np.r_[0, gap + 1]
            last = np.r_[gap, self.n - 1]
            tight = ~(xs[last] > xs[first] + FEATURE_THRESHOLD)
            run = np.repeat(np.arange(len(first)), last - first + 1)
            run_end[j] = last[run]
            inner = np.flatnonzero(b[1:] == b[:-1])  # position pairs inside one bin
            close = inner[~(xs[inner + 1] > xs[inner] + FEATURE_THRESHOLD)]
            simple[j, b[close[~tight[run[close]]]]] = False
        # Whether a split inside a bin is possible in some node (its values span more than
        # 1e-7) and at the root (a hard gap inside it); the same for coarse bins, whose fine
        # edges count as inside.
        splittable = high > low + FEATURE_THRESHOLD
        r = self.r
        coarse_shape = (self.d, self.b // r, r)
        inner_hard = ~soft[:, 1:].copy()
        inner_hard[:, r - 1 :: r] = False  # a coarse bin's last fine edge is its own edge
        low_c = low.reshape(coarse_shape).min(2)
        high_c = high.reshape(coarse_shape).max(2)
        with torch.inference_mode():
            self.hist = _Histograms(bins, self.b, device)
            self.x_tr = torch.as_tensor(x_train, device=device)
            self.x_te = torch.as_tensor(x_test, device=device)
            # Each feature's sort order, flat (feature, sorted position) -> training row.
            order = np.stack([c[0] for c in cut]).astype(np.int32).reshape(-1)
            self.order = torch.as_tensor(order, device=device)
            # Runs of sorted values without a gap > 1e-7 (a "hard" gap): two rows of one run
            # that spans at most 1e-7 cannot be split (scikit-learn's FEATURE_THRESHOLD), two
            # rows with a hard gap between them can. In a simple bin every run is such a tight
            # one, so a split after a node row is valid iff the next node row lies after the
            # end of the row's run (``run_end``, flat (feature, position)): no values needed.
            self.simple = torch.as_tensor(simple, device=device)
            run_end += np.arange(self.d)[:, None] * self.n  # flat, as ``order``
            self.run_end = torch.as_tensor(run_end.reshape(-1), device=device)
            widths = (stop - start)[splittable]
            self.usual_width = int(np.percentile(widths, 95)) if len(widths) else 0
            self.sorted = torch.as_tensor(np.stack([c[1] for c in cut]), device=device)
            self.start = torch.as_tensor(start, device=device)
            self.width = torch.as_tensor(stop - start, device=device)
            self.low = torch.as_tensor(low, device=device)
            self.soft = torch.as_tensor(soft, device=device)
            self.any_soft = bool(soft.any())
            self.splittable = [  # per level: [root, deeper levels]; fine (D, B), coarse (D, Bc)
                (
                    torch.as_tensor(hard_inside, device=device),
                    torch.as_tensor(
                        (hard_inside | inner_hard).reshape(coarse_shape).any(2), device=device
                    ),
                ),
                (
                    torch.as_tensor(splittable, device=device),
                    torch.as_tensor(high_c > low_c + FEATURE_THRESHOLD, device=device),
                ),
            ]
            self.multi = torch.as_tensor(low != high, device=device)
            # Rows per bin (exact integers) and per coarse bin, and the rounding budget per
            # bin (float32 sums over its rows and a few more additions, see _may_beat).
            ones = torch.ones(self.n, 1, dtype=self.hist.dtype, device=device)
            self.root_count = self.hist.of(ones)[:, :, 0].contiguous()  # (D, B)
            self.roundings = (self.width + 16).to(_F64)
            coarse_width = (stop - start).reshape(coarse_shape).sum(2)
            self.coarse_roundings32 = torch.as_tensor(
                coarse_width + 16, dtype=torch.float32, device=device
            )


@torch.inference_mode()
def _boost(tasks, data: _Data, settings: _Settings, tree_ids: np.ndarray) -> GBTResult:
    """Boost the problems of ``tasks`` ((classes, encoded labels) each) together; ``tree_ids``
    numbers their trees among all of fit_gbt's (for the tie-breaking order)."""
    dev = data.device
    n, d, m = data.n, data.d, data.m
    max_depth, learning_rate = settings.max_depth, settings.learning_rate
    # Problems: one per class of a multinomial task, one per binomial task, none if 1 class.
    cols: list[tuple[int, int]] = []  # (first column, number of columns) per task
    targets = []
    for classes, enc in tasks:
        k = len(classes)
        start = len(targets)
        if k == 2:
            targets.append(enc == 1)
        elif k > 2:
            targets.extend(enc == c for c in range(k))
        cols.append((start, len(targets) - start))
    T = len(targets)
    importances = torch.zeros(T, d, dtype=_F64, device=dev)
    raw = torch.zeros(n + m, T, dtype=_F64, device=dev)
    raw_tr, raw_te = raw[:n], raw[n:]
    eps = np.finfo(np.float64).eps
    if T:
        Y = torch.as_tensor(np.stack(targets, axis=1), device=dev).to(_F64)
        factor = torch.ones(T, dtype=_F64, device=dev)
        for (classes, _), (start, width) in zip(tasks, cols, strict=True):
            if width == 0:
                continue
            prior = Y[:, start : start + width].mean(0).clamp(eps, 1 - eps)
            if len(classes) == 2:
                raw[:, start] = torch.log(prior / (1 - prior))
            else:
                logp = torch.log(prior)
                raw[:, start : start + width] = logp - logp.mean()
                factor[start : start + width] = (width - 1) / width
        n_leaves = 2**max_depth
        trees = torch.arange(T, dtype=torch.int32, device=dev)
        ids = torch.as_tensor(tree_ids, device=dev)
        probs = _Probabilities(tasks, cols, T, dev)
        work = _Workspace(data.hist)
        for stage in range(settings.n_estimators):
            prob = probs(raw_tr)
            grad = Y - prob
            order = _TieOrder(settings.seed, stage, ids, d)
            leaf, splits, imp = _grow_stage(grad, data, max_depth, order, work)
            importances += imp
            # Newton leaf values of every (leaf, tree): sum(g) / sum(p (1 - p)).
            tr_leaf = _flat(leaf, trees, n_leaves)
            num = torch.bincount(tr_leaf, grad.reshape(-1), minlength=n_leaves * T)
            hess = torch.addcmul(prob, prob, prob, value=-1.0)
            den = torch.bincount(tr_leaf, hess.reshape(-1), minlength=n_leaves * T)
            value = torch.where(den.abs() < 1e-150, torch.zeros_like(num), num / den)
            step = (value.reshape(n_leaves, T) * factor[None, :] * learning_rate).reshape(-1)
            raw_tr += step.index_select(0, tr_leaf).reshape(n, T)
            if m:
                te_leaf = _flat(_route(data.x_te, splits), trees, n_leaves)
                raw_te += step.index_select(0, te_leaf).reshape(m, T)

    imp_out, train_pred, test_pred = [], [], []
    imp_np = importances.cpu().numpy()
    raw_np = raw.cpu().numpy()
    for (classes, _), (start, width) in zip(tasks, cols, strict=True):
        if width == 0:
            imp_out.append(np.zeros(d))
            train_pred.append(np.full(n, classes[0]))
            test_pred.append(np.full(m, classes[0]))
            continue
        total = imp_np[start : start + width].sum(0)
        imp_out.append(total / total.sum() if total.sum() > 0 else np.zeros(d))
        r = raw_np[:, start : start + width]
        idx = (r[:, 0] > 0).astype(np.int64) if len(classes) == 2 else r.argmax(1)
        pred = classes[idx]
        train_pred.append(pred[:n])
        test_pred.append(pred[n:])
    return GBTResult(imp_out, train_pred, test_pred)


class _Probabilities:
    """Class probabilities of every boosting problem from the raw predictions (n, T): softmax
    over each multinomial task's columns, sigmoid for a binomial task's one column.

    All tasks at once: exp of the whole table, per-task sums by one small matrix product, a
    division, instead of one softmax per task over a strided column slice (2.5x the time on
    the CPU). Without the max subtraction exp can overflow or, for a whole task, underflow;
    then (checked on the (n, tasks) sums) the per-task softmax of torch is used instead.
    """

    def __init__(self, tasks, cols, T: int, dev: torch.device):
        self.spans = [
            (start, width, len(classes) == 2)
            for (classes, _), (start, width) in zip(tasks, cols, strict=True)
            if width
        ]
        member = torch.zeros(T, len(self.spans), dtype=_F64, device=dev)
        self.offset = torch.zeros(len(self.spans), dtype=_F64, device=dev)
        task_of = torch.zeros(T, dtype=torch.int64, device=dev)
        for i, (start, width, binomial) in enumerate(self.spans):
            member[start : start + width, i] = 1.0
            task_of[start : start + width] = i
            if binomial:  # sigmoid(r) = e^r / (1 + e^r): the other class's logit is 0
                self.offset[i] = 1.0
        self.member, self.task_of = member, task_of

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        e = torch.exp(raw)
        sums = torch.addmm(self.offset, e, self.member)  # (n, tasks)
        if bool(torch.isfinite(sums).all() & (sums > 0).all()):
            return e.div_(sums.index_select(1, self.task_of))
        prob = torch.empty_like(raw)
        for start, width, binomial in self.spans:
            r = raw[:, start : start + width]
            prob[:, start : start + width] = torch.sigmoid(r) if binomial else r.softmax(1)
        return prob


_MASK31 = 0x7FFFFFFF


def _mix(h: torch.Tensor) -> torch.Tensor:
    """A 31-bit integer hash (xor-shift-multiply rounds; products stay below 2^62)."""
    h = h & _MASK31
    h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & _MASK31
    h = ((h ^ (h >> 12)) * 0x297A2D39) & _MASK31
    return h ^ (h >> 15)


class _TieOrder:
    """The feature order that breaks ties between equally good features of a node, as
    scikit-learn's per-node random feature order does: priorities (D, nodes, T) from a hash of
    (seed, stage, level, node, tree index among all trees, feature), so that they do not depend
    on how trees are grouped into workers."""

    def __init__(self, seed: int, stage: int, tree_ids: torch.Tensor, d: int):
        base = _mix(torch.tensor(seed, dtype=torch.int64, device=tree_ids.device))
        self.base = _mix(base ^ stage)
        self.trees = tree_ids
        self.d = d

    def __call__(self, level: int, k: int) -> torch.Tensor:
        dev = self.trees.device
        h = _mix(self.base ^ level)
        h = _mix(h ^ torch.arange(k, dtype=torch.int64, device=dev)[None, :, None])
        h = _mix(h ^ self.trees[None, None, :])
        return _mix(h ^ torch.arange(self.d, dtype=torch.int64, device=dev)[:, None, None])


def _float32_at_most(t: torch.Tensor) -> torch.Tensor:
    """The largest float32 <= t (float64): for float32 x, x <= t  <=>  x <= this value."""
    t32 = t.to(torch.float32)
    below = torch.nextafter(t32, torch.full_like(t32, -torch.inf))
    return torch.where(t32.to(_F64) > t, below, t32)


def _node_dtype(max_depth: int) -> torch.dtype:
    return torch.uint8 if max_depth <= 8 else torch.int32


def _go_right(
    x: torch.Tensor, node: torch.Tensor | None, split: tuple, at: torch.Tensor | None = None
) -> torch.Tensor:
    """(rows, T) bool: whether each row goes right in its node's split at one level.

    ``split`` = (feat, thr32), each (k, T) for the level's k nodes; ``at``: the rows' flat
    (node, tree) indices (:func:`_flat`), if at hand. Every row's feature and threshold are
    looked up by ``at`` and its value gathered: one pass whatever the number of nodes (a
    compare per node on whole feature columns cost k passes, 2.7x the time at 4 nodes).
    """
    feat, thr32 = split
    if node is None:
        return torch.index_select(x, 1, feat[0]) > thr32[0]
    n, T = node.shape
    if at is None:
        at = _flat(node, torch.arange(T, dtype=torch.int32, device=node.device), feat.shape[0])
    f = feat.reshape(-1).index_select(0, at).view(n, T)
    return torch.gather(x, 1, f) > thr32.reshape(-1).index_select(0, at).view(n, T)


def _flat(node: torch.Tensor, trees: torch.Tensor, k: int) -> torch.Tensor:
    """Flat int32 indices node * T + tree into a (k, T) table, for ``bincount`` and
    ``index_select`` (int64 index arithmetic costs ~4x more memory traffic on the CPU)."""
    if node.shape[1] * k >= 2**31:
        raise ValueError("too many (node, tree) pairs for int32 indices")
    return (node.to(torch.int32) * node.shape[1] + trees).reshape(-1)


def _descend(
    x: torch.Tensor,
    node: torch.Tensor | None,
    split: tuple,
    max_depth: int,
    at: torch.Tensor | None = None,
) -> torch.Tensor:
    """Every row's node one level down: node j (of k at this level) goes to j or j + k."""
    right = _go_right(x, node, split, at).to(_node_dtype(max_depth))
    return right if node is None else node + right * split[0].shape[0]


def _route(x: torch.Tensor, splits: list[tuple]) -> torch.Tensor:
    """Leaf (bit-reversed heap order) of every row of ``x`` in every tree of a stage."""
    node = None
    for split in splits:
        node = _descend(x, node, split, len(splits))
    assert node is not None
    return node


class _Level:
    """The histograms of one level's k nodes (bit-reversed heap order), statistics [gradient
    sum, count, sum of |gradient - c|] with c a per-node centre: the node's own mean (``own``)
    or, on the last level, its parent's mean (those sums can be subtracted like the others).

    Fine bins are read where needed from ``out``, the matrix product's (D, B, C, T) output
    (a view of ``padded``, its (D, B, C T + padding) storage):
    the root's [sum, |deviation|], or, below, the left children's sums (h = k / 2 columns),
    counts (h) and |deviation| sums (k if ``own``, else h); the right children's other
    statistics are their parents' minus their left siblings' (the parent of node j is
    j mod k/2), ``right`` (D, B, S, h, T). ``coarse`` (D, Bc, 3, k, T) float32 holds every
    coarse bin; ``mean`` (k, T) the nodes' means, ``shift`` (k, T) |mean - centre|."""

    SUM, COUNT, ABS = 0, 1, 2

    def __init__(self, data: _Data, padded, parent: _Level | None, mean, own: bool = True):
        self.data, self.padded, self.parent, self.mean, self.own = data, padded, parent, mean, own
        T = mean.shape[1]
        D, B, _ = padded.shape
        C = 2 if parent is None else 2 * parent.k + (2 * parent.k if own else parent.k)
        out = self.out = padded[:, :, : C * T].unflatten(2, (C, T))
        R, Bc = data.r, data.b // data.r
        # Coarse sums by elementwise additions in a fixed order (a sum() reduction's order
        # depends on the size of the trailing dimensions, i.e. on the number of trees).
        rows = padded.reshape(D, Bc, R, -1)  # contiguous rows of the padded storage
        red = rows[:, :, 0].clone()
        for r in range(1, R):
            red += rows[:, :, r]
        red = red[:, :, : C * T].unflatten(2, (C, T))
        if parent is None:
            self.k = self.h = 1
            self.right = None
            self.shift = torch.zeros_like(mean)
            count = data.root_count.reshape(D, Bc, R).sum(2)[:, :, None].expand(D, Bc, T)
            self.coarse = torch.stack([red[:, :, 0], count, red[:, :, 1]], 2)[:, :, :, None]
            return
        h = self.h = parent.k
        self.k = 2 * h
        stats = 2 if own else 3  # subtracted for the right children
        left = red[:, :, : stats * h].reshape(D, Bc, stats, h, T)
        coarse = torch.cat([left, parent.coarse[:, :, :stats] - left], 3)
        if own:
            coarse = torch.cat([coarse, red[:, :, None, 2 * h :]], 2)
            self.shift = torch.zeros_like(mean)
        else:
            self.shift = (mean - parent.mean.repeat(2, 1)).abs()
        self.coarse = coarse
        self.right = torch.empty(D, B, stats, h, T, dtype=out.dtype, device=out.device)
        for stat in range(stats):
            for p in range(h):
                torch.sub(
                    parent.fine(stat, p), out[:, :, stat * h + p], out=self.right[:, :, stat, p]
                )

    def fine(self, stat: int, j: int) -> torch.Tensor:
        """(D, B, T) statistic ``stat`` of node j per fine bin (|deviation| sums only of an
        ``own`` level)."""
        if self.parent is None:
            if stat == self.COUNT:
                return self.data.root_count[:, :, None]
            return self.out[:, :, 0 if stat == self.SUM else 1]
        if stat == self.ABS and self.own:
            return self.out[:, :, 2 * self.h + j]
        if j < self.h:
            return self.out[:, :, stat * self.h + j]
        return self.right[:, :, stat, j - self.h]

    def block(self, d, e, j, t) -> torch.Tensor:
        """float64 (3, S, R) [sum, count, |deviation| sum] of the R fine bins of coarse bin e
        of feature d, node j, tree t (1-D index tensors of length S): one gather per table on
        strided views, not per-element flat indices as in ``take``."""
        R = self.data.r
        D, B, C, T = self.out.shape
        out = self.padded.view(D, B // R, R, -1)[..., : C * T].unflatten(3, (C, T))
        if self.parent is None:
            count = self.data.root_count.view(D, B // R, R)[d, e]
            return torch.stack([out[d, e, :, 0, t], count, out[d, e, :, 1, t]]).to(_F64)
        h = self.h
        stats = self.right.shape[2]
        left = j < h
        jl = torch.where(left, j, 0)
        jr = torch.where(left, 0, j - h)
        mine = out[..., : stats * h, :].unflatten(3, (stats, h))[d, e, :, :, jl, t]
        right = self.right.view(D, B // R, R, stats, h, T)[d, e, :, :, jr, t]
        vals = torch.where(left[:, None, None], mine, right).permute(2, 0, 1)  # (stats, S, R)
        if self.own:
            vals = torch.cat([vals, out[d, e, :, 2 * h + j, t][None]])
        return vals.to(_F64)

    def take(self, d, b, j, t) -> torch.Tensor:
        """float64 (3, *shape) [sum, count, |deviation| sum] in fine bin b of feature d, node j,
        tree t (index tensors of one shape)."""
        _, B, _, T = self.out.shape
        width = self.padded.shape[2]
        cell = d * B + b
        if self.parent is None:
            return torch.stack(
                [
                    torch.take(self.padded, cell * width + t),
                    torch.take(self.data.root_count, cell),
                    torch.take(self.padded, cell * width + T + t),
                ]
            ).to(_F64)
        h = self.h
        stats = self.right.shape[2]
        left = j < h
        jl = torch.where(left, j, 0)
        jr = torch.where(left, 0, j - h)
        base = cell * width + t
        rbase = ((cell * stats) * h + jr) * T + t
        out = []
        for stat in range(stats):
            own = torch.take(self.padded, base + (stat * h + jl) * T)
            out.append(torch.where(left, own, torch.take(self.right, rbase + stat * h * T)))
        if self.own:
            out.append(torch.take(self.padded, base + (2 * h + j) * T))
        return torch.stack(out).to(_F64)


class _Candidates:
    """Candidate splits (gain, left count N_L) per flat (feature, node, tree) key; ``best``
    keeps, per key, the smallest N_L among the gains tied with the largest (the lowest
    threshold: scikit-learn keeps the first of equally good positions) and its gain.

    Tied means within ``_TIE`` (relative) of the largest: float32 histogram sums cannot rank
    gains closer than that, and their rounding depends on how many trees share a matrix
    product (the sparse kernel's summation order varies with the number of columns), so
    closer gains are decided by position and feature order instead, the same for any
    grouping of trees into workers."""

    def __init__(self) -> None:
        self.parts: list[tuple[torch.Tensor, ...]] = []

    def add(self, key, gain, n_left, *extra) -> None:
        self.parts.append(tuple(x.reshape(-1) for x in (key, gain, n_left, *extra)))

    def all(self) -> list[torch.Tensor]:
        return [torch.cat(p) for p in zip(*self.parts, strict=True)]

    def best(self, size: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key, gain, n_left = self.all()
        top = torch.full((size,), -torch.inf, dtype=_F64, device=dev)
        top.scatter_reduce_(0, key, gain, "amax")
        at_top = (gain >= top[key] * (1 - _TIE)) & (gain > -torch.inf)
        key, gain, n_left = key[at_top], gain[at_top], n_left[at_top]
        nl = torch.full((size,), torch.inf, dtype=_F64, device=dev)
        nl.scatter_reduce_(0, key, n_left, "amin")
        chosen = n_left == nl[key]
        top.fill_(-torch.inf).scatter_reduce_(0, key[chosen], gain[chosen], "amax")
        return top, nl


def _gain(s_left, n_left, n, s) -> tuple[torch.Tensor, torch.Tensor]:
    """(F, gain): F = N S_L - S N_L and N times the SSE reduction F^2 / (N_L N_R); -inf where a
    side is empty (counts are exact integers)."""
    f = s_left * n - s * n_left
    den = n_left * (n - n_left)
    gain = torch.where(den > 0, f * f / den.clamp(min=1), torch.full_like(f, -torch.inf))
    return f, gain


def _may_beat(f0, f1, a, c, c0, c1, n, slack, target) -> torch.Tensor:
    """Whether a split strictly inside a bin may reach ``target`` (module docstring): c node
    rows, left counts c0 / c1 and F values f0 / f1 at its edges, a = its rows' sum of
    |gradient - node mean|; ``slack`` bounds how far float32 rounding of the histograms can
    move F (N times the number of roundings involved times float32 eps times the tree's sum of
    |gradient|; it also covers the difference between the mean used and S / N)."""
    u = (f0 + f1).abs() + n * a + slack
    den = torch.minimum((c0 + 1) * (n - c0 - 1), (c1 - 1) * (n - c1 + 1))
    return (c >= 2) & (u * u * (1 + 1e-9) >= 4 * target * den)


def _grow_stage(
    grad64: torch.Tensor,
    data: _Data,
    max_depth: int,
    tie_order: _TieOrder,
    work: _Workspace | None = None,
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """Grow one depth-limited regression tree per column of ``grad64`` (n, T) at once.

    Returns the leaf (0 .. 2^depth - 1) of every training row in every tree, the splits of
    every level ((feat, thr32), each (nodes, T), for routing other rows with :func:`_route`),
    and the (T, D) SSE reductions credited to each feature. A node that does not split sends
    all its samples to its left child; its right child stays empty (no training sample can
    reach it, nor can a test sample).

    Nodes of a level are numbered in bit-reversed heap order (the child of node j on side b at
    level L is j + b 2^L): every level's left children come first, in their parents' order,
    its right children after them. Rows carry their node number in a (n, T) byte array.
    """
    dev = grad64.device
    n, T = grad64.shape
    D = data.d
    grad = grad64.to(torch.float32)
    # Bound of one float32 rounding of any histogram value (a partial sum of gradients or
    # their deviations from a node mean, at most twice the tree's sum of |gradient|).
    err = 2 * _F32_SUM * grad.abs().sum(0, dtype=_F64)  # (T,)
    work = work or _Workspace(data.hist)
    mean = grad64.mean(0).to(torch.float32)[None, :]
    w = work.columns(0, n, 2 * T, dev)
    w[:, :T] = grad
    torch.sub(grad, mean, out=w[:, T : 2 * T]).abs_()
    level = _Level(data, work.of(0, w), None, mean)
    node: torch.Tensor | None = None  # rows' node at this level (None: all at the root)
    trees = torch.arange(T, dtype=torch.int32, device=dev)
    imp = torch.zeros(T, D, dtype=_F64, device=dev)
    dead = torch.zeros(1, T, dtype=torch.bool, device=dev)
    g_sq = (grad64 * grad64).reshape(-1)
    g_flat = grad64.reshape(-1)
    splits: list[tuple[torch.Tensor, torch.Tensor]] = []
    for depth in range(max_depth):
        k = 2**depth
        if node is None:
            sq = g_sq.reshape(n, T).sum(0)[None, :]
            s64 = grad64.sum(0)[None, :]
        else:
            at = _flat(node, trees, k)
            sq = torch.bincount(at, g_sq, minlength=k * T).reshape(k, T)
            s64 = torch.bincount(at, g_flat, minlength=k * T).reshape(k, T)
            count = torch.bincount(at, minlength=k * T).reshape(k, T).clamp(min=1)
            mean = (s64 / count).to(torch.float32)
            own = depth < max_depth - 1  # the last level's sums are parents of nothing
            level = _next_level(level, node, at, grad, mean, own, data, work)
        # Node impurity (variance); scikit-learn does not split a node with variance <= eps
        # (nor, here, a dead one), so such nodes need no search.
        search = _Search(level, depth, node, grad, err)
        n64 = search.n.to(_F64).clamp(min=1)
        variance = sq / n64 - (s64 / n64) ** 2
        live = (variance > EPSILON) & ~dead
        gain, feat, n_left = search.best(live, tie_order(depth, k))
        split = (gain > -torch.inf) & live
        thr = search.threshold(feat, n_left.clamp(min=1, max=n - 1))
        gain = torch.where(split, gain / n64, torch.zeros_like(gain))  # the SSE reduction
        imp.scatter_add_(1, feat.T, gain.T)
        # Route the training rows of every tree: float32 features against the largest float32
        # not above the float64 threshold (the same decision as x <= threshold).
        thr32 = torch.where(split, _float32_at_most(thr), torch.full_like(thr, torch.inf))
        splits.append((feat, thr32.to(torch.float32)))
        node = _descend(data.x_tr, node, splits[-1], max_depth, None if node is None else at)
        dead = (~split | dead).repeat(2, 1)
    assert node is not None
    return node, splits, imp


def _next_level(
    parent: _Level, node, at, grad, mean, own: bool, data: _Data, work: _Workspace
) -> _Level:
    """The children's histograms from one matrix product: the left children's gradient sums
    and counts, and sums of |gradient - centre| (every child's, centred on its own mean
    ``mean`` (k, T), if ``own``; else the left children's, centred on their parent's mean).
    Masks are float32 (float multiplications by a bool mask are several times slower); each
    block of columns is written by one broadcast operation over its nodes."""
    n, T = grad.shape
    h = parent.k
    k = 2 * h
    cols = 2 * h + (k if own else h)
    buf = work.columns(k.bit_length() - 1, n, cols * T, grad.device)
    w = buf[:, : cols * T].view(n, cols, T)
    masks = w[:, 2 * h :]
    # One (rows, trees) compare per node written straight into the float32 columns (a bool
    # result copied over took ~4x the time), for the masks and again for the counts.
    for j in range(k if own else h):
        torch.eq(node, j, out=masks[:, j])
    for j in range(h):
        torch.eq(node, j, out=w[:, h + j])
    torch.mul(grad[:, None, :], w[:, h : 2 * h], out=w[:, :h])
    if own:
        dev = (grad - mean.reshape(-1).index_select(0, at).reshape(n, T)).abs_()
        masks.mul_(dev[:, None, :])
    else:  # the left children's parents are nodes 0 .. h - 1 of the parent level
        masks.mul_(torch.sub(grad[:, None, :], parent.mean[None]).abs_())
    return _Level(data, work.of(k.bit_length() - 1, buf), parent, mean, own)


class _Search:
    """The exact best split of every (node, tree) of one level (module docstring, steps 2-4).

    Candidates at hard edges and found by row scans are valid; those at soft edges are kept
    aside and checked (from the two node rows around them) only if they could win. At the root
    the rows next to a soft gap are the values around it, so no soft edge is valid there."""

    def __init__(self, level: _Level, depth: int, node, grad, err):
        self.level, self.data, self.depth = level, level.data, depth
        self.node, self.grad = node, grad
        self.err = err  # (T,)
        coarse = level.coarse  # (D, Bc, 3, k, T) float32, per coarse bin
        self.cs = coarse[:, :, 0].cumsum(1)  # float32: evaluated with rounding slack
        self.cn = coarse[:, :, 1].cumsum(1)  # exact integers
        self.a = coarse[:, :, 2]
        self.d, _, self.k, self.t = self.cs.shape
        self.n = self.cn[0, -1]  # (k, T) node sizes
        self.s = self.cs[:, -1]  # (D, k, T) each feature's own total
        self.shift = level.shift.to(_F64)
        self.candidates = _Candidates()
        self.unchecked = _Candidates()  # at soft edges, with the fine bin before the edge

    def _key(self, d, j, t) -> torch.Tensor:
        return (d * self.k + j) * self.t + t

    def _before(self, x: torch.Tensor, d, e, j, t) -> torch.Tensor:
        """float64 value of a cumulative coarse table (D, Bc, k, T) before coarse bin e."""
        prev = x[d, (e - 1).clamp(min=0), j, t].to(_F64)
        return torch.where(e > 0, prev, torch.zeros_like(prev))

    def best(self, live, order) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gain (k, T) float64, feature (k, T) int64, N_L (k, T) float64) of the best split
        of every live (node, tree); ties between features go to the highest ``order``."""
        ratio = self._coarse_edges(live)
        if ratio is not None:
            # The coarse bins on both sides of each node's best coarse edge first: the best
            # split is usually near it, and a higher G* opens fewer bins afterwards.
            first = self._around_best_edges(ratio)
            self._fine_edges_and_rows(*first.nonzero(as_tuple=True))
            opened = ratio >= self._coarse_goal()
            self._fine_edges_and_rows(*opened.logical_and_(~first).nonzero(as_tuple=True))
        size = self.d * self.k * self.t
        dev = self.data.device
        if any(len(part[0]) for part in self.unchecked.parts):
            self._check_soft(self.candidates.best(size, dev)[0])
        top, nl = self.candidates.best(size, dev)
        top = top.reshape(self.d, self.k, self.t)
        at_top = (top >= top.max(0).values * (1 - _TIE)) & (top > -torch.inf)
        feat = torch.where(at_top, order, torch.full_like(order, -1)).argmax(0)
        gain = top.gather(0, feat[None])[0]
        n_left = nl.reshape(self.d, self.k, self.t).gather(0, feat[None])[0]
        return gain, feat, n_left

    def _coarse_edges(self, live):
        """Steps 2 and 3: every hard coarse edge is a candidate; G* per (node, tree) is the
        best of them; returns (D, Bc, k, T) float32 bounds of the gain strictly inside each
        coarse bin (``best`` opens those that reach G*), None when every bin is one value.

        float32, a few features at a time (the temporaries stay in the CPU caches); the best
        edge of each feature is re-evaluated in float64 and the bounds carry float32 slack."""
        data, R = self.data, self.data.r
        cs, cn, a, n, s = self.cs, self.cn, self.a, self.n, self.s
        D, Bc = self.d, cs.shape[1]
        dev = data.device
        soft = data.soft[:, R::R][:, :, None, None]  # (D, Bc, 1, 1): after coarse bin e
        splittable = data.splittable[min(self.depth, 1)][1][:, :, None, None]
        # Rounding slack of F (float32 histograms, float32 arithmetic here): a few float32
        # roundings per row summed, each at most eps times the tree's sum of |gradient|.
        n_err = n * self.err.to(torch.float32)
        n_shift = n * self.level.shift  # |deviation| sums centred off the node mean
        rounds = data.coarse_roundings32[:, :, None, None]
        ratio = torch.empty_like(cs)  # bound / 4 of the gain strictly inside each coarse bin
        best = torch.empty(D, self.k, self.t, device=dev)
        arg = torch.empty(D, self.k, self.t, dtype=torch.int64, device=dev)
        gains = torch.empty_like(cs) if self.depth > 0 and data.any_soft else None
        step = max(1, _CHUNK // (Bc * self.k * self.t)) if dev.type == "cpu" else D
        for f0 in range(0, D, step):
            f1 = min(D, f0 + step)
            c_s, c_n = cs[f0:f1], cn[f0:f1]
            # No fused multiply-add (addcmul): its vector and scalar paths round differently,
            # and which one an element takes depends on its position, i.e. on the number of
            # trees of a worker's group; the gains must not.
            f = torch.mul(c_s, n).sub_(torch.mul(c_n, s[f0:f1, None]))
            den = torch.sub(n, c_n).mul_(c_n)
            gain = torch.mul(f, f).div_(den).nan_to_num_(nan=-torch.inf, posinf=-torch.inf)
            if gains is not None:
                gains[f0:f1] = gain
            gain.masked_fill_(soft[f0:f1], -torch.inf)
            torch.max(gain, 1, out=(best[f0:f1], arg[f0:f1]))
            if data.per_value:
                continue
            # u = |F_0 + F_1| + c |S| + N A + slack over the bin; den = its smallest N_L N_R.
            u = torch.empty_like(f)
            u[:, 0] = f[:, 0]
            torch.add(f[:, 1:], f[:, :-1], out=u[:, 1:])
            u.abs_()
            c0 = torch.zeros_like(c_n)
            c0[:, 1:] = c_n[:, :-1]
            c = torch.sub(c_n, c0)
            u.add_(a[f0:f1] * n).add_(rounds[f0:f1] * n_err).add_(c * n_shift)
            lo = (c0 + 1).mul_(n - c0 - 1)
            hi = (c_n - 1).mul_(n - c_n + 1)
            torch.minimum(lo, hi, out=lo)
            r = u.square_().div_(lo.mul_(4))
            r.masked_fill_((c < 2) | ~splittable[f0:f1], -torch.inf)
            ratio[f0:f1] = r
        # The best hard coarse edge of each feature, in float64.
        nl = torch.gather(cn, 1, arg[:, None])[:, 0].to(_F64)
        sl = torch.gather(cs, 1, arg[:, None])[:, 0].to(_F64)
        _, top = _gain(sl, nl, n.to(_F64), s.to(_F64))
        top = torch.where(best > -torch.inf, top, torch.full_like(top, -torch.inf))
        keys = torch.arange(D * self.k * self.t, device=dev)
        self.candidates.add(keys, top, nl)
        # G*: the best valid gain so far; nodes that will not split search no further.
        self.target = torch.where(live, top.max(0).values, torch.inf)  # (k, T)
        goal = self._coarse_goal()
        if gains is not None:
            pending = soft & (gains >= goal) & (gains > -torch.inf)
            d, e, j, t = pending.nonzero(as_tuple=True)
            nl_p = cn[d, e, j, t].to(_F64)
            _, g64 = _gain(cs[d, e, j, t].to(_F64), nl_p, n[j, t].to(_F64), s[d, j, t].to(_F64))
            self.unchecked.add(self._key(d, j, t), g64, nl_p, (e + 1) * R - 1)
        if data.per_value:
            return None
        self.edge_gain, self.edge_at = top, arg
        return ratio

    def _around_best_edges(self, ratio: torch.Tensor) -> torch.Tensor:
        """(D, Bc, k, T) mask of the two coarse bins around the best coarse edge of each
        (node, tree), where they may hold a better split (``ratio`` from _coarse_edges)."""
        dev, k, T = self.data.device, self.k, self.t
        feat = self.edge_gain.argmax(0)  # (k, T)
        edge = self.edge_at.gather(0, feat[None])[0]
        j = torch.arange(k, device=dev)[:, None].expand(k, T)
        t = torch.arange(T, device=dev)[None, :].expand(k, T)
        mask = torch.zeros_like(ratio, dtype=torch.bool)
        mask[feat, edge, j, t] = True
        mask[feat, (edge + 1).clamp(max=ratio.shape[1] - 1), j, t] = True
        return mask.logical_and_(ratio >= self._coarse_goal())

    def _coarse_goal(self) -> torch.Tensor:
        """G* (k, T) as float32 with the slack of the float32 coarse tables and bounds."""
        return (self.target * (1 - 1e-5)).to(torch.float32)

    def _fine_edges_and_rows(self, d, e, j, t) -> None:
        """Step 3 inside the opened coarse bins: their fine edges are candidates; fine bins
        that may still beat the best so far have their rows scanned."""
        if len(d) == 0:
            return
        data, R, lv = self.data, self.data.r, self.level
        dev = data.device
        d1 = d[:, None]
        b = e[:, None] * R + torch.arange(R, device=dev)  # (S, R)
        fs, fn, fa = lv.block(d, e, j, t)
        n = self.n[j, t][:, None].to(_F64)
        s = self.s[d, j, t][:, None].to(_F64)
        # Cumulative values at the edge before each fine bin and at its own end.
        cs0 = self._before(self.cs, d, e, j, t)[:, None] + torch.cumsum(fs, 1) - fs
        cn0 = self._before(self.cn, d, e, j, t)[:, None] + torch.cumsum(fn, 1) - fn
        f0, _ = _gain(cs0, cn0, n, s)
        f1, gain = _gain(cs0 + fs, cn0 + fn, n, s)
        # The best so far per (node, tree), with the opened hard fine edges (the last fine
        # edge of a coarse bin is its coarse edge, already a candidate).
        target = self.target.view(-1)  # raised in place: the best valid gain so far
        if R > 1:
            key = self._key(d, j, t)[:, None].expand(-1, R - 1)
            inner, inner_n = gain[:, :-1], (cn0 + fn)[:, :-1]
            soft = data.soft[d1, b[:, :-1] + 1]
            hard = torch.where(soft, torch.full_like(inner, -torch.inf), inner)
            target.scatter_reduce_(0, j * self.t + t, hard.max(1).values, "amax")
            keep = hard >= target[j * self.t + t][:, None] * _KEEP
            self.candidates.add(key[keep], hard[keep], inner_n[keep])
        goal = target[j * self.t + t][:, None]
        if R > 1 and self.depth > 0:
            pending = soft & (inner >= goal * _KEEP) & (inner > -torch.inf)
            self.unchecked.add(key[pending], inner[pending], inner_n[pending], b[:, :-1][pending])
        slack = n * (self.err[t][:, None] * data.roundings[d1, b] + fn * self.shift[j, t][:, None])
        may = _may_beat(f0, f1, fa, fn, cn0, cn0 + fn, n, slack, goal * _KEEP)
        may &= data.splittable[min(self.depth, 1)][0][d1, b]
        i, r = may.nonzero(as_tuple=True)
        if len(i):
            c0, c1 = cn0[i, r], cn0[i, r] + fn[i, r]
            self._scan_rows(d[i], b[i, r], j[i], t[i], cs0[i, r], c0, c1, n[i, 0], s[i, 0], target)

    def _node_rows(self, d, b, j, t):
        """One table row per fine bin b of feature d (1-D index tensors, S bins), as wide as
        the widest: (cols (W,); flat (S, W) int64 flat (feature, sorted position) of each slot;
        cell (S W,) its (row, tree t) index into (n, T) tables; member (S, W): the slot holds a
        row of node j). Cells are int32 where they fit: int64 index arithmetic costs twice the
        memory traffic."""
        data, T = self.data, self.t
        width = data.width[d, b]
        cols = torch.arange(max(1, int(width.max())), device=d.device)
        flat = d[:, None] * data.n + (data.start[d, b][:, None] + cols).clamp(max=data.n - 1)
        rows = data.order.index_select(0, flat.view(-1)).view(len(d), -1)
        if data.n * T >= 2**31:
            rows = rows.long()
        cell = (rows * T + t.to(rows.dtype)[:, None]).reshape(-1)
        member = cols < width[:, None]
        if self.node is not None:
            member &= self.node.view(-1).index_select(0, cell).view(len(d), -1) == j[:, None]
        return cols, flat, cell, member

    def _scan_rows(self, d, b, j, t, s0, c0, c1, n, s, target) -> None:
        """_scan_table on the bins; the few wider than most (a value repeated often, rounding
        of the quantile bins) in a second table, so that they do not widen every row."""
        wide = self.data.width[d, b] > self.data.usual_width
        if bool(wide.any()) and not bool(wide.all()):
            args = (d, b, j, t, s0, c0, c1, n, s)
            for part in (~wide, wide):
                i = part.nonzero(as_tuple=True)[0]
                self._scan_table(*(x[i] for x in args), target)
        else:
            self._scan_table(d, b, j, t, s0, c0, c1, n, s, target)

    def _scan_table(self, d, b, j, t, s0, c0, c1, n, s, target) -> None:
        """Every split between two node rows of fine bin b of feature d, in sorted order: the
        node's gradient sums and counts before each row are the bin's start values (s0, c0)
        plus cumulative sums within the bin; c1 counts the node's rows up to the bin's end.
        One row of a (bins, widest bin) table per bin. ``target`` (k T,) the best valid gain
        so far per (node, tree), raised here; only gains that may still tie with the best
        become candidates (module docstring: ``_KEEP``)."""
        data, T = self.data, self.t
        S = len(d)
        cols, flat, cell, member = self._node_rows(d, b, j, t)
        g = self.grad.view(-1).index_select(0, cell).view(S, -1).to(_F64) * member
        s_left = s0[:, None] + torch.cumsum(g, 1)
        n_left = c0[:, None] + torch.cumsum(member, 1, dtype=_F64)
        # A split after a node row needs another node row of the bin on its right (the bin's
        # end is a fine edge, a candidate already), at a value more than 1e-7 above: in a
        # simple bin, one after the end of the row's run (_Data); otherwise the next node
        # row's value is looked up.
        end = data.run_end.index_select(0, flat.view(-1)).view(S, -1) - flat[:, :1]
        end = torch.minimum(end, (data.width[d, b] - 1).clamp(min=0)[:, None])
        valid = member & (n_left < c1[:, None]) & (n_left == n_left.gather(1, end))
        hard = ~data.simple[d, b]
        if bool(hard.any()):
            h = hard.nonzero(as_tuple=True)[0]
            m = member[h]
            last = len(cols)
            idx = torch.where(m, cols, last)
            after = torch.cummin(idx.flip(1), 1).values.flip(1)
            nxt = torch.cat([after[:, 1:], torch.full_like(after[:, :1], last)], 1)
            x = torch.take(data.sorted, flat[h])
            x_next = x.gather(1, nxt.clamp(max=last - 1))
            valid[h] = m & (nxt < last) & (x_next > x + FEATURE_THRESHOLD.item())
        # _gain's arithmetic in place (every valid slot has rows on both sides).
        gain = torch.mul(s_left, n[:, None]).sub_(torch.mul(n_left, s[:, None])).square_()
        gain.div_(torch.sub(n[:, None], n_left).mul_(n_left)).masked_fill_(~valid, -torch.inf)
        jt = j * T + t
        target.scatter_reduce_(0, jt, gain.max(1).values, "amax")
        i, r = (gain >= target[jt][:, None] * _KEEP).nonzero(as_tuple=True)
        self.candidates.add(self._key(d[i], j[i], t[i]), gain[i, r], n_left[i, r])

    def _check_soft(self, valid_top: torch.Tensor) -> None:
        """Soft-edge candidates that reach the best valid gain of their (node, tree) become
        candidates if scikit-learn would split there: the node's rows on the two sides of the
        edge differ by more than the float32 1e-7. When both fine bins around the edge hold
        node rows those are the last of one and the first of the other; otherwise the N_L-th
        and (N_L + 1)-th node rows are looked up."""
        key, gain, n_left, b = self.unchecked.all()
        per_node = valid_top.reshape(self.d, self.k * self.t).max(0).values
        keep = (gain >= per_node[key % (self.k * self.t)] * _KEEP).nonzero(as_tuple=True)[0]
        if len(keep) == 0:
            return
        key, gain, n_left, b = key[keep], gain[keep], n_left[keep], b[keep]
        d = key // (self.k * self.t)
        j = key // self.t % self.k
        t = key % self.t
        near = self.level.take(d, b, j, t)[_Level.COUNT] > 0
        near &= self.level.take(d, b + 1, j, t)[_Level.COUNT] > 0
        lo = torch.empty(len(key), dtype=torch.float32, device=key.device)
        hi = torch.empty_like(lo)
        i = near.nonzero(as_tuple=True)[0]
        lo[i] = self._end_value(d[i], b[i], j[i], t[i], last=True)
        hi[i] = self._end_value(d[i], b[i] + 1, j[i], t[i], last=False)
        i = (~near).nonzero(as_tuple=True)[0]
        lo[i] = self._nth_value(d[i], j[i], t[i], n_left[i])
        hi[i] = self._nth_value(d[i], j[i], t[i], n_left[i] + 1)
        ok = hi > lo + FEATURE_THRESHOLD.item()
        self.candidates.add(key[ok], gain[ok], n_left[ok])

    def _end_value(self, d, b, j, t, last: bool) -> torch.Tensor:
        """The largest (``last``) or smallest value of node j's rows in fine bin b of feature
        d, which holds some."""
        data = self.data
        value = data.low[d, b].clone()
        i = data.multi[d, b].nonzero(as_tuple=True)[0]
        if len(i) == 0:
            return value
        cols, flat, _, member = self._node_rows(d[i], b[i], j[i], t[i])
        at = torch.where(member, cols, -1 if last else len(cols))
        at = at.max(1).values if last else at.min(1).values
        value[i] = torch.take(data.sorted, flat.gather(1, at[:, None])[:, 0])
        return value

    def threshold(self, feat: torch.Tensor, n_left: torch.Tensor) -> torch.Tensor:
        """x_a / 2 + x_b / 2 (float64) for the N_L-th and (N_L + 1)-th node rows in the sorted
        order of feature ``feat`` (per (node, tree))."""
        dev = self.data.device
        j = torch.arange(self.k, device=dev)[:, None].expand(self.k, self.t).reshape(-1)
        t = torch.arange(self.t, device=dev)[None, :].expand(self.k, self.t).reshape(-1)
        d, nl = feat.reshape(-1), n_left.reshape(-1)
        lo = self._nth_value(d, j, t, nl).to(_F64)
        hi = self._nth_value(d, j, t, nl + 1).to(_F64)
        return (lo / 2.0 + hi / 2.0).reshape(self.k, self.t)

    def _nth_value(self, d, j, t, nth: torch.Tensor) -> torch.Tensor:
        """The value of the nth (1-based, float64 count) row of node j of tree t in the sorted
        order of feature d (1-D index tensors): its coarse bin from the cumulative coarse
        counts, its fine bin within, then the bin's value or, if the bin holds several values,
        a scan of its rows."""
        data, R = self.data, self.data.r
        cum = self.cn.permute(0, 2, 3, 1)[d, j, t].to(_F64)  # (len, Bc)
        e = torch.searchsorted(cum, nth[:, None])[:, 0].clamp(max=cum.shape[1] - 1)
        fn = self.level.block(d, e, j, t)[_Level.COUNT]
        within = self._before(self.cn, d, e, j, t)[:, None] + torch.cumsum(fn, 1)
        r = torch.searchsorted(within, nth[:, None])[:, 0].clamp(max=R - 1)
        before = (within - fn).gather(1, r[:, None])[:, 0]
        b = e * R + r
        value = data.low[d, b].clone()
        several = data.multi[d, b].nonzero(as_tuple=True)[0]
        if len(several):
            i = several
            value[i] = self._scan_value(d[i], b[i], j[i], t[i], nth[i] - before[i])
        return value

    def _scan_value(self, d, b, j, t, nth) -> torch.Tensor:
        """The value of the nth (1-based) node row within fine bin b of feature d (inf if the
        bin has fewer)."""
        _, flat, _, member = self._node_rows(d, b, j, t)
        hit = member & (torch.cumsum(member, 1) == nth[:, None])
        found = hit.any(1)
        at = flat.gather(1, hit.to(torch.int8).argmax(1, keepdim=True))[:, 0]
        value = torch.take(self.data.sorted, at)
        return torch.where(found, value, torch.full_like(value, torch.inf))
