"""Fast mode against reference mode, disentanglement_lib's sampling order, the few-label variants,
and the representation-function contract."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from semidisent.data.base import GridDataset
from semidisent.data.variants import ColorVariant
from semidisent.errors import SemidisentError
from semidisent.metrics import testing
from semidisent.metrics.beta_vae import BetaVAESettings, compute_beta_vae
from semidisent.metrics.factor_vae import FactorVAESettings, compute_factor_vae
from semidisent.metrics.few_label import compute_few_label
from semidisent.metrics.mig import MIGSettings, compute_mig
from semidisent.metrics.registry import METRICS, compute_metric, evaluate_metrics, metric_settings
from semidisent.metrics.representation import CodeCache, RepresentationError
from semidisent.metrics.sampling import factor_codes
from semidisent.supervision.mask import SupervisionMask

SIZES = (3, 6, 12, 10)
CORE = ("beta_vae", "factor_vae", "mig", "dci", "sap", "modularity")


@functools.cache
def dataset():
    return testing.factor_image_dataset(SIZES)


CODES = {
    "perfect": lambda: testing.perfect_code(SIZES),
    "mixed": lambda: testing.mixed_code(SIZES, 0.5, noise_dims=2, noise_scale=0.05),
    "random": lambda: testing.random_code(SIZES, dim=6),
}


@pytest.mark.parametrize("code", list(CODES))
def test_fast_mode_agrees_with_reference_mode(code):
    scores = {
        mode: evaluate_metrics(CORE, dataset(), CODES[code](), 0, mode, 0.05, device="cpu").scores
        for mode in ("reference", "fast")
    }
    for metric in CORE:
        for key, ref in scores["reference"][metric].items():
            assert scores["fast"][metric][key] == pytest.approx(ref, abs=0.02), (metric, key)


class Recorder:
    """Records the factors of every observation batch it is called on, in call order."""

    def __init__(self):
        self.batches: list[np.ndarray] = []

    def __call__(self, x):
        f = testing.factors_from_observations(x)
        self.batches.append(f)
        return f / np.array(SIZES)


def _dlib_generate_batch_factor_code(rs, num_points, batch_size):
    """disentanglement_lib's sampling loop (utils.generate_batch_factor_code), re-typed here."""
    batches, i = [], 0
    while i < num_points:
        n = min(num_points - i, batch_size)
        batches.append(np.stack([rs.randint(k, size=n) for k in SIZES], axis=1))
        i += n
    return batches


def test_reference_mode_samples_in_dlibs_order_and_batches():
    rec = Recorder()
    compute_mig(dataset(), rec, 7, MIGSettings(num_train=100, batch_size=16))
    expected = _dlib_generate_batch_factor_code(np.random.RandomState(7), 100, 16)
    assert [len(b) for b in rec.batches] == [16] * 6 + [4]
    for got, want in zip(rec.batches, expected, strict=True):
        np.testing.assert_array_equal(got, want)

    rec = Recorder()
    compute_beta_vae(dataset(), rec, 3, BetaVAESettings(batch_size=8, num_train=5, num_eval=5))
    rs = np.random.RandomState(3)
    for i in range(10):
        k = rs.randint(len(SIZES))
        f1 = np.stack([rs.randint(s, size=8) for s in SIZES], 1)
        f2 = np.stack([rs.randint(s, size=8) for s in SIZES], 1)
        f2[:, k] = f1[:, k]
        np.testing.assert_array_equal(rec.batches[2 * i], f1)
        np.testing.assert_array_equal(rec.batches[2 * i + 1], f2)

    rec = Recorder()
    settings = FactorVAESettings(
        batch_size=8, num_train=4, num_eval=4, num_variance_estimate=100, prune_threshold=0.0
    )
    compute_factor_vae(dataset(), rec, 5, settings)
    rs = np.random.RandomState(5)
    variance = np.stack([rs.randint(s, size=100) for s in SIZES], 1)
    # The variance estimate is encoded in chunks of 64 (dlib's obtain_representation).
    assert [len(b) for b in rec.batches[:2]] == [64, 36]
    np.testing.assert_array_equal(np.concatenate(rec.batches[:2]), variance)
    for i in range(8):
        k = rs.randint(len(SIZES))
        f = np.stack([rs.randint(s, size=8) for s in SIZES], 1)
        f[:, k] = f[0, k]
        np.testing.assert_array_equal(rec.batches[2 + i], f)


