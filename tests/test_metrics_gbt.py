"""The fast boosted trees (metrics/gbt.py) against scikit-learn's GradientBoostingClassifier:
the same splits node by node, importances and predictions, workers, overflow. Only numpy,
scikit-learn and torch: these tests also run on the GPU image (benchmarks/gpu_check.py)."""

from __future__ import annotations

import numpy as np
import pytest

from semidisent.metrics.gbt import fit_gbt


def _gbt_data(discrete: bool, n: int = 600, seed: int = 0):
    rng = np.random.RandomState(seed)
    y = np.stack([rng.randint(k, size=n) for k in (2, 3, 5)], 1)
    noise = rng.randint(0, 2, size=y.shape) if discrete else rng.randn(*y.shape)
    x = np.c_[y + noise, rng.randint(0, 4, size=(n, 2)) if discrete else rng.randn(n, 2)]
    return x.astype(np.float32), y


@pytest.mark.parametrize("depth, atol", [(3, 1e-6), (1, 1e-6), (4, 1e-3)])
def test_fast_gbt_equals_sklearn_when_every_value_is_a_candidate(depth, atol):
    """With few distinct feature values: the same trees, predictions and importances (depth 4:
    a level whose parents come in two blocks of nodes).

    Tolerance: with integer features, two features can split a node equally well (the same gain
    in exact arithmetic); scikit-learn and fast mode then pick by float rounding (float64 sums
    sample by sample, float32 histograms) or by their per-node feature order, and the importance
    of that split goes to one feature or the other, nothing else changes (predictions are
    identical). At depth 4 one such late split of a small node moves 3.1e-4 of the importance
    between features 1 and 3 (measured; with 1 or 2 torch threads alike); at depths 1 and 3 the
    importances agree to float32 rounding (< 1e-7), hence 1e-6."""
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = _gbt_data(discrete=True)
    res = fit_gbt(x, [y[:, j] for j in range(3)], x[:100], n_estimators=30, max_depth=depth)
    for j in range(3):
        ref = GradientBoostingClassifier(n_estimators=30, max_depth=depth, random_state=0)
        ref.fit(x, y[:, j])
        np.testing.assert_allclose(res.importances[j], ref.feature_importances_, atol=atol)
        np.testing.assert_array_equal(res.train_pred[j], ref.predict(x))
        np.testing.assert_array_equal(res.test_pred[j], ref.predict(x[:100]))


def _splits_of_every_stage(x, y, **kw):
    """fit_gbt on one label vector, recording every stage's gradients and splits."""
    from semidisent.metrics import gbt

    grads, splits = [], []
    grow = gbt._grow_stage

    def recording(grad64, *args):
        grads.append(grad64.cpu().numpy())
        node, level_splits, imp = grow(grad64, *args)
        splits.append([(f.cpu().numpy(), t.cpu().numpy()) for f, t in level_splits])
        return node, level_splits, imp

    gbt._grow_stage = recording
    try:
        gbt.fit_gbt(x, [y], None, **kw)
    finally:
        gbt._grow_stage = grow
    return grads, splits


def _best_gain(x, g, feature):
    """The best split gain (N times the SSE reduction) of one feature by brute force, with
    scikit-learn's candidates: midpoints of sorted values more than float32(1e-7) apart."""
    v = np.sort(x[:, feature], kind="stable")
    gs = g[np.argsort(x[:, feature], kind="stable")]
    n, s = len(g), g.sum()
    s_left, n_left = np.cumsum(gs)[:-1], np.arange(1, n)
    gain = (s_left * n - s * n_left) ** 2 / (n_left * (n - n_left))
    gain[~(v[1:] > v[:-1] + np.float32(1e-7))] = -np.inf
    return gain.max(initial=-np.inf)


def _gain_of(x, g, feature, threshold):
    """The gain of one split (rows with x <= threshold go left)."""
    left = x[:, feature] <= threshold
    n, n_left = len(g), left.sum()
    if n_left in (0, n):
        return -np.inf
    return (g[left].sum() * n - g.sum() * n_left) ** 2 / (n_left * (n - n_left))


