"""Few-label model selection (Locatello et al., ICLR 2020): MIG, DCI and SAP computed on the
labelled pool, as disentanglement_lib's ``mig_validation``, ``dci_validation`` and
``sap_score_validation`` (``compute_*_on_fixed_data``).

The data are fixed, not sampled: the supervision mask's rows, their processed labels (possibly
binned or noisy) and, per entry, whether the label is observed. The mask splits the pool in
order: training rows (``mask.train``, what training's supervised regulariser R_s sees) and the
held-out validation rows (``mask.validation``, the last ``supervision.validation_fraction``).
Two protocols (``eval.few_label_protocol``) say which rows each score uses:

- ``dlib`` (default): disentanglement_lib's own protocol (``bin/dlib_reproduce_semi_supervised``,
  ``validation/validate.py``), which re-draws the same pool: ``val_mig`` on all n labelled points
  (training ones included); ``val_dci`` / ``val_sap`` fit their classifiers on the training rows
  and score on the validation rows.
- ``heldout``: this project's stricter variant (not what disentanglement_lib does): every score on
  the validation rows only; DCI and SAP split them again in order, the first ceil(0.9 m) train,
  the rest test (dlib's ``train_percentage`` 0.9). With few labels it cannot tell a perfect code
  from a random one, so it is refused (:func:`check_protocol`) below :data:`HELDOUT_MIN_LABELS`
  (100) held-out labels: the fewest whose split gives every score the points it was measured to
  need (``names.FEW_LABEL_MIN_POINTS``: val_mig 20 scored, val_dci 18 fitted, val_sap 10 tested;
  docs/metrics.md). Under ``dlib`` a pool below those minima is scored with a warning.

Each factor uses only its observed entries (the project's per-entry generalisation of dlib's
partial labeller); a factor with no observed entry is left out. Each score records the counts it
used: ``num_labels`` (distinct labelled points), ``num_seen_in_training`` (how many of them are
training rows: 0 under ``heldout``) and, for DCI and SAP, ``num_train`` / ``num_test`` (rows the
classifiers were fitted on / scored on).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import ParamsError
from .base import MetricSettings, thread_limited
from .dci import dci_scores
from .mig import mig_on_fixed_data
from .names import FEW_LABEL_MIN_POINTS, FEW_LABEL_PROTOCOLS
from .representation import CodeCache, RepresentationFunction, as_cache, check_codes
from .sap import sap_scores
from .utils import resolve_workers

FEW_LABEL_METRICS = ("val_mig", "val_dci", "val_sap")

log = logging.getLogger(__name__)
_warned: set[tuple[str, int]] = set()


@dataclass(frozen=True)
class FewLabelSettings(MetricSettings):
    metrics: tuple[str, ...] = FEW_LABEL_METRICS
    # dlib | heldout (module docstring).
    protocol: str = "dlib"
    # heldout only: the share of the validation rows DCI / SAP train on.
    train_percentage: float = 0.9
    num_bins: int = 20
    # dlib's obtain_representation batch for the fixed data.
    batch_size: int = 100
    # Fast-mode boosted trees: histogram bins per feature of their exact split search (speed
    # only; the splits are scikit-learn's for any value, metrics/gbt.py).
    max_bins: int = 384

    SCALED: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class FewLabelSplit:
    """Which rows of the labelled pool (indices into the mask, in pool order) each score uses."""

    protocol: str
    mig: np.ndarray  # val_mig's points
    fit: np.ndarray  # val_dci / val_sap: classifiers fitted on these
    score: np.ndarray  # ... and scored on these

    @property
    def used(self) -> np.ndarray:
        """Every row some score uses, sorted (pool order)."""
        return np.union1d(self.mig, np.union1d(self.fit, self.score))


def few_label_split(
    mask: Any, protocol: str = "dlib", train_percentage: float = 0.9
) -> FewLabelSplit:
    """The rows of ``mask``'s pool each few-label score uses under ``protocol``."""
    if protocol not in FEW_LABEL_PROTOCOLS:
        raise ValueError(f"few-label protocol {protocol!r}; expected one of {FEW_LABEL_PROTOCOLS}")
    val = np.flatnonzero(np.asarray(mask.is_validation, bool))
    if protocol == "dlib":
        train = np.flatnonzero(~np.asarray(mask.is_validation, bool))
        return FewLabelSplit(protocol, np.arange(len(val) + len(train)), train, val)
    k = int(np.ceil(len(val) * train_percentage))  # dlib's split_train_test
    return FewLabelSplit(protocol, val, val[:k], val[k:])


