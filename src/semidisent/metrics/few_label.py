"""Few-label model selection (Locatello et al., ICLR 2020): MIG, DCI and SAP computed on the
held-out part of the labelled pool only, as disentanglement_lib's ``mig_validation``,
``dci_validation`` and ``sap_score_validation`` (``compute_*_on_fixed_data``).

The data are fixed, not sampled: the supervision mask's validation rows (``is_validation``), their
processed labels (possibly binned or noisy) and, per entry, whether the label is observed. DCI and
SAP split those rows in order: the first ceil(0.9 n) train, the rest test (dlib's
``train_percentage`` 0.9). Each factor uses only its observed entries (the project's per-entry
generalisation of dlib's partial labeller); a factor with no observed entry is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import MetricSettings, thread_limited
from .dci import dci_on_fixed_data
from .mig import mig_on_fixed_data
from .representation import CodeCache, RepresentationFunction, as_cache, check_codes
from .sap import sap_on_fixed_data
from .utils import resolve_workers

FEW_LABEL_METRICS = ("val_mig", "val_dci", "val_sap")


@dataclass(frozen=True)
class FewLabelSettings(MetricSettings):
    metrics: tuple[str, ...] = FEW_LABEL_METRICS
    train_percentage: float = 0.9
    num_bins: int = 20
    # dlib's obtain_representation batch for the fixed data.
    batch_size: int = 100
    max_bins: int = 768

    SCALED: ClassVar[tuple[str, ...]] = ()


def validation_codes(
    dataset: Any,
    mask: Any,
    representation: RepresentationFunction | CodeCache,
    seed: int,
    settings: FewLabelSettings,
) -> np.ndarray:
    """Codes of the mask's validation rows, in pool order."""
    rows = np.asarray(mask.rows)[np.asarray(mask.is_validation, bool)]
    if settings.mode == "fast":
        cache = as_cache(dataset, representation, settings.progress)
        if cache.usable:
            return cache.codes_of_rows(rows, "val")
    fn = representation.fn if isinstance(representation, CodeCache) else representation
    # A variant (noisy / colour) needs random draws: one RandomState(seed) for the whole pool.
    obs = dataset.observations_of_rows(rows, np.random.RandomState(seed))
    chunks, dim = [], None
    for start in range(0, len(obs), settings.batch_size):
        x = obs[start : start + settings.batch_size]
        c = check_codes(fn(x), len(x), "val", dim)
        dim = c.shape[1]
        chunks.append(c)
    return np.concatenate(chunks) if chunks else np.zeros((0, 0))


@thread_limited
def compute_few_label(
    dataset: Any,
    mask: Any,
    representation: RepresentationFunction | CodeCache,
    seed: int,
    settings: FewLabelSettings | None = None,
) -> dict[str, dict[str, float]]:
    """{"val_mig": {...}, "val_dci": {...}, "val_sap": {...}} on the held-out labelled pool."""
    s = settings or FewLabelSettings()
    val = np.asarray(mask.is_validation, bool)
    if not val.any():
        return {}
    codes = validation_codes(dataset, mask, representation, seed, s)
    labels = np.asarray(mask.labels)[val]
    observed = np.asarray(mask.observed, bool)[val]
    out: dict[str, dict[str, float]] = {}
    for name in s.metrics:
        if name == "val_mig":
            out[name] = mig_on_fixed_data(codes, labels, observed, s.num_bins, s.mode)
        elif name == "val_dci":
            out[name] = dci_on_fixed_data(
                codes,
                labels,
                observed,
                s.train_percentage,
                s.mode,
                s.device,
                seed,
                s.max_bins,
                resolve_workers(s.workers),
            )
        elif name == "val_sap":
            out[name] = sap_on_fixed_data(
                codes, labels, observed, s.train_percentage, False, s.mode, s.device, seed
            )
        else:
            raise ValueError(f"few-label metric {name!r}; expected one of {FEW_LABEL_METRICS}")
        out[name]["num_labels"] = int(val.sum())
    return out