def _first_difference(x, y, n_estimators, **kw):
    """Compare fast mode's trees with scikit-learn's, stage by stage and node by node (nodes
    scikit-learn leaves pure, impurity < 1e-12, are skipped: it may split those on rounding
    noise, which changes nothing). Returns None if all agree, else, at the first node where they
    differ, the relative difference between the exact gain of scikit-learn's split and that of
    fast mode's."""
    from sklearn.ensemble import GradientBoostingClassifier

    depth = kw.get("max_depth", 3)
    grads, splits = _splits_of_every_stage(x, y, n_estimators=n_estimators, **kw)
    ref = GradientBoostingClassifier(n_estimators=n_estimators, max_depth=depth, random_state=0)
    ref.fit(x, y)
    for stage in range(n_estimators):
        for c, est in enumerate(ref.estimators_[stage]):
            tree = est.tree_
            nodes, rows = [0], {0: np.ones(len(x), bool)}
            for level in range(depth):
                following = [None] * (2 * len(nodes))
                for j, nd in enumerate(nodes):
                    if nd is None or tree.children_left[nd] == -1 or tree.impurity[nd] < 1e-12:
                        continue
                    feat, thr = int(splits[stage][level][0][j, c]), splits[stage][level][1][j, c]
                    f_ref, t_ref = tree.feature[nd], tree.threshold[nd]
                    # Ours is the largest float32 not above the threshold (the same routing).
                    t32 = np.float32(t_ref)
                    if t32 > t_ref:
                        t32 = np.nextafter(t32, np.float32(-np.inf))
                    if feat != f_ref or thr != t32:
                        here = rows[nd]
                        g = grads[stage][here, c]
                        a, b = _best_gain(x[here], g, f_ref), _gain_of(x[here], g, feat, thr)
                        return abs(a - b) / max(abs(a), abs(b))
                    left, right = tree.children_left[nd], tree.children_right[nd]
                    rows[left] = rows[nd] & (x[:, f_ref] <= t_ref)
                    rows[right] = rows[nd] & (x[:, f_ref] > t_ref)
                    following[j], following[j + len(nodes)] = left, right
                nodes = following
    return None


@pytest.mark.parametrize(
    "case, max_bins",
    [("continuous", 768), ("continuous", 16), ("mixed", 64), ("tiny scale", 32), ("clusters", 40)],
)
def test_fast_gbt_finds_sklearns_exact_splits(case, max_bins):
    """The same split as scikit-learn's exact splitter at every node, whatever ``max_bins``
    (16: ~40 rows per bin, most of the search inside bins; 768: one bin per value), until the
    two pick different features with the same gain (to 1e-9: the ties of integer-valued
    gradients at the first stages, decided by float rounding in both); boosting then drifts.

    "tiny scale": values ~1e-4 apart by ~1e-8, where scikit-learn does not split between
    values less than float32(1e-7) apart but does between rows further apart in a node.
    "clusters": values 1e-4 apart, each repeated with offsets of 0-1 or 0-3 x 4e-8 (1-4
    float32 steps at 0.3): runs of values without a gap above 1e-7 that span less (no split
    inside) or more (a split inside between rows far enough apart), scanned inside bins
    (40 bins: some hold only the narrow runs, others a wide one)."""
    rng = np.random.RandomState(3)
    n = 500
    y = rng.randint(3, size=n)
    z = np.c_[y + rng.randn(n), rng.randn(n, 2)]
    if case == "mixed":
        z = z @ rng.randn(3, 3)
    if case == "tiny scale":
        z = np.c_[z[:, :2], (y + rng.randn(n)) * 2e-6]
    if case == "clusters":
        step = np.round(10 * (y + rng.randn(n))).astype(int)
        wide = step % 3 == 0  # a third of the runs span 3 x 4e-8, the others 4e-8 at most
        offset = rng.randint(0, np.where(wide, 4, 2)) * 4e-8
        z = np.c_[(0.3 + 1e-4 * step + offset).astype(np.float32), z[:, 1:]]
    x = z.astype(np.float32)
    diff = _first_difference(x, y, 15, max_bins=max_bins)
    assert diff is None or diff < 1e-9, diff


