"""Supervision masks: invariants as properties (hypothesis) plus the labellers' exact rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from semidisent.config import SupervisionParams, validation_count
from semidisent.data.base import GridDataset, LabelledDataset
from semidisent.data.store import DenseStore
from semidisent.supervision import build_mask
from semidisent.supervision.labellers import binned


def _grid(sizes):
    n = math.prod(sizes)
    return GridDataset(
        "toy",
        tuple(f"f{i}" for i in range(len(sizes))),
        DenseStore(np.zeros((n, 1, 2, 2), np.uint8)),
        sizes,
    )


SIZES = st.lists(st.integers(1, 12), min_size=1, max_size=4).filter(lambda s: math.prod(s) >= 2)


@st.composite
def setups(draw):
    sizes = tuple(draw(SIZES))
    n_rows = math.prod(sizes)
    n = draw(st.integers(1, n_rows))
    sp = SupervisionParams(
        seed=draw(st.integers(0, 2**32 - 1)),
        n_labels=n,
        validation_fraction=draw(st.sampled_from([0.0, 0.1, 0.5, 0.9])),
        labeller=draw(st.sampled_from(["perfect", "binned", "noisy", "partial"])),
        num_bins=draw(st.integers(1, 6)),
        noise_prob=draw(st.floats(0, 1)),
        num_observed_factors=draw(st.one_of(st.none(), st.integers(1, len(sizes)))),
        entry_observe_prob=draw(st.floats(0.05, 1.0)),
    )
    return sizes, sp


@given(setups())
@settings(max_examples=80, deadline=None)
def test_mask_invariants(setup):
    sizes, sp = setup
    ds = _grid(sizes)
    mask = build_mask(ds, sp)
    n = sp.n_labels
    # A fixed pool of distinct rows; validation rows never in the training part.
    assert mask.n == n and len(np.unique(mask.rows)) == n
    assert set(mask.rows[mask.train]).isdisjoint(mask.rows[mask.validation])
    assert mask.is_validation.sum() == validation_count(n, sp.validation_fraction)
    assert len(mask.train) >= 1
    # Masks only hide: unobserved entries carry no value, observed ones equal the labeller's.
    assert np.all(mask.labels[~mask.observed] == -1)
    truth = ds.factors_of(mask.rows)
    obs = mask.observed
    if sp.labeller in ("perfect", "partial"):
        np.testing.assert_array_equal(mask.labels[obs], truth[obs])
    if sp.labeller != "partial":
        assert obs.all()
    # Labels within range of their (possibly binned) label sizes.
    for j, k in enumerate(mask.label_sizes):
        col = mask.labels[obs[:, j], j]
        assert np.all((col >= 0) & (col < k))
        if sp.labeller == "binned":
            assert k == (sp.num_bins if sizes[j] > sp.num_bins else sizes[j])
    # Same seed, same mask.
    again = build_mask(ds, sp)
    assert again.digest() == mask.digest()


@given(setups(), st.sampled_from(["perfect", "binned", "noisy", "partial"]))
@settings(max_examples=30, deadline=None)
def test_the_pool_does_not_depend_on_the_labeller(setup, other):
    sizes, sp = setup
    ds = _grid(sizes)
    a = build_mask(ds, sp)
    b = build_mask(ds, SupervisionParams(**{**sp.__dict__, "labeller": other}))
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.is_validation, b.is_validation)


@given(setups())
@settings(max_examples=30, deadline=None)
def test_different_seeds_give_different_pools(setup):
    sizes, sp = setup
    assume(2 <= sp.n_labels <= math.prod(sizes) // 2)
    ds = _grid(sizes)
    masks = {
        tuple(build_mask(ds, SupervisionParams(**{**sp.__dict__, "seed": s})).rows)
        for s in range(6)
    }
    assert len(masks) > 1


@given(st.integers(6, 64), st.integers(1, 8))
def test_binning_rule(k, bins):
    y = np.arange(k)[:, None]
    out, sizes = binned(y, (k,), np.random.default_rng(0), num_bins=bins)
    if k > bins:
        np.testing.assert_array_equal(
            out[:, 0], np.minimum(np.floor(y[:, 0] / (k / bins)), bins - 1)
        )
        assert sizes == (bins,)
        assert out.min() == 0 and out.max() == bins - 1
        assert np.all(np.diff(out[:, 0]) >= 0)  # monotone: bins keep the order
    else:
        np.testing.assert_array_equal(out, y)


def test_noisy_labeller_replaces_about_the_asked_share():
    ds = _grid((40, 32))
    mask = build_mask(
        ds, SupervisionParams(n_labels=1200, labeller="noisy", noise_prob=0.3, seed=1)
    )
    changed = (mask.labels != ds.factors_of(mask.rows)).mean()
    # A replaced entry keeps its value with probability 1/k; expected change 0.3 * (1 - 1/k).
    expected = 0.3 * np.mean([1 - 1 / 40, 1 - 1 / 32])
    assert changed == pytest.approx(expected, abs=0.03)


def test_partial_labeller_named_columns_and_entry_probability():
    ds = _grid((3, 4, 5))
    sp = SupervisionParams(n_labels=50, labeller="partial", observed_factors=("f0", "f2"))
    mask = build_mask(ds, sp)
    assert mask.observed[:, 0].all() and not mask.observed[:, 1].any() and mask.observed[:, 2].all()
    sp = SupervisionParams(n_labels=60, labeller="partial", entry_observe_prob=0.5, seed=3)
    assert 0.35 < build_mask(ds, sp).observed.mean() < 0.65


def test_labelled_datasets_never_label_the_official_test_split():
    labels = np.arange(100) % 10
    ds = LabelledDataset("toy", DenseStore(np.zeros((100, 1, 2, 2), np.uint8)), labels, 10)
    ds.holdout = np.arange(80, 100)
    mask = build_mask(ds, SupervisionParams(n_labels=80, seed=0))
    assert mask.rows.max() < 80
    with pytest.raises(Exception, match="at most the 80 images"):
        build_mask(ds, SupervisionParams(n_labels=81))


def test_label_fraction():
    ds = _grid((10, 10))
    mask = build_mask(ds, SupervisionParams(n_labels=None, label_fraction=0.25))
    assert mask.n == 25
