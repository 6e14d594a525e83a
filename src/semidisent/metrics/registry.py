"""Metric registry keyed by the names of ``eval.metrics`` (metrics/names.py), and the one
function that evaluates a list of them on a representation.

Every metric gets the same seed (disentanglement_lib's study configs set
``evaluation.random_seed = 0`` for each metric), so metrics that sample with the same helper
and sizes see the same data, as in dlib. In fast mode one :class:`CodeCache` is shared by all
metrics: each dataset row is encoded at most once per evaluation.

On the CPU with several workers and single-threaded other work (``concurrent_allowed``), a metric
whose estimators run in forked workers (DCI's boosted trees, ``MetricSpec.concurrent``) goes
first: its points are drawn and encoded here (into the shared code cache), then its estimators
run in a forked process of their own while this process computes the other metrics. Those are
then single-threaded, so otherwise one core idled for their whole time (measured on the 2-core
CPU, six core metrics at study sizes: ~17 s one after the other, ~15.5 s so; docs/metrics.md).
Every metric draws its own points from its own seed, so the scores are those of one after the
other, to the rounding of codes that another encoding order puts in other batches.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import MetricSettings
from .beta_vae import BetaVAESettings, compute_beta_vae
from .dci import DCISettings, compute_dci, sample_dci, score_dci
from .downstream import DownstreamSettings, compute_downstream
from .factor_vae import FactorVAESettings, compute_factor_vae
from .few_label import FEW_LABEL_METRICS, FewLabelSettings, check_protocol, compute_few_label
from .forked import Forked, fork_start
from .irs import IRSSettings, compute_irs
from .mig import MIGSettings, compute_mig
from .modularity import ModularitySettings, compute_modularity
from .names import HEADLINE, METRIC_NAMES
from .representation import CodeCache, RepresentationFunction
from .sap import SAPSettings, compute_sap
from .unsupervised import UnsupervisedSettings, compute_unsupervised
from .utils import check_mode, resolve_device, resolve_workers


@dataclass(frozen=True)
class MetricSpec:
    name: str
    compute: Callable[..., dict[str, Any]]
    settings: type[MetricSettings]
    # A metric whose estimators run in forked workers (``settings.workers``), as its two parts:
    # sample(dataset, representation, seed, settings) -> data, drawn and encoded here, and
    # score(data, seed, settings, details) -> scores, which may run in a forked process
    # alongside the other metrics of an evaluation (module docstring).
    sample: Callable[..., Any] | None = None
    score: Callable[..., dict[str, Any]] | None = None

    @property
    def concurrent(self) -> bool:
        return self.sample is not None and self.score is not None

    @property
    def takes_details(self) -> bool:
        return "details" in inspect.signature(self.compute).parameters


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("beta_vae", compute_beta_vae, BetaVAESettings),
        MetricSpec("factor_vae", compute_factor_vae, FactorVAESettings),
        MetricSpec("mig", compute_mig, MIGSettings),
        MetricSpec("dci", compute_dci, DCISettings, sample_dci, score_dci),
        MetricSpec("sap", compute_sap, SAPSettings),
        MetricSpec("modularity", compute_modularity, ModularitySettings),
        MetricSpec("irs", compute_irs, IRSSettings),
        MetricSpec("unsupervised", compute_unsupervised, UnsupervisedSettings),
        MetricSpec("downstream", compute_downstream, DownstreamSettings),
    )
}
assert tuple(METRICS) == METRIC_NAMES, "registry and metrics/names.py disagree"


def metric_settings(
    name: str,
    mode: str = "reference",
    device: str = "cpu",
    sample_scale: float = 1.0,
    progress: bool = False,
    threads: int = 1,
    workers: int = 0,
) -> MetricSettings:
    """The study defaults of metric ``name`` with the run's mode, device and sample scale."""
    if name in FEW_LABEL_METRICS:
        cls: type[MetricSettings] = FewLabelSettings
    elif name in METRICS:
        cls = METRICS[name].settings
    else:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRIC_NAMES)}")
    base = cls(
        mode=check_mode(mode),
        device=resolve_device(device),
        progress=progress,
        threads=threads,
        workers=workers,
    )
    return base.scaled(sample_scale)


