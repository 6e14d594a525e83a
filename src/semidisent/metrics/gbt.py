"""Fast-mode gradient-boosted trees: scikit-learn's ``GradientBoostingClassifier()`` algorithm,
every tree of a boosting stage grown at once in torch (CPU or GPU).

What is the same as scikit-learn 1.9 (``ensemble/_gb.py``), so that DCI's impurity importances
and accuracies agree:

- defaults: 100 stages, learning rate 0.1, depth 3, subsample 1, ``min_samples_leaf`` 1;
- multinomial deviance for K >= 3 classes (one regression tree per class per stage, fitted to
  the residual y_k - p_k of the stage's start), binomial for K = 2 (one tree per stage);
  the prior as initial prediction;
- squared-error regression trees: the split maximises the SSE reduction
  N_L N_R / N (mean_L - mean_R)^2 (the same argmax as Friedman's criterion), samples go left
  when x <= threshold, threshold = midpoint of the node's adjacent values (float32 features);
- Newton leaf values sum(g) / sum(p (1 - p)), times (K - 1) / K for multinomial;
- importances: per tree, the SSE reduction of each split credited to its feature, summed over
  all trees and stages, normalised to sum 1 (scikit-learn's per-tree division by N and its
  averaging over trees are constant factors that the normalisation removes).

What differs (why fast mode is not bit-exact):

- candidate thresholds: with at most ``max_bins`` distinct values in a feature every midpoint is
  a candidate, exactly as scikit-learn; beyond that, features are cut into ``max_bins``
  quantile bins (the histogram trick of LightGBM / HistGradientBoosting) and only bin edges are
  candidates (768 by default: with 256 (512) bins the training accuracy of a random code came
  out 0.034 (0.020) below scikit-learn's, with 768 0.011);
- ties between equally good splits go to the lowest feature index (scikit-learn visits features
  in a random order per node, drawn from the global numpy RNG in dlib);
- histogram sums are float32 and accumulated in another order (scikit-learn: float64, sample by
  sample), so near-ties between splits can be decided differently; boosting then diverges a little.

How it is fast: all trees of all tasks of a stage are grown together (113 for dSprites'
factors). Per tree level, the histograms of every (tree, left child, feature, bin) come from
sparse (feature-bin x sample) by (sample x tree) matrix products (sums and counts); the right
sibling's is its parent's minus the left one's. Histograms are kept cumulative over bins (the
left side of each candidate split), nodes in bit-reversed heap order so that a level is two
contiguous blocks (left children, right children) and nothing is interleaved or copied, and the
split gains are evaluated a few features at a time so that the temporaries stay in the CPU
caches. Rows carry their node in every tree as one byte and are routed node by node on whole
feature columns; node sums and leaf values come from ``bincount`` on int32 (node, tree) indices
(int64 index arithmetic moved ~4x the memory); one exp gives every task's class probabilities.
Test rows are routed after each stage with its splits. On the CPU, groups of tasks can be
boosted side by side in threads (``workers``); on this 2-core machine that is the largest gain.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .utils import encode_labels, parallel_map

EPSILON = float(np.finfo(np.float64).eps)
# Elements of the (features, bins, nodes, trees) split-gain block computed at once on the CPU:
# 2^18 float32 = 1 MiB, so that its few temporaries stay in cache (not tuned further).
_CHUNK = 1 << 18


@dataclass
class GBTResult:
    importances: list[np.ndarray]  # per task: (D,) normalised to sum 1 (zeros if no split)
    train_pred: list[np.ndarray]  # per task: predicted labels of the training rows
    test_pred: list[np.ndarray]  # per task: predicted labels of the test rows


def _bins(x: np.ndarray, max_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin index of each training value, and each bin's smallest / largest training value."""
    uniq = np.unique(x)
    if len(uniq) <= max_bins:
        upper = uniq
    else:
        s = np.sort(x)
        pos = np.ceil(len(s) * np.arange(1, max_bins + 1) / max_bins).astype(np.int64) - 1
        upper = np.unique(s[pos])
    idx = np.searchsorted(upper, x, side="left")
    lower_pos = np.searchsorted(uniq, np.concatenate([[-np.inf], upper[:-1]]), side="right")
    lower = uniq[np.minimum(lower_pos, len(uniq) - 1)]
    return idx.astype(np.int64), lower, upper


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

    def of(self, w: torch.Tensor) -> torch.Tensor:
        return (self.matrix @ w).reshape(self.d, self.b, -1)