def test_fast_and_reference_sample_the_same_data():
    for mode_data in ("plain", "variant"):
        ds = dataset()
        fn = testing.perfect_code(SIZES)
        if mode_data == "variant":  # observation-time randomness: no row cache, same draws
            ds = GridDataset("colour", ds.factor_names, ds.store, SIZES, variant=ColorVariant())

            def fn(x):
                return x.reshape(len(x), -1)

        out = {
            mode: factor_codes(ds, fn, np.random.RandomState(1), [50, 30], 16, "t", mode)
            for mode in ("reference", "fast")
        }
        for (c_ref, f_ref), (c_fast, f_fast) in zip(out["reference"], out["fast"], strict=True):
            np.testing.assert_array_equal(f_ref, f_fast)
            np.testing.assert_array_equal(c_ref, c_fast)


def test_code_cache_encodes_each_row_once_across_metrics():
    calls = []

    def fn(x):
        calls.append(len(x))
        return testing.perfect_code(SIZES)(x)

    ev = evaluate_metrics(("mig", "dci", "sap"), dataset(), fn, 0, "fast", 0.05, device="cpu")
    # MIG, DCI and SAP draw the same first 500 points from the same seed (as in dlib).
    # Each of those 750 draws is encoded once, repeated rows (2,160-row grid) not again.
    assert sum(calls) == ev.rows_encoded < 750


def _mask(observed_fraction: float = 1.0) -> SupervisionMask:
    rng = np.random.default_rng(0)
    n = 400
    rows = rng.choice(dataset().num_rows, n, replace=False)
    labels = dataset().factors_of(rows)
    observed = rng.random(labels.shape) < observed_fraction
    is_val = np.zeros(n, bool)
    is_val[200:] = True
    return SupervisionMask(
        rows=rows,
        is_validation=is_val,
        labels=np.where(observed, labels, -1),
        observed=observed,
        label_sizes=SIZES,
        factor_names=dataset().factor_names,
    )


@pytest.mark.parametrize("observed_fraction", [1.0, 0.6])
def test_few_label_metrics_use_only_the_held_out_pool(observed_fraction):
    mask = _mask(observed_fraction)
    code = testing.perfect_code(SIZES)
    out = {}
    for mode in ("reference", "fast"):
        settings = metric_settings("val_mig", mode, "cpu")
        out[mode] = compute_few_label(dataset(), mask, code, 0, settings)
    assert set(out["fast"]) == {"val_mig", "val_dci", "val_sap"}
    assert out["fast"]["val_mig"]["num_labels"] == 200
    for name, scores in out["reference"].items():
        for key, value in scores.items():
            assert out["fast"][name][key] == pytest.approx(value, abs=0.02), (name, key)
    # A perfect code on 200 labelled points: every factor has <= 12 values < 20 bins.
    assert out["fast"]["val_mig"]["discrete_mig"] > 0.8
    assert out["fast"]["val_dci"]["disentanglement"] > 0.8


def test_few_label_changes_with_the_labels_not_with_the_training_rows():
    mask = _mask()
    code = testing.perfect_code(SIZES)
    settings = metric_settings("val_mig", "fast", "cpu")
    a = compute_few_label(dataset(), mask, code, 0, settings)
    # Shuffle the labels of the training part only: validation scores must not move.
    labels = mask.labels.copy()
    labels[:200] = labels[:200][::-1]
    moved = SupervisionMask(
        mask.rows, mask.is_validation, labels, mask.observed, mask.label_sizes, mask.factor_names
    )
    assert compute_few_label(dataset(), moved, code, 0, settings) == a


