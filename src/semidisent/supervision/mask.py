"""The supervision mask: a fixed labelled pool, its train/validation split, labels and
observed entries.

Drawn once from the dataset with its own seed (METHODS.md section 2). Independent random streams
(numpy SeedSequence children) are used for the pool, the labeller and the observed mask, so that
changing the labeller never changes which rows are labelled.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from ..config.schema import SupervisionParams, validation_count
from ..data.base import FactorDataset
from ..errors import ParamsError
from .labellers import LABELLERS


@dataclass(frozen=True)
class SupervisionMask:
    rows: np.ndarray  # int64 (n,): dataset rows of the labelled pool, in draw order
    is_validation: np.ndarray  # bool (n,): held out for model selection (the last ones)
    labels: np.ndarray  # int64 (n, F): processed labels; -1 where not observed
    observed: np.ndarray  # bool (n, F): which label entries are observed
    label_sizes: tuple[int, ...]  # values each label column can take (after binning)
    factor_names: tuple[str, ...]
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def train(self) -> np.ndarray:
        return np.nonzero(~self.is_validation)[0]

    @property
    def validation(self) -> np.ndarray:
        return np.nonzero(self.is_validation)[0]

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "rows": self.rows,
            "is_validation": self.is_validation,
            "labels": self.labels,
            "observed": self.observed,
            "label_sizes": np.asarray(self.label_sizes, np.int64),
        }

    def digest(self) -> str:
        """Content hash of the mask (rows, split, labels, observed), for tracking."""
        h = hashlib.sha256()
        for name, arr in self.arrays().items():
            h.update(name.encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


def _observed_mask(
    n: int, names: tuple[str, ...], sp: SupervisionParams, rng: np.random.Generator
) -> np.ndarray:
    f = len(names)
    if sp.labeller != "partial":
        return np.ones((n, f), dtype=bool)
    if sp.observed_factors is not None:
        columns = np.array([name in sp.observed_factors for name in names])
    elif sp.num_observed_factors is not None:
        columns = np.zeros(f, dtype=bool)
        columns[rng.choice(f, size=sp.num_observed_factors, replace=False)] = True
    else:
        columns = np.ones(f, dtype=bool)
    observed = np.broadcast_to(columns, (n, f)).copy()
    if sp.entry_observe_prob < 1.0:
        observed &= rng.random((n, f)) < sp.entry_observe_prob
    return observed


def build_mask(dataset: FactorDataset, sp: SupervisionParams) -> SupervisionMask:
    candidates = np.arange(dataset.num_rows)
    if dataset.holdout is not None and len(dataset.holdout):
        candidates = np.setdiff1d(candidates, dataset.holdout)
    n = (
        sp.n_labels
        if sp.n_labels is not None
        else max(1, round(sp.label_fraction * len(candidates)))
    )
    if n > len(candidates):
        raise ParamsError(
            f"invalid parameter supervision.n_labels = {n}: expected at most the "
            f"{len(candidates)} images of {dataset.name} available for labelling"
        )
    n_val = validation_count(n, sp.validation_fraction)
    pool_rng, label_rng, mask_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(sp.seed).spawn(3)
    )
    rows = pool_rng.choice(candidates, size=n, replace=False)
    factors = dataset.factors_of(rows)
    labeller = LABELLERS[sp.labeller]
    labels, label_sizes = labeller(
        factors, dataset.factor_sizes, label_rng, num_bins=sp.num_bins, noise_prob=sp.noise_prob
    )
    observed = _observed_mask(n, dataset.factor_names, sp, mask_rng)
    labels = np.where(observed, labels, -1).astype(np.int64)
    is_validation = np.zeros(n, dtype=bool)
    is_validation[n - n_val :] = True
    return SupervisionMask(
        rows=rows.astype(np.int64),
        is_validation=is_validation,
        labels=labels,
        observed=observed,
        label_sizes=tuple(int(k) for k in label_sizes),
        factor_names=dataset.factor_names,
        meta={"seed": sp.seed, "labeller": sp.labeller, "n_labels": n, "n_validation": n_val},
    )