def fit_gbt(
    x_train: np.ndarray,
    ys_train: list[np.ndarray],
    x_test: np.ndarray | None = None,
    n_estimators: int = 100,
    learning_rate: float = 0.1,
    max_depth: int = 3,
    max_bins: int = 768,
    device: str = "cpu",
    workers: int = 1,
) -> GBTResult:
    """Fit one boosted classifier per label vector of ``ys_train`` on the shared features
    ``x_train`` (n, D); predict the training rows and ``x_test``.

    ``workers`` > 1 (CPU): the label vectors are split into that many groups of about equal
    numbers of trees, boosted at the same time in Python threads, each on one torch thread
    (torch releases the GIL inside its kernels). The problems are independent, so the
    predictions are one worker's and the importances too, to float rounding (the sparse
    histogram product may sum in another order for another number of columns).
    """
    data = _Data(x_train, x_test, max_bins, torch.device(device))
    tasks = [encode_labels(y) for y in ys_train]
    args = (data, n_estimators, learning_rate, max_depth)
    groups = _groups([_trees_of(classes) for classes, _ in tasks], workers)
    if data.device.type != "cpu" or len(groups) < 2:
        return _boost(tasks, *args)
    parts = parallel_map(lambda g: _boost([tasks[i] for i in g], *args), groups, len(groups))
    # Back to the order of ys_train.
    found = {}
    for g, part in zip(groups, parts, strict=True):
        for j, i in enumerate(g):
            found[i] = (part.importances[j], part.train_pred[j], part.test_pred[j])
    imp, train, test = zip(*(found[i] for i in range(len(tasks))), strict=True)
    return GBTResult(list(imp), list(train), list(test))


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
    """What every group of problems shares: float32 features, their bins and bin edges, the
    (feature-bin x sample) histogram matrix and the root's cumulative counts."""

    def __init__(self, x_train, x_test, max_bins: int, device: torch.device):
        x_train = np.asarray(x_train, dtype=np.float32)  # scikit-learn trees work in float32
        x_test = np.zeros((0, x_train.shape[1]), np.float32) if x_test is None else x_test
        x_test = np.asarray(x_test, dtype=np.float32)
        self.device = device
        self.n, self.d = x_train.shape
        self.m = len(x_test)
        binned = [_bins(x_train[:, j], max_bins) for j in range(self.d)]
        n_bins = max(len(b[2]) for b in binned)
        bins = np.stack([b[0] for b in binned], axis=1)
        lower = np.full((self.d, n_bins), np.inf)
        upper = np.full((self.d, n_bins), np.inf)
        for j, (_, lo, up) in enumerate(binned):
            lower[j, : len(lo)] = lo
            upper[j, : len(up)] = up
        with torch.inference_mode():
            self.hist = _Histograms(bins, n_bins, device)
            self.tables = (
                torch.as_tensor(lower, device=device),
                torch.as_tensor(upper, device=device),
            )
            self.x_tr = torch.as_tensor(x_train, device=device)
            self.x_te = torch.as_tensor(x_test, device=device)
            ones = torch.ones(self.n, 1, dtype=self.hist.dtype, device=device)
            self.root_cum = self.hist.of(ones)[:, :, 0].cumsum(1)


