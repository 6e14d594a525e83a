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
caches. Training and test rows are routed through all trees of a stage together, by a flat
(node, tree) index.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .utils import encode_labels

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
) -> GBTResult:
    """Fit one boosted classifier per label vector of ``ys_train`` on the shared features
    ``x_train`` (n, D); predict the training rows and ``x_test``."""
    with torch.inference_mode():
        return _fit(
            x_train, ys_train, x_test, n_estimators, learning_rate, max_depth, max_bins, device
        )


def _fit(x_train, ys_train, x_test, n_estimators, learning_rate, max_depth, max_bins, device):
    dev = torch.device(device)
    x_train = np.asarray(x_train, dtype=np.float32)  # scikit-learn trees work in float32
    x_test = np.zeros((0, x_train.shape[1]), np.float32) if x_test is None else x_test
    x_test = np.asarray(x_test, dtype=np.float32)
    n, d = x_train.shape
    m = len(x_test)

    binned = [_bins(x_train[:, j], max_bins) for j in range(d)]
    n_bins = max(len(b[2]) for b in binned)
    bins = np.stack([b[0] for b in binned], axis=1)
    lower = np.full((d, n_bins), np.inf)
    upper = np.full((d, n_bins), np.inf)
    for j, (_, lo, up) in enumerate(binned):
        lower[j, : len(lo)] = lo
        upper[j, : len(up)] = up
    hist = _Histograms(bins, n_bins, dev)
    tables = (torch.as_tensor(lower, device=dev), torch.as_tensor(upper, device=dev))

    # Problems: one per class of a multinomial task, one per binomial task, none if 1 class.
    tasks = [encode_labels(y) for y in ys_train]
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
    x_all = torch.as_tensor(np.concatenate([x_train, x_test]), device=dev)
    importances = torch.zeros(T, d, dtype=torch.float64, device=dev)
    raw = torch.zeros(n + m, T, dtype=torch.float64, device=dev)
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
        root_cum = hist.of(torch.ones(n, 1, dtype=hist.dtype, device=dev))[:, :, 0].cumsum(1)
        n_leaves = 2**max_depth
        for _ in range(n_estimators):
            prob = torch.empty(n, T, dtype=torch.float64, device=dev)
            for (classes, _), (start, width) in zip(tasks, cols, strict=True):
                if width == 0:
                    continue
                r = raw[:n, start : start + width]
                prob[:, start : start + width] = (
                    torch.sigmoid(r) if len(classes) == 2 else torch.softmax(r, dim=1)
                )
            grad = Y - prob
            leaf, imp = _grow_stage(grad, x_all, hist, root_cum, tables, max_depth)
            importances += imp
            # leaf: flat indices leaf * T + tree of the (leaf, tree) table of every row.
            tr_leaf = leaf[:n].reshape(-1)
            zeros = torch.zeros(n_leaves * T, dtype=torch.float64, device=dev)
            num = zeros.scatter_add(0, tr_leaf, grad.reshape(-1)).reshape(n_leaves, T)
            den = zeros.scatter_add(0, tr_leaf, (prob * (1 - prob)).reshape(-1))
            den = den.reshape(n_leaves, T)
            value = torch.where(den.abs() < 1e-150, torch.zeros_like(num), num / den)
            value = value * factor[None, :]
            raw.add_(value.reshape(-1).take(leaf), alpha=learning_rate)

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


def _float32_at_most(t: torch.Tensor) -> torch.Tensor:
    """The largest float32 <= t (float64): for float32 x, x <= t  <=>  x <= this value."""
    t32 = t.to(torch.float32)
    below = torch.nextafter(t32, torch.full_like(t32, -torch.inf))
    return torch.where(t32.to(torch.float64) > t, below, t32)


def _grow_stage(
    grad64: torch.Tensor,
    x_all: torch.Tensor,
    hist: _Histograms,
    root_cum: torch.Tensor,
    tables: tuple[torch.Tensor, torch.Tensor],
    max_depth: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow one depth-limited regression tree per column of ``grad64`` (n, T) at once.

    Returns the flat index leaf * T + tree (leaf 0 .. 2^depth - 1) of every row of ``x_all``
    (train rows first) in every tree, and the (T, D) SSE reductions credited to each feature.
    A node that does not split sends all its samples to its left child; its right child stays
    empty (no training sample can reach it, nor can a test sample).

    Nodes of a level are numbered in bit-reversed heap order (the child of node j on side b at
    level L is j + b 2^L): every level's left children come first, in their parents' order,
    its right children after them. A level's histograms are kept as blocks of consecutive
    nodes (the left children's, straight from the matrix product, and the right children's,
    parent minus left sibling), so nothing is interleaved or copied. Rows carry the flat index
    node * T + tree into the (node, tree) tables.

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
    flat = torch.empty(0, dtype=torch.int64, device=dev)  # rows' node * T + tree, from level 1
    imp = torch.zeros(T, d, dtype=torch.float64, device=dev)
    dead = torch.zeros(1, T, dtype=torch.bool, device=dev)
    g_sq = (grad64 * grad64).reshape(-1)
    g_flat = grad64.reshape(-1)
    # Cumulative histograms: blocks (D, B, nodes, T) of consecutive nodes, in the layout the
    # matrix product produces; node-level tables are (nodes, T).
    sums: list[torch.Tensor] = []
    cnts: list[torch.Tensor] = []
    for depth in range(max_depth):
        k = 2**depth
        tr = flat[:n]
        if depth == 0:
            sums = [hist.of(grad).cumsum_(1)[:, :, None, :]]
            cnts = [root_cum[:, :, None, None].expand(d, B, 1, T)]
        else:
            half = k // 2
            parents = torch.arange(half * T, device=dev).reshape(half, T)
            masks = (tr[:, None, :] == parents[None]).to(dt)  # (n, k/2, T)
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
        if depth == 0:
            sq = g_sq.reshape(n, T).sum(0)[None, :]
            s64 = grad64.sum(0)[None, :]
        else:
            zeros = torch.zeros(k * T, dtype=torch.float64, device=dev)
            sq = zeros.scatter_add(0, tr.reshape(-1), g_sq).reshape(k, T)
            s64 = zeros.scatter_add(0, tr.reshape(-1), g_flat).reshape(k, T)
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
        # Route every row (train and test) of every tree: float32 features against the largest
        # float32 not above the float64 threshold (the same decision as x <= threshold).
        thr32 = torch.where(split, _float32_at_most(thr), torch.full_like(thr, torch.inf))
        thr32 = thr32.to(torch.float32)
        if depth == 0:  # every row at the root
            right = torch.index_select(x_all, 1, feat[0]) > thr32[0]
            flat = torch.arange(T, device=dev).add(right, alpha=T)
        else:
            right = torch.gather(x_all, 1, feat.reshape(-1).take(flat)) > thr32.reshape(-1).take(
                flat
            )
            flat.add_(right, alpha=k * T)
        dead = (~split | dead).repeat(2, 1)
    return flat, imp