@pytest.mark.gpu
@pytest.mark.parametrize("max_bins", [768, 16])
def test_fast_gbt_on_cuda_finds_sklearns_exact_splits(max_bins):
    """The same torch code on a GPU (dense one-hot histogram products): scikit-learn's splits
    until a tie, as on the CPU."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    rng = np.random.RandomState(3)
    y = rng.randint(3, size=500)
    x = (np.c_[y + rng.randn(500), rng.randn(500, 2)] @ rng.randn(3, 3)).astype(np.float32)
    diff = _first_difference(x, y, 15, max_bins=max_bins, device="cuda")
    assert diff is None or diff < 1e-9, diff


def test_fast_gbt_splits_duplicated_features_like_sklearn():
    """A duplicated (and a rescaled) feature ties exactly with its copy at every node; like
    scikit-learn (random feature order per node) the splits, hence the importances, are shared
    between the copies rather than all credited to the first (at least 30% each here; measured
    34-66% for both)."""
    from sklearn.ensemble import GradientBoostingClassifier

    rng = np.random.RandomState(0)
    n = 600
    y = rng.randint(4, size=n)
    z = y + rng.randn(n)
    x = np.c_[z, 2.5 * z, rng.randn(n)].astype(np.float32)
    fast = fit_gbt(x, [y], None, n_estimators=40).importances[0]
    ref = GradientBoostingClassifier(n_estimators=40, random_state=0).fit(x, y)
    for imp in (fast, ref.feature_importances_):
        share = imp[0] / (imp[0] + imp[1])
        assert 0.3 < share < 0.7, imp


def test_fast_gbt_close_to_sklearn_on_continuous_features():
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = _gbt_data(discrete=False, n=800)
    res = fit_gbt(x, [y[:, j] for j in range(3)], None, n_estimators=40, max_bins=64)
    for j in range(3):
        ref = GradientBoostingClassifier(n_estimators=40, random_state=0).fit(x, y[:, j])
        assert np.abs(res.importances[j] - ref.feature_importances_).max() < 0.05
        acc_fast = np.mean(res.train_pred[j] == y[:, j])
        acc_ref = np.mean(ref.predict(x) == y[:, j])
        assert abs(acc_fast - acc_ref) < 0.05


def test_fast_gbt_workers_give_identical_results():
    """Task groups boosted in parallel (forked processes): the same predictions as one worker
    and the same importances to float rounding, results in the order of the labels. The sparse
    histogram product may sum in another order for another number of columns: each split gain
    comes from float32 sums of at most n = 700 values, whose relative rounding error is at most
    n * eps32 = 4.2e-5 (seen: identical results), hence rtol 5e-5."""
    x, y = _gbt_data(discrete=False, n=700)
    ys = [y[:, 2], y[:, 0], np.full(len(y), 4), y[:, 1]]  # 5, 2, 1, 3 classes
    one = fit_gbt(x, ys, x[:90], n_estimators=12, max_bins=64, workers=1)
    for workers in (2, 3, 8):
        par = fit_gbt(x, ys, x[:90], n_estimators=12, max_bins=64, workers=workers)
        for a, b in zip(one.importances, par.importances, strict=True):
            np.testing.assert_allclose(a, b, rtol=5e-5, atol=1e-12)
        for field in ("train_pred", "test_pred"):
            for a, b in zip(getattr(one, field), getattr(par, field), strict=True):
                np.testing.assert_array_equal(a, b)
    assert np.all(one.train_pred[2] == 4) and np.all(one.importances[2] == 0)


def test_gbt_groups_balance_trees():
    from semidisent.metrics.gbt import _groups

    # dSprites' factors: 3, 6, 40, 32, 32 classes -> 40 + 6 + 3 trees against 32 + 32.
    groups = _groups([3, 6, 40, 32, 32], 2)
    assert sorted(map(sorted, groups)) == [[0, 1, 2], [3, 4]]
    assert sorted(i for g in _groups([1, 0, 5, 2], 8) for i in g) == [0, 1, 2, 3]
    assert len(_groups([1, 0, 5, 2], 8)) == 3  # no more groups than tasks with trees
    assert _groups([4, 4], 1) == [[0, 1]]


def test_gbt_probabilities_survive_overflow():
    """Without max subtraction exp overflows for large raw predictions; the per-task softmax /
    sigmoid then takes over and gives the same probabilities torch's would."""
    import torch

    from semidisent.metrics.gbt import _Probabilities

    tasks = [(np.arange(3), None), (np.arange(2), None)]
    probs = _Probabilities(tasks, [(0, 3), (3, 1)], 4, torch.device("cpu"))
    for scale in (1.0, 800.0):  # 800: e^800 overflows float64
        raw = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        raw *= scale
        got = probs(raw.clone())
        np.testing.assert_allclose(got[:, :3], torch.softmax(raw[:, :3], 1), rtol=1e-12)
        np.testing.assert_allclose(got[:, 3], torch.sigmoid(raw[:, 3]), rtol=1e-12)
        assert torch.isfinite(got).all()