@torch.inference_mode()
def _boost(tasks, data: _Data, n_estimators: int, learning_rate: float, max_depth: int):
    """Boost the problems of ``tasks`` ((classes, encoded labels) each) together."""
    dev = data.device
    n, d, m = data.n, data.d, data.m
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
    importances = torch.zeros(T, d, dtype=torch.float64, device=dev)
    raw = torch.zeros(n + m, T, dtype=torch.float64, device=dev)
    raw_tr, raw_te = raw[:n], raw[n:]
    eps = np.finfo(np.float64).eps
    if T:
        Y = torch.as_tensor(np.stack(targets, axis=1), device=dev).to(torch.float64)
        factor = torch.ones(T, dtype=torch.float64, device=dev)
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
        probs = _Probabilities(tasks, cols, T, dev)
        for _ in range(n_estimators):
            prob = probs(raw_tr)
            grad = Y - prob
            leaf, splits, imp = _grow_stage(
                grad, data.x_tr, data.hist, data.root_cum, data.tables, max_depth
            )
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
        member = torch.zeros(T, len(self.spans), dtype=torch.float64, device=dev)
        self.offset = torch.zeros(len(self.spans), dtype=torch.float64, device=dev)
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


def _float32_at_most(t: torch.Tensor) -> torch.Tensor:
    """The largest float32 <= t (float64): for float32 x, x <= t  <=>  x <= this value."""
    t32 = t.to(torch.float32)
    below = torch.nextafter(t32, torch.full_like(t32, -torch.inf))
    return torch.where(t32.to(torch.float64) > t, below, t32)


def _node_dtype(max_depth: int) -> torch.dtype:
    return torch.uint8 if max_depth <= 8 else torch.int32


def _go_right(x: torch.Tensor, node: torch.Tensor | None, split: tuple) -> torch.Tensor:
    """(rows, T) bool: whether each row goes right in its node's split at one level.

    ``split`` = (feat, thr32), each (k, T) for the level's k nodes. Evaluated node by node on
    whole feature columns (index_select + compare on 4-byte and 1-byte arrays): per-row gathers
    need (rows, T) int64 indices, and moving those through memory cost ~3x more on the CPU.
    """
    feat, thr32 = split
    right = torch.index_select(x, 1, feat[0]) > thr32[0]
    if node is None:
        return right
    right &= node == 0
    for j in range(1, feat.shape[0]):
        r = torch.index_select(x, 1, feat[j]) > thr32[j]
        r &= node == j
        right |= r
    return right


def _flat(node: torch.Tensor, trees: torch.Tensor, k: int) -> torch.Tensor:
    """Flat int32 indices node * T + tree into a (k, T) table, for ``bincount`` and
    ``index_select`` (int64 index arithmetic costs ~4x more memory traffic on the CPU)."""
    if node.shape[1] * k >= 2**31:
        raise ValueError("too many (node, tree) pairs for int32 indices")
    return (node.to(torch.int32) * node.shape[1] + trees).reshape(-1)


def _descend(
    x: torch.Tensor, node: torch.Tensor | None, split: tuple, max_depth: int
) -> torch.Tensor:
    """Every row's node one level down: node j (of k at this level) goes to j or j + k."""
    right = _go_right(x, node, split).to(_node_dtype(max_depth))
    return right if node is None else node + right * split[0].shape[0]


def _route(x: torch.Tensor, splits: list[tuple]) -> torch.Tensor:
    """Leaf (bit-reversed heap order) of every row of ``x`` in every tree of a stage."""
    node = None
    for split in splits:
        node = _descend(x, node, split, len(splits))
    assert node is not None
    return node