def compute_metric(
    name: str,
    dataset: Any,
    representation: RepresentationFunction | CodeCache,
    seed: int,
    settings: MetricSettings | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec = METRICS[name]
    settings = settings or spec.settings()
    if spec.takes_details:
        return spec.compute(dataset, representation, seed, settings, details=details)
    return spec.compute(dataset, representation, seed, settings)


def headline(name: str, scores: dict[str, Any]) -> float | None:
    """The summary number of a metric's scores (names.HEADLINE)."""
    key = HEADLINE.get(name)
    if key is None:
        return None
    if name == "downstream":
        first = next(iter(scores.values()), {})
        keys = [k for k in first if k.endswith(":" + key)]
        return first[keys[-1]] if keys else None
    value = scores.get(key)
    return None if value is None else float(value)


@dataclass
class Evaluation:
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Each metric's own wall time; a concurrent metric's overlaps the others' (``concurrent``).
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows_encoded: int = 0
    # Metrics that ran in a forked process alongside the others.
    concurrent: list[str] = field(default_factory=list)
    # Wall time of the whole evaluation.
    wall_seconds: float = 0.0

    @property
    def summary(self) -> dict[str, float]:
        out = {}
        for name, scores in self.scores.items():
            value = headline(name, scores)
            if value is not None:
                out[name] = value
        return out


def evaluate_metrics(
    names: Sequence[str],
    dataset: Any,
    representation: RepresentationFunction,
    seed: int = 0,
    mode: str = "fast",
    sample_scale: float = 1.0,
    device: str = "auto",
    progress: bool = False,
    mask: Any = None,
    few_label: bool = False,
    on_metric: Callable[[str, dict[str, Any], float], None] | None = None,
    threads: int = 1,
    workers: int = 0,
    few_label_protocol: str = "dlib",
    concurrent: bool = True,
) -> Evaluation:
    """Compute ``names`` (and, with ``few_label`` and a supervision ``mask``, val_mig / val_dci /
    val_sap under ``few_label_protocol``, dlib | heldout: metrics/few_label.py) for one
    representation. Returns scores, seconds and settings per metric.

    Where :func:`concurrent_allowed` (fast mode on the CPU, two or more ``workers``, the
    estimators and the representation on one thread), the ``concurrent`` metrics among
    ``names`` run in a forked process alongside the others (module docstring;
    ``concurrent=False``: one after the other); ``on_metric`` hears of them when they are
    done."""
    start = time.perf_counter()
    mode = check_mode(mode)
    device = resolve_device(device)
    if few_label and mask is not None:  # refuse before the other metrics take their minutes
        check_protocol(mask, few_label_protocol)
    source: RepresentationFunction | CodeCache = representation
    cache = None
    if mode == "fast":
        cache = CodeCache(dataset, representation, progress=progress)
        source = cache
    result = Evaluation()
    todo = list(names) + (list(FEW_LABEL_METRICS) if few_label and mask is not None else [])
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="metrics", unit="metric")

    def finished(name: str, scores: dict[str, Any], seconds: float, settings, details) -> None:
        result.seconds[name] = seconds
        result.scores[name] = scores
        result.settings[name] = settings.describe()
        if details:
            result.details[name] = details
        if on_metric:
            on_metric(name, scores, seconds)
        if bar is not None:
            bar.set_postfix_str(name)
            bar.update(1)

    # name -> (settings, seconds of sampling, forked call) of the metrics running alongside
    background: dict[str, tuple[MetricSettings, float, Forked]] = {}
    alongside = concurrent and concurrent_allowed(mode, device, threads, workers, representation)
    try:
        for name in dict.fromkeys(names) if alongside and len(todo) > 1 else ():
            spec = METRICS.get(name)
            if spec is None or not spec.concurrent:
                continue
            settings = metric_settings(name, mode, device, sample_scale, progress, threads, workers)
            t0 = time.perf_counter()
            data = spec.sample(dataset, source, seed, settings)  # type: ignore[misc]
            sampled = time.perf_counter() - t0
            # (Where the fork fails, result() scores it here at the end.)
            call = fork_start(functools.partial(_score, spec, data, seed, settings))
            background[name] = (settings, sampled, call)
        result.concurrent = [name for name, (_, _, call) in background.items() if call.forked]
        for name in names:
            if name in background:
                continue
            settings = metric_settings(name, mode, device, sample_scale, progress, threads, workers)
            details: dict[str, Any] = {}
            t0 = time.perf_counter()
            scores = compute_metric(name, dataset, source, seed, settings, details)
            finished(name, scores, time.perf_counter() - t0, settings, details)
        if few_label and mask is not None:
            settings = metric_settings("val_mig", mode, device, 1.0, progress, threads, workers)
            settings = dataclasses.replace(settings, protocol=few_label_protocol)
            t0 = time.perf_counter()
            few = compute_few_label(dataset, mask, source, seed, settings)  # type: ignore[arg-type]
            elapsed = time.perf_counter() - t0
            for name, scores in few.items():
                finished(name, scores, elapsed / max(1, len(few)), settings, {})
        for name, (settings, sampled, call) in background.items():
            scores, seconds, details = call.result()
            finished(name, scores, sampled + seconds, settings, details)
    finally:
        for _, _, call in background.values():  # after a failure here: stop what still runs
            call.cancel()
    if bar is not None:
        bar.close()
    if cache is not None:
        result.rows_encoded = cache.rows_computed
    # The dict order of a sequential evaluation, whatever finished first.
    order = [n for n in todo if n in result.scores] + [n for n in result.scores if n not in todo]
    result.scores = {n: result.scores[n] for n in order}
    result.seconds = {n: result.seconds[n] for n in order}
    result.settings = {n: result.settings[n] for n in order}
    result.wall_seconds = time.perf_counter() - start
    return result


def concurrent_allowed(
    mode: str, device: str, threads: int, workers: int, representation: Any = None
) -> bool:
    """Whether concurrent metrics may run alongside the others: fast mode on the CPU, with two
    or more workers, whose other metrics run on one thread: the estimators (``threads`` 1; more
    would oversubscribe the cores, and a forked child's OpenMP pool is not safe to grow) and
    the representation function (its ``threads``, if it sets its own: a VAE encoder keeps the
    threads torch had when it was wrapped). Measured with a two-thread VAE encoder (the default
    pipeline's evaluation, sample scale 0.1): 57.3 / 57.9 s alongside against 52.3 / 55.5 s one
    after the other, the encoder and DCI's workers fighting for the two cores."""
    return (
        mode == "fast"
        and device == "cpu"
        and threads == 1
        and getattr(representation, "threads", 1) <= 1
        and resolve_workers(workers) >= 2
    )


def _score(
    spec: MetricSpec, data: Any, seed: int, settings: MetricSettings
) -> tuple[dict[str, Any], float, dict[str, Any]]:
    """(scores, seconds, details) of a concurrent metric's second part."""
    details: dict[str, Any] = {}
    t0 = time.perf_counter()
    scores = spec.score(data, seed, settings, details=details)  # type: ignore[misc]
    return scores, time.perf_counter() - t0, details