def test_fast_gbt_degenerate_labels():
    x = np.random.default_rng(0).standard_normal((50, 3))
    res = fit_gbt(x, [np.full(50, 7)], x[:5], n_estimators=3)
    assert np.all(res.importances[0] == 0)
    assert np.all(res.train_pred[0] == 7) and np.all(res.test_pred[0] == 7)


def test_rows_are_routed_by_their_own_nodes_split():
    """_go_right looks every row's feature and threshold up by its (node, tree) and gathers its
    value: the same decisions as comparing each node's rows on its feature, for 1-4 nodes."""
    import torch

    from semidisent.metrics.gbt import _go_right

    rng = np.random.default_rng(0)
    n, d, trees = 300, 5, 7
    x = rng.standard_normal((n, d)).astype(np.float32)
    for k in (1, 2, 4):
        node = rng.integers(k, size=(n, trees)).astype(np.uint8)
        feat = rng.integers(d, size=(k, trees))
        thr = rng.standard_normal((k, trees)).astype(np.float32)
        want = x[np.arange(n)[:, None], feat[node, np.arange(trees)]] > thr[node, np.arange(trees)]
        split = (torch.as_tensor(feat), torch.as_tensor(thr))
        got = _go_right(torch.as_tensor(x), None if k == 1 else torch.as_tensor(node), split)
        np.testing.assert_array_equal(got.numpy(), want)


def test_histogram_product_into_a_buffer_is_the_same():
    """The product written into a reused buffer (addmm with beta 0, whatever the buffer held)
    gives the same sums, bit for bit, as a fresh product."""
    import torch

    from semidisent.metrics.gbt import _Histograms

    rng = np.random.default_rng(1)
    n, d, bins = 500, 3, 16
    hist = _Histograms(rng.integers(bins, size=(n, d)), bins, torch.device("cpu"))
    w = hist.columns(n, 40, torch.device("cpu"))
    w[:, :40] = torch.as_tensor(rng.standard_normal((n, 40)), dtype=torch.float32)
    out = torch.full((d * bins, w.shape[1]), torch.nan)
    assert torch.equal(hist.of(w, out), hist.of(w))


def test_features_with_many_values_get_max_bins_bins():
    """One bin per value only for features with at most 2 max_bins distinct values; a feature
    with more (here 3000 values, a few repeated 60 times) gets ~max_bins bins even when its
    2 max_bins quantile bins would number fewer than 2 max_bins (the repeated values)."""
    import torch

    from semidisent.metrics.gbt import _Data

    rng = np.random.default_rng(2)
    many = np.r_[rng.standard_normal(3000), np.repeat(rng.standard_normal(10), 60)]
    few = rng.integers(20, size=len(many))  # one bin per value
    data = _Data(np.c_[many, few], None, 32, torch.device("cpu"))
    assert data.b <= 40, data.b  # 32 quantile bins (64 quantile bins would be 74 here)
    assert not data.per_value