def _grow_stage(
    grad64: torch.Tensor,
    x: torch.Tensor,
    hist: _Histograms,
    root_cum: torch.Tensor,
    tables: tuple[torch.Tensor, torch.Tensor],
    max_depth: int,
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """Grow one depth-limited regression tree per column of ``grad64`` (n, T) at once.

    Returns the leaf (0 .. 2^depth - 1) of every training row in every tree, the splits of
    every level ((feat, thr32), each (nodes, T), for routing other rows with :func:`_route`),
    and the (T, D) SSE reductions credited to each feature. A node that does not split sends
    all its samples to its left child; its right child stays empty (no training sample can
    reach it, nor can a test sample).

    Nodes of a level are numbered in bit-reversed heap order (the child of node j on side b at
    level L is j + b 2^L): every level's left children come first, in their parents' order,
    its right children after them. A level's histograms are kept as blocks of consecutive
    nodes (the left children's, straight from the matrix product, and the right children's,
    parent minus left sibling), so nothing is interleaved or copied. Rows carry their node
    number in a (n, T) byte array.

    Histograms and split gains are float32 (twice the throughput; the chosen split's gain is
    accurate to ~1e-6 relative), the boosting state stays float64. Histograms are cumulative
    over bins (the left side of every candidate split), so a right child's is its parent's
    minus its left sibling's, with no second prefix sum.
    """
    dev = grad64.device
    lower, upper = tables
    n, T = grad64.shape
    d, B = hist.d, hist.b
    dt = hist.dtype
    grad = grad64.to(dt)
    node: torch.Tensor | None = None  # rows' node at this level (None: all at the root)
    trees = torch.arange(T, dtype=torch.int32, device=dev)
    imp = torch.zeros(T, d, dtype=torch.float64, device=dev)
    dead = torch.zeros(1, T, dtype=torch.bool, device=dev)
    g_sq = (grad64 * grad64).reshape(-1)
    g_flat = grad64.reshape(-1)
    splits: list[tuple[torch.Tensor, torch.Tensor]] = []
    # Cumulative histograms: blocks (D, B, nodes, T) of consecutive nodes, in the layout the
    # matrix product produces; node-level tables are (nodes, T).
    sums: list[torch.Tensor] = []
    cnts: list[torch.Tensor] = []
    for depth in range(max_depth):
        k = 2**depth
        if node is None:
            sums = [hist.of(grad).cumsum_(1)[:, :, None, :]]
            cnts = [root_cum[:, :, None, None].expand(d, B, 1, T)]
            sq = g_sq.reshape(n, T).sum(0)[None, :]
            s64 = grad64.sum(0)[None, :]
        else:
            half = k // 2
            masks = torch.stack([node == j for j in range(half)], dim=1).to(dt)  # (n, k/2, T)
            # Sums and counts of the left children (nodes 0 .. k/2-1); right = parent - left.
            left_s = hist.of((masks * grad[:, None, :]).reshape(n, -1)).cumsum_(1)
            left_c = hist.of(masks.reshape(n, -1)).cumsum_(1)
            left_s = left_s.reshape(d, B, half, T)
            left_c = left_c.reshape(d, B, half, T)
            right_s = torch.empty_like(left_s)
            right_c = torch.empty_like(left_c)
            j = 0
            for ps, pc in zip(sums, cnts, strict=True):
                w = ps.shape[2]
                torch.sub(ps, left_s[:, :, j : j + w], out=right_s[:, :, j : j + w])
                torch.sub(pc, left_c[:, :, j : j + w], out=right_c[:, :, j : j + w])
                j += w
            sums, cnts = [left_s, right_s], [left_c, right_c]
            at = _flat(node, trees, k)
            sq = torch.bincount(at, g_sq, minlength=k * T).reshape(k, T)
            s64 = torch.bincount(at, g_flat, minlength=k * T).reshape(k, T)
        # (k, T): exact integer counts of every node
        total_n = torch.cat([c[0, B - 1] for c in cnts]) if k > 1 else cnts[0][0, B - 1]
        # Node impurity (variance); scikit-learn does not split a node with variance <= eps.
        n64 = total_n.to(torch.float64).clamp(min=1)
        variance = sq / n64 - (s64 / n64) ** 2
        # N_L N_R (mean_L - mean_R)^2 = (S_L N - S N_L)^2 / (N_L N_R): N times the SSE reduction,
        # S the feature's own total. An empty side (N_L N_R = 0, exactly: integer counts) gives
        # 0/0 or x/0, mapped to -inf. On the CPU computed a few features at a time, so that the
        # temporaries stay in cache; the best split of each feature, then the best feature
        # (ties: the lowest feature, then the lowest bin).
        best_val = torch.empty(d, k * T, dtype=dt, device=dev)
        best_idx = torch.empty(d, k * T, dtype=torch.int64, device=dev)
        j = 0
        for bs, bc in zip(sums, cnts, strict=True):
            w = bs.shape[2]
            nb = total_n[j : j + w]
            step = max(1, _CHUNK // (B * T * w)) if dev.type == "cpu" else d
            for f0 in range(0, d, step):
                f1 = min(d, f0 + step)
                c_s, c_n = bs[f0:f1], bc[f0:f1]
                gain = torch.mul(c_s, nb)
                gain.addcmul_(c_n, bs[f0:f1, B - 1 : B], value=-1.0).square_()
                den = torch.sub(nb, c_n).mul_(c_n)
                gain.div_(den).nan_to_num_(nan=-torch.inf, posinf=-torch.inf)
                cols = slice(j * T, (j + w) * T)
                out = (best_val[f0:f1, cols], best_idx[f0:f1, cols])
                torch.max(gain.reshape(f1 - f0, B, w * T), 1, out=out)
            j += w
        best_v, feat_flat = best_val.max(0)
        cut_flat = torch.gather(best_idx, 0, feat_flat[None, :])[0]
        feat = feat_flat.reshape(k, T)
        cut = cut_flat.reshape(k, T)
        split = (best_v.reshape(k, T) > -torch.inf) & (variance > EPSILON) & ~dead
        # Threshold: midpoint between the largest value at or below the cut and the next value
        # present in this node (the first bin whose cumulative count exceeds the cut's), as
        # scikit-learn's splitter. The chosen split's SSE reduction is recomputed in float64
        # from its float32 sums.
        cnt_f, sl_b, nl_b = [], [], []
        j = 0
        for bs, bc in zip(sums, cnts, strict=True):
            w = bs.shape[2]
            f_b, c_b = feat[j : j + w], cut[j : j + w]
            c_ids = torch.arange(w, device=dev)[:, None].expand(w, T)
            t_ids = torch.arange(T, device=dev)[None, :].expand(w, T)
            cnt_f.append(bc.permute(2, 3, 0, 1)[c_ids, t_ids, f_b])  # (w, T, B)
            sl_b.append(bs[f_b, c_b, c_ids, t_ids])
            nl_b.append(bc[f_b, c_b, c_ids, t_ids])
            j += w
        cnt_all = torch.cat(cnt_f)
        at_cut = torch.gather(cnt_all, 2, cut[..., None])
        nxt_bin = (cnt_all > at_cut).to(torch.int8).argmax(-1)
        lo_val = upper[feat, cut]
        hi_val = lower[feat, nxt_bin]
        thr = lo_val / 2.0 + hi_val / 2.0
        thr = torch.where((thr == hi_val) | torch.isinf(thr), lo_val, thr)
        sl64 = torch.cat(sl_b).to(torch.float64)
        nl64 = torch.cat(nl_b).to(torch.float64)
        nr64 = (n64 - nl64).clamp(min=1)
        gain64 = nl64 * nr64 / n64 * (sl64 / nl64.clamp(min=1) - (s64 - sl64) / nr64) ** 2
        gain64 = torch.where(split, gain64, torch.zeros_like(gain64))
        imp.scatter_add_(1, feat.T, gain64.T)
        # Route the training rows of every tree: float32 features against the largest float32
        # not above the float64 threshold (the same decision as x <= threshold).
        thr32 = torch.where(split, _float32_at_most(thr), torch.full_like(thr, torch.inf))
        splits.append((feat, thr32.to(torch.float32)))
        node = _descend(x, node, splits[-1], max_depth)
        dead = (~split | dead).repeat(2, 1)
    assert node is not None
    return node, splits, imp
