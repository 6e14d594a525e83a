"""evaluate_metrics with a concurrent metric (DCI in a forked process alongside the others): the
same scores as one after the other, every metric reported, failures raised as themselves and
nothing left running after one."""

from __future__ import annotations

import functools
import multiprocessing
import os

import numpy as np
import pytest

from semidisent.metrics import registry, testing
from semidisent.metrics.dci import DCISettings
from semidisent.metrics.mig import MIGSettings
from semidisent.metrics.registry import MetricSpec, evaluate_metrics

SIZES = (3, 6, 8, 8)
NAMES = ("mig", "dci", "sap")


@functools.cache
def dataset():
    return testing.factor_image_dataset(SIZES)


@functools.cache
def code() -> testing.PrecomputedCode:
    """A mixed code looked up by row: every row's code is the same whichever batch (and
    process) encodes it, so the two schedules must agree exactly."""
    mixed = testing.mixed_code(SIZES, 0.5, noise_dims=2, noise_scale=0.05)
    return testing.PrecomputedCode(SIZES, mixed(dataset().images(np.arange(dataset().num_rows))))


def _evaluate(names=NAMES, **kw):
    return evaluate_metrics(names, dataset(), code(), 0, "fast", 0.1, "cpu", workers=2, **kw)


def test_a_concurrent_evaluation_scores_exactly_as_one_after_the_other():
    heard = []
    together = _evaluate(on_metric=lambda name, scores, seconds: heard.append(name))
    apart = _evaluate(concurrent=False)
    assert together.concurrent == ["dci"] and apart.concurrent == []
    assert together.scores == apart.scores
    assert list(together.scores) == list(NAMES) == list(together.seconds)
    assert together.settings == apart.settings
    assert sorted(heard) == sorted(NAMES) and heard[-1] == "dci"  # heard of when done
    assert set(together.details) == set(apart.details) == set(NAMES)
    for name, details in apart.details.items():
        for key, value in details.items():
            np.testing.assert_array_equal(together.details[name][key], value)
    # DCI's points are drawn and encoded here, into the shared cache: no row twice.
    assert together.rows_encoded == apart.rows_encoded
    assert together.wall_seconds > 0


class _TwoThreadEncoder(testing.PrecomputedCode):
    threads = 2  # as a VAE encoder wrapped on two torch threads


@pytest.mark.parametrize(
    ("names", "kw"),
    [
        (("dci",), {}),  # nothing to run alongside
        (NAMES, {"threads": 2}),  # multi-threaded metrics would oversubscribe the cores
    ],
)
def test_no_concurrency_where_it_cannot_help(names, kw):
    assert _evaluate(names, **kw).concurrent == []
    # An encoder on two threads and DCI's two workers would fight for the cores.
    encoder = _TwoThreadEncoder(SIZES, code().table)
    two = evaluate_metrics(NAMES, dataset(), encoder, 0, "fast", 0.1, "cpu", workers=2)
    assert two.concurrent == [] and two.scores == _evaluate().scores
    one_worker = evaluate_metrics(NAMES, dataset(), code(), 0, "fast", 0.1, "cpu", workers=1)
    assert one_worker.concurrent == []


def _fails(*args, **kwargs):
    raise ValueError(f"bad metric in process {os.getpid()}")


def test_a_failing_concurrent_metric_raises_its_own_error(monkeypatch):
    dci = registry.METRICS["dci"]
    failing = MetricSpec("dci", dci.compute, DCISettings, dci.sample, _fails)
    monkeypatch.setitem(registry.METRICS, "dci", failing)
    with pytest.raises(ValueError, match="bad metric in process") as caught:
        _evaluate()
    assert str(os.getpid()) not in str(caught.value)  # raised in the forked process
    assert multiprocessing.active_children() == []


def test_a_failure_alongside_stops_the_concurrent_metric(monkeypatch):
    monkeypatch.setitem(registry.METRICS, "mig", MetricSpec("mig", _fails, MIGSettings))
    with pytest.raises(ValueError, match=f"bad metric in process {os.getpid()}"):
        _evaluate()
    assert multiprocessing.active_children() == []