def points_per_score(split: FewLabelSplit) -> dict[str, int]:
    """The points each score's reliability depends on (names.FEW_LABEL_MIN_POINTS): val_mig's
    scored points, val_dci's fitted points (its headline comes from the fitted importances),
    val_sap's scored points."""
    return {"val_mig": len(split.mig), "val_dci": len(split.fit), "val_sap": len(split.score)}


def _heldout_min_labels(train_percentage: float = 0.9) -> int:
    """The fewest held-out labels whose heldout split gives every score its minimum
    (FEW_LABEL_MIN_POINTS); 100 with the 90/10 split, set by val_sap's 10 test points."""
    m = 1
    while True:
        k = math.ceil(m * train_percentage)  # dlib's split_train_test
        need = FEW_LABEL_MIN_POINTS
        if m >= need["val_mig"] and k >= need["val_dci"] and m - k >= need["val_sap"]:
            return m
        m += 1


# eval.few_label_protocol = heldout is refused below this many held-out labels (docs/metrics.md).
HELDOUT_MIN_LABELS = _heldout_min_labels()


def heldout_refusal(n_validation: int, n_labels: int) -> str | None:
    """Why the ``heldout`` protocol cannot select models on ``n_validation`` held-out labels of a
    pool of ``n_labels`` (None when it can)."""
    if n_validation >= HELDOUT_MIN_LABELS:
        return None
    k = math.ceil(n_validation * 0.9)
    need = FEW_LABEL_MIN_POINTS
    return (
        f"eval.few_label_protocol = heldout scores val_mig on the {n_validation} held-out labels "
        f"of the {n_labels}-label pool and fits val_dci / val_sap on {k} of them, tested on "
        f"{n_validation - k}: at least {HELDOUT_MIN_LABELS} held-out labels are needed (measured: "
        f"a perfect code reliably scores above a random one with val_mig on >= "
        f"{need['val_mig']} points, val_dci fitted on >= {need['val_dci']}, val_sap tested on >= "
        f"{need['val_sap']}; docs/metrics.md); raise supervision.n_labels or "
        "supervision.validation_fraction, or use eval.few_label_protocol = dlib"
    )


def check_protocol(mask: Any, protocol: str) -> None:
    """Refuse a protocol that cannot select models on this labelled pool (ParamsError)."""
    if protocol not in FEW_LABEL_PROTOCOLS:
        raise ParamsError(
            f"few-label protocol {protocol!r}: expected one of {', '.join(FEW_LABEL_PROTOCOLS)}"
        )
    if protocol == "heldout":
        n_val = int(np.sum(np.asarray(mask.is_validation, bool)))
        why = heldout_refusal(n_val, len(mask.is_validation)) if n_val else None
        if why:
            raise ParamsError(why)


def pool_codes(
    dataset: Any,
    mask: Any,
    representation: RepresentationFunction | CodeCache,
    seed: int,
    settings: FewLabelSettings,
    which: np.ndarray | None = None,
) -> np.ndarray:
    """Codes of the pool rows ``which`` (indices into the mask; all when None), in that order.
    Fast mode reads them from the code cache (each dataset row encoded once per evaluation)."""
    rows = np.asarray(mask.rows)
    if which is not None:
        rows = rows[np.asarray(which, np.int64)]
    if settings.mode == "fast":
        cache = as_cache(dataset, representation, settings.progress)
        if cache.usable:
            return cache.codes_of_rows(rows, "val")
    fn = representation.fn if isinstance(representation, CodeCache) else representation
    # A variant (noisy / colour) needs random draws: one RandomState(seed) for these rows.
    obs = dataset.observations_of_rows(rows, np.random.RandomState(seed))
    chunks, dim = [], None
    for start in range(0, len(obs), settings.batch_size):
        x = obs[start : start + settings.batch_size]
        c = check_codes(fn(x), len(x), "val", dim)
        dim = c.shape[1]
        chunks.append(c)
    return np.concatenate(chunks) if chunks else np.zeros((0, 0))


