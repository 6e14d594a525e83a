"""The statistics of a study's tables: descriptive summaries with a bootstrap CI of the mean,
paired differences with a bootstrap CI and a Wilcoxon signed-rank test, the verdict, and model
selection regret. numpy and scipy only (scipy.stats.bootstrap, scipy.stats.wilcoxon).

Choices, and why:

- **Expanded percentile bootstrap** of the mean (Hesterberg 2015, "What teachers should know
  about the bootstrap", The American Statistician 69(4)): ``scipy.stats.bootstrap(method=
  "percentile")`` at the level
  ``1 - 2 Phi(-sqrt(n / (n - 1)) t_{n-1, 1 - alpha/2})`` instead of ``1 - alpha``. The plain
  percentile interval of a mean **undercovers at small n**: measured (benchmarks/
  study_bootstrap_coverage.py, normal data) 74% at n = 3, 83% at n = 5, 89% at n = 8, 91% at
  n = 10 for a nominal 95%, so equal arms would get a "verdict" 11% of the time at n = 8. The
  expansion widens it to the t interval's coverage for normal data while staying a bootstrap
  interval (no normality assumed beyond the width's calibration): 90% at n = 5, 94% at n = 8,
  95% from n = 10, and equal arms get a verdict 6% of the time at n = 8 (5% from n = 10).
  Not BCa: at these n its jackknife acceleration is unstable and undefined for data with no
  spread, and it covers no better.
- **The verdict comes from the CI only**: "better" when the whole interval of arm - reference is
  above 0, "worse" when below, "inconclusive" when it contains 0 (every metric here is
  higher-is-better). Never from the mean alone, and not from the p-value (it is reported beside).
  One guard: below :func:`min_pairs` pairs (6 at 95%) the verdict is "inconclusive" whatever the
  interval says. A percentile interval of n values excludes 0 as soon as all n differences share
  a sign, which happens by chance with probability 2 / 2^n when the arms are equal: 1/2 at n = 2,
  1/16 at n = 5, 1/32 at n = 6. Below that n no data can carry a 95% verdict (the same bound
  makes Wilcoxon's p unable to reach 0.05).
- **Wilcoxon signed-rank**, two-sided, zero differences dropped (``zero_method="wilcox"``), exact
  distribution when possible. With m non-zero differences the smallest attainable p is
  2 / 2^m: at m <= 5 no data can reach p < 0.05. The table reports that minimum beside p, and
  p is ``None`` (with the reason) when no difference is non-zero or there is no pair at all.
- Intervals are seeded per key (the comparison, the cell, the metric), so a table does not
  depend on the order in which it is computed, and a rerun gives the same table.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def key_seed(base: int, key: str) -> int:
    """A seed of its own for each interval (stable across runs and orders)."""
    return zlib.crc32(f"{base}:{key}".encode()) & 0x7FFFFFFF


def expanded_confidence(confidence: float, n: int) -> float:
    """The percentile level whose interval covers like a t interval at n (Hesterberg 2015)."""
    from scipy import stats

    alpha = 1.0 - confidence
    z = math.sqrt(n / (n - 1)) * stats.t.ppf(1.0 - alpha / 2.0, n - 1)
    # At n = 2-3 the level rounds to 1: the interval is then the resamples' whole range.
    return float(min(1.0 - 1e-9, 1.0 - 2.0 * stats.norm.cdf(-z)))


def bootstrap_ci(
    values: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
    statistic: Callable[..., Any] = np.mean,
    expand: bool = True,
) -> tuple[float, float] | None:
    """Expanded percentile bootstrap CI of ``statistic`` (default the mean; ``expand=False``: the
    plain percentile interval); None for fewer than 2 values. Values with no spread have the
    degenerate interval [v, v] (scipy would return NaN)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return None
    if np.ptp(x) == 0.0:  # every resample is the same sample: the value itself
        return (float(x[0]), float(x[0]))
    from scipy import stats

    with warnings.catch_warnings():
        # n < 5 draws few distinct resamples; scipy warns, the interval is still the percentile
        # one (and the table shows n).
        warnings.simplefilter("ignore")
        level = expanded_confidence(confidence, x.size) if expand else confidence
        res = stats.bootstrap(
            (x,),
            statistic,
            n_resamples=resamples,
            confidence_level=level,
            method="percentile",
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
    lo, hi = res.confidence_interval
    return (float(lo), float(hi))


@dataclass(frozen=True)
class Summary:
    """Per arm, cell and metric."""

    n: int
    mean: float | None
    std: float | None  # sample standard deviation (ddof = 1); None below 2 values
    median: float | None
    ci_low: float | None
    ci_high: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def describe(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 9999, seed: int = 0
) -> Summary:
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return Summary(0, None, None, None, None, None)
    ci = bootstrap_ci(x, confidence=confidence, resamples=resamples, seed=seed)
    return Summary(
        n=n,
        mean=float(x.mean()),
        std=float(x.std(ddof=1)) if n > 1 else None,
        median=float(np.median(x)),
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
    )


def min_pairs(confidence: float = 0.95) -> int:
    """The fewest pairs whose all-same-sign pattern is rarer than 1 - confidence under equal
    arms (2 / 2^n <= 1 - confidence): 6 at 95%, 8 at 99%."""
    return max(2, math.ceil(math.log2(2.0 / (1.0 - confidence)) - 1e-12))


def verdict(ci: tuple[float, float] | None, n: int | None = None, confidence: float = 0.95) -> str:
    """From the interval only (higher is better); "inconclusive" below :func:`min_pairs`."""
    if ci is None:
        return "n/a"
    if n is not None and n < min_pairs(confidence):
        return "inconclusive"
    lo, hi = ci
    if lo > 0:
        return "better"
    if hi < 0:
        return "worse"
    return "inconclusive"


@dataclass(frozen=True)
class Wilcoxon:
    p: float | None
    n_nonzero: int
    p_min: float | None  # the smallest p the test can give with n_nonzero differences
    note: str = ""


def wilcoxon(differences: Sequence[float]) -> Wilcoxon:
    """Two-sided Wilcoxon signed-rank test of paired differences (scipy), with small n handled
    explicitly: zero differences are dropped; none left -> p None; few left -> p_min says how
    small p could have been at all."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    nz = int(np.count_nonzero(d))
    if d.size == 0:
        return Wilcoxon(None, 0, None, "no pair")
    if nz == 0:
        return Wilcoxon(None, 0, None, "every difference is 0")
    p_min = min(1.0, 2.0 / 2**nz)
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sample size too small" for the normal approximation
        res = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    note = ""
    if p_min > 0.05:
        note = f"{nz} non-zero differences: p cannot fall below {p_min:.3g}"
    return Wilcoxon(float(res.pvalue), nz, p_min, note)


@dataclass(frozen=True)
class Paired:
    """arm - reference over the pairs both have."""

    n: int
    mean_diff: float | None
    median_diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_wilcoxon: float | None
    p_min: float | None
    wins: int  # pairs where the arm scored higher
    ties: int
    losses: int
    verdict: str
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def paired(
    arm: dict[Any, float],
    reference: dict[Any, float],
    *,
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
) -> Paired:
    """Paired comparison of two arms' scores keyed by their pair (supervision seed, training
    seed); pairs that one arm lacks (a diverged model, a missing score) are left out."""
    keys = sorted(k for k in arm if k in reference and _finite(arm[k]) and _finite(reference[k]))
    d = np.asarray([arm[k] - reference[k] for k in keys], dtype=np.float64)
    n = int(d.size)
    ci = bootstrap_ci(d, confidence=confidence, resamples=resamples, seed=seed)
    w = wilcoxon(d)
    notes = [w.note] if w.note else []
    if n < 2:
        notes.append(f"{n} pair: no interval")
    elif n < min_pairs(confidence):
        notes.append(
            f"{n} pairs: fewer than {min_pairs(confidence)}, too few for a verdict at "
            f"{confidence:.0%}"
        )
    return Paired(
        n=n,
        mean_diff=float(d.mean()) if n else None,
        median_diff=float(np.median(d)) if n else None,
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
        p_wilcoxon=w.p,
        p_min=w.p_min,
        wins=int((d > 0).sum()),
        ties=int((d == 0).sum()),
        losses=int((d < 0).sum()),
        verdict=verdict(ci, n, confidence),
        note="; ".join(notes),
    )


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


@dataclass(frozen=True)
class Selection:
    """Model selection among the candidates of one group (one arm, cell and labelled pool)."""

    picked: Any  # the key of the model the few-label score picks
    best: Any  # the key of the best model by the ground-truth metric
    regret: float  # ground truth of best - ground truth of picked (>= 0)
    random_regret: float  # best - the mean candidate: what picking at random loses on average
    n: int


def select(selection: dict[Any, float], truth: dict[Any, float]) -> Selection | None:
    """The model with the highest few-label score against the best by ground truth (Locatello
    et al. 2020: regret of unsupervised / few-label model selection). Ties go to the first key
    in sorted order, so the choice is reproducible."""
    keys = sorted(k for k in selection if _finite(selection[k]) and _finite(truth.get(k)))
    if not keys:
        return None
    picked = max(keys, key=lambda k: (selection[k], -keys.index(k)))
    best = max(keys, key=lambda k: (truth[k], -keys.index(k)))
    gt = np.asarray([truth[k] for k in keys])
    return Selection(
        picked=picked,
        best=best,
        regret=float(truth[best] - truth[picked]),
        random_regret=float(truth[best] - gt.mean()),
        n=len(keys),
    )


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Rank correlation of the few-label score with the ground truth (None below 3 points or
    for a constant series)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    from scipy import stats

    return float(stats.spearmanr(a, b).statistic)


def bootstrap_coverage(
    n: int,
    *,
    sims: int = 400,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    expand: bool = True,
) -> float:
    """How often :func:`bootstrap_ci` of the mean covers the true mean of normal data of size n
    (the number the docs quote for small n; ``benchmarks/study_bootstrap_coverage.py``)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(sims):
        x = rng.normal(0.3, 1.0, n)
        ci = bootstrap_ci(
            x, confidence=confidence, resamples=resamples, seed=seed * 100003 + i, expand=expand
        )
        hits += ci is not None and ci[0] <= 0.3 <= ci[1]
    return hits / sims