@pytest.mark.parametrize("mode", ["reference", "fast"])
def test_workers_do_not_change_scores(mode):
    """eval.cpu_workers only changes how many estimator problems run at once (DCI's boosted
    trees per factor / per group of factors), not a score (beyond float rounding)."""
    code = testing.mixed_code(SIZES, 0.5, noise_dims=2, noise_scale=0.05)
    scores = []
    for workers in (1, 2):
        settings = metric_settings("dci", mode, "cpu", 0.05, workers=workers)
        scores.append(compute_metric("dci", dataset(), code, 0, settings))
    assert scores[1] == pytest.approx(scores[0], rel=1e-9, abs=1e-12)
    mask = _mask(0.6)  # few-label DCI: one boosted model per factor on its observed rows
    few = [
        compute_few_label(
            dataset(), mask, code, 0, metric_settings("val_mig", mode, "cpu", workers=w)
        )["val_dci"]
        for w in (1, 2)
    ]
    assert few[1] == pytest.approx(few[0], rel=1e-9, abs=1e-12)


BAD = {
    "nan": (lambda x: np.full((len(x), 3), np.nan), "NaN"),
    "rank": (lambda x: np.zeros(len(x)), "shape"),
    "rows": (lambda x: np.zeros((len(x) + 1, 3)), "rows"),
    "text": (lambda x: np.array([["a"]] * len(x)), "dtype"),
}


@pytest.mark.parametrize("mode", ["reference", "fast"])
@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("metric", list(METRICS))
def test_bad_representation_gets_a_clear_error_naming_the_metric(metric, bad, mode):
    fn, words = BAD[bad]
    settings = metric_settings(metric, mode, "cpu", sample_scale=0.001)
    with pytest.raises(RepresentationError, match=rf"metric {metric}: .*{words}") as err:
        compute_metric(metric, dataset(), fn, 0, settings)
    assert isinstance(err.value, SemidisentError)


def test_changing_code_size_is_refused():
    sizes = iter([3, 3, 4, 4, 4, 4, 4, 4])

    def fn(x):
        return np.zeros((len(x), next(sizes)))

    with pytest.raises(RepresentationError, match=r"mig: .*4 dimensions after returning 3"):
        compute_mig(dataset(), fn, 0, MIGSettings(num_train=64, batch_size=16))


def test_vae_representation_uint8_and_float_paths_agree():
    from semidisent.metrics.representation import vae_representation
    from semidisent.models import VAE, VAEConfig

    torch.manual_seed(0)
    rep = vae_representation(VAE(VAEConfig()), device="cpu", batch_size=7)
    pixels = (np.random.default_rng(0).random((20, 1, 64, 64)) > 0.5).astype(np.uint8) * 255
    floats = pixels.astype(np.float32) * np.float32(1 / 255)
    np.testing.assert_array_equal(rep(pixels), rep(floats))
    assert rep(floats).shape == (20, 10) and rep(floats).dtype == np.float32


def test_cache_refuses_another_dataset():
    cache = CodeCache(dataset(), testing.perfect_code(SIZES))
    other = testing.factor_image_dataset(SIZES)
    with pytest.raises(ValueError, match="another dataset"):
        compute_mig(other, cache, 0, MIGSettings(mode="fast", num_train=32))


@pytest.mark.gpu
def test_fast_mode_on_cuda_agrees_with_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    code = testing.mixed_code(SIZES, 0.5, noise_dims=2, noise_scale=0.05)
    cpu = evaluate_metrics(CORE, dataset(), code, 0, "fast", 0.05, device="cpu").scores
    gpu = evaluate_metrics(CORE, dataset(), code, 0, "fast", 0.05, device="cuda").scores
    for metric in CORE:
        for key, value in cpu[metric].items():
            assert gpu[metric][key] == pytest.approx(value, abs=0.02), (metric, key)