def validation_codes(
    dataset: Any,
    mask: Any,
    representation: RepresentationFunction | CodeCache,
    seed: int,
    settings: FewLabelSettings,
) -> np.ndarray:
    """Codes of the mask's validation rows, in pool order."""
    return pool_codes(dataset, mask, representation, seed, settings, mask.validation)


def _warn_small(split: FewLabelSplit, metrics: tuple[str, ...]) -> None:
    """Scores below their measured minimum (FEW_LABEL_MIN_POINTS) cannot rank codes: say so,
    once per score and count in a process (the search scores at every rung). In use only under
    the dlib protocol: heldout pools this small are refused before."""
    for name, points in points_per_score(split).items():
        need = FEW_LABEL_MIN_POINTS[name]
        if name not in metrics or points >= need or (name, points) in _warned:
            continue
        _warned.add((name, points))
        log.warning(
            "%s (few-label protocol %s) uses only %d labelled points: below %d a perfect code "
            "does not reliably score above a random one (docs/metrics.md); raise "
            "supervision.n_labels or supervision.validation_fraction before selecting on it",
            name,
            split.protocol,
            points,
            need,
        )


@thread_limited
def compute_few_label(
    dataset: Any,
    mask: Any,
    representation: RepresentationFunction | CodeCache,
    seed: int,
    settings: FewLabelSettings | None = None,
) -> dict[str, dict[str, float]]:
    """{"val_mig": {...}, "val_dci": {...}, "val_sap": {...}} on the labelled pool, under
    ``settings.protocol``; {} when the pool has no validation rows."""
    s = settings or FewLabelSettings()
    check_protocol(mask, s.protocol)
    if not np.asarray(mask.is_validation, bool).any():
        return {}
    split = few_label_split(mask, s.protocol, s.train_percentage)
    _warn_small(split, tuple(s.metrics))
    used = split.used
    codes_used = pool_codes(dataset, mask, representation, seed, s, used)
    codes = np.zeros((len(mask.is_validation), codes_used.shape[1]), codes_used.dtype)
    codes[used] = codes_used
    labels = np.asarray(mask.labels)
    observed = np.asarray(mask.observed, bool)
    seen = ~np.asarray(mask.is_validation, bool)

    def counts(*parts: np.ndarray) -> dict[str, int]:
        rows = np.unique(np.concatenate(parts))
        return {"num_labels": len(rows), "num_seen_in_training": int(seen[rows].sum())}

    out: dict[str, dict[str, float]] = {}
    for name in s.metrics:
        if name == "val_mig":
            m = split.mig
            out[name] = mig_on_fixed_data(codes[m], labels[m], observed[m], s.num_bins, s.mode)
            out[name].update(counts(m))
            continue
        fit, sc = split.fit, split.score
        obs = None
        if not (observed[fit].all() and observed[sc].all()):
            obs = (observed[fit], observed[sc])
        if name == "val_dci":
            out[name] = dci_scores(
                codes[fit],
                labels[fit],
                codes[sc],
                labels[sc],
                s.mode,
                s.device,
                seed,
                s.max_bins,
                obs,
                workers=resolve_workers(s.workers),
            )
        elif name == "val_sap":
            out[name] = sap_scores(
                codes[fit],
                labels[fit],
                codes[sc],
                labels[sc],
                False,
                s.mode,
                s.device,
                seed,
                observed=obs,
            )
        else:
            raise ValueError(f"few-label metric {name!r}; expected one of {FEW_LABEL_METRICS}")
        out[name].update(counts(fit, sc))
        out[name].update(num_train=len(fit), num_test=len(sc))
    return out
