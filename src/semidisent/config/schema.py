"""The typed schema of params.yaml: one frozen dataclass per stage section.

Every field documents its meaning and its allowed values; ``validate`` methods hold the checks
that involve several fields. Cross-section checks (labels vs. dataset size, factor names) are in
:meth:`Params.validate`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ..data.catalog import CATALOG, dataset_info
from ..errors import ParamsError
from ..methods.drmm.params import DRMMParams
from ..methods.localvae.params import LocalVAEParams
from ..methods.names import METHOD_NAMES
from ..methods.psvae.params import PSVAEParams
from ..methods.s2.params import AnnealedVAEParams, DIPVAEParams, FactorVAEParams, MineVAEParams
from ..methods.strkm.params import StRKMParams
from ..metrics.names import FEW_LABEL_NAMES, METRIC_NAMES
from .validation import (
    all_of,
    bad_value,
    between,
    check,
    non_empty,
    non_negative,
    positive,
    to_plain,
)


def _known_dataset(v: Any) -> str | None:
    return None if v in CATALOG else "one of " + ", ".join(CATALOG)


@dataclass(frozen=True)
class DataParams:
    """Which ground-truth dataset to prepare."""

    dataset: str = field(default="dsprites", metadata=check(_known_dataset))
    # Official dataset file or folder. Required for file-only datasets; for the dSprites family,
    # null means the procedural renderer and a path means the official npz.
    path: str | None = None

    def validate(self, prefix: str) -> None:
        info = dataset_info(self.dataset)
        if info.needs_path and not self.path:
            raise bad_value(
                f"{prefix}.path",
                self.path,
                f"the path of the {self.dataset} files ({info.summary})",
            )


LABELLERS = ("perfect", "binned", "noisy", "partial")


@dataclass(frozen=True)
class SupervisionParams:
    """The labelled pool (METHODS.md section 2)."""

    seed: int = 0
    # Size of the labelled pool: n_labels examples, or label_fraction of the dataset (not both).
    n_labels: int | None = field(default=1000, metadata=check(positive))
    label_fraction: float | None = field(default=None, metadata=check(between(0, 1, lo_open=True)))
    # Held-out share of the pool, used only for model selection (never for training).
    validation_fraction: float = field(default=0.1, metadata=check(between(0, 1, hi_open=True)))
    labeller: Literal["perfect", "binned", "noisy", "partial"] = "perfect"
    # binned: factors with more than num_bins values are cut into num_bins equal bins.
    num_bins: int = field(default=5, metadata=check(all_of(positive)))
    # noisy: each label entry is replaced by a uniform random value with this probability.
    noise_prob: float = field(default=0.1, metadata=check(between(0, 1)))
    # partial: which factor columns are observed: named ones, or a random subset of this size
    # (disentanglement_lib's partial labeller); null for both means every column.
    observed_factors: tuple[str, ...] | None = None
    num_observed_factors: int | None = field(default=None, metadata=check(positive))
    # partial: each entry of an observed column is additionally kept with this probability
    # (per example and factor; the project's generalisation, METHODS.md section 2).
    entry_observe_prob: float = field(default=1.0, metadata=check(between(0, 1, lo_open=True)))

    def validate(self, prefix: str) -> None:
        if (self.n_labels is None) == (self.label_fraction is None):
            raise bad_value(
                f"{prefix}.n_labels",
                self.n_labels,
                "exactly one of supervision.n_labels and supervision.label_fraction "
                f"(label_fraction is {self.label_fraction!r})",
            )
        if self.observed_factors is not None and self.num_observed_factors is not None:
            raise bad_value(
                f"{prefix}.num_observed_factors",
                self.num_observed_factors,
                "null when supervision.observed_factors is given",
            )


def _known_method(v: Any) -> str | None:
    return None if v in METHOD_NAMES else "one of " + ", ".join(METHOD_NAMES)


@dataclass(frozen=True)
class ModelParams:
    """The model family (docs/architecture.md) and its VAE (METHODS.md section 3)."""

    # The family: s2vae (the semi-supervised beta-VAE) or another member of disentanglement_lib's
    # semi-supervised family; a family with keys of its own reads them from its section.
    name: str = field(default="s2vae", metadata=check(_known_method))
    num_latent: int = field(default=10, metadata=check(positive))
    # Kernel of encoder convs 3-4: 4 as in the paper, 2 as in disentanglement_lib's code.
    encoder_kernel: Literal[4, 2] = 4
    # Weight initialisation: "xavier" matches TF/disentanglement_lib, "torch" is PyTorch's default.
    init: Literal["xavier", "torch"] = "xavier"


@dataclass(frozen=True)
class TrainParams:
    """Optimisation, the semi-supervised objective and label replacement (sections 3-5)."""

    seed: int = 0
    steps: int = field(default=900, metadata=check(positive))
    batch_size: int = field(default=64, metadata=check(positive))
    # Labelled images per step (defaults to batch_size, as in disentanglement_lib: 64 + 64).
    labelled_batch_size: int | None = field(default=None, metadata=check(positive))
    lr: float = field(default=1e-4, metadata=check(positive))
    beta: float = field(default=4.0, metadata=check(positive))
    supervised_loss: Literal["xent", "l2", "cov", "embed", "none"] = "xent"
    # "sum" is the reference reduction over batch and factors; "mean" divides by the batch.
    sup_reduction: Literal["sum", "mean"] = "sum"
    gamma_sup: float = field(default=1.0, metadata=check(non_negative))
    # ramp = disentanglement_lib's "anneal", switch = its "fine_tune" (both names accepted).
    gamma_schedule: Literal["fixed", "ramp", "switch", "anneal", "fine_tune"] = "fixed"
    gamma_threshold: int = field(default=0, metadata=check(non_negative))
    replacement_rate: float = field(default=0.5, metadata=check(between(0, 1)))
    replacement_unit: Literal["example", "entry"] = "example"
    # Which labelled examples are reconstructed (docs/training.md "Label replacement"):
    # "replaced" (default: p = 0 is then exactly Locatello et al.'s objective, the published
    # baseline) decodes only examples with a replaced entry, so p also sets how much x_l is
    # reconstructed; "all" decodes every labelled example each step (replaced with probability
    # p, else from its own code), so (all, p = 0) vs (all, p > 0) isolates replacement.
    labelled_recon: Literal["replaced", "all"] = "replaced"
    # Weight of the labelled reconstruction term (e.g. B_l / B * n_l / N to weigh a labelled
    # image like an unlabelled one; 1 = as much per step as the whole unlabelled batch).
    labelled_weight: float = field(default=1.0, metadata=check(non_negative))
    # Noise on a replaced value: none, or the encoder's posterior noise exp(v / 2) * eps
    # (detached), so that replaced and inferred codes reach the decoder with the same spread.
    replacement_noise: Literal["none", "posterior"] = "none"
    # Target value t(y) of a replaced latent: "auto" is the one consistent with supervised_loss
    # (xent: logit, l2: scaled, cov / none: gaussian, embed: embedding; docs/training.md).
    replacement_target: Literal["auto", "logit", "gaussian", "scaled", "embedding"] = "auto"
    # embed regulariser: logits -((mu_j - e_{j,i}) * sigma)^2; sigma fixed or learned (init here).
    embed_sigma: float = field(default=1.0, metadata=check(positive))
    embed_learn_sigma: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Compiled step replayed as a CUDA graph (CUDA only); "auto" = on when on CUDA.
    fast: Literal["auto", "on", "off"] = "auto"
    amp: Literal["auto", "bf16", "off"] = "auto"
    checkpoint_every: int = field(default=1000, metadata=check(positive))
    log_every: int = field(default=100, metadata=check(positive))

    def validate(self, prefix: str) -> None:
        if self.gamma_schedule != "fixed" and self.gamma_threshold <= 0:
            raise bad_value(
                f"{prefix}.gamma_threshold",
                self.gamma_threshold,
                f"a number of steps > 0 with gamma_schedule = {self.gamma_schedule}",
            )
        limit = gamma_threshold_limit(self.gamma_schedule, self.steps)
        if limit is not None and self.gamma_threshold > limit:
            raise bad_value(
                f"{prefix}.gamma_threshold",
                self.gamma_threshold,
                f"a step < {limit + 1} with {prefix}.gamma_schedule = {self.gamma_schedule} and "
                f"{prefix}.steps = {self.steps} ({GAMMA_REACHED[self.gamma_schedule]}; the last "
                f"step is {self.steps - 1}: gamma_sup would never be fully on)",
            )
        needs = {"scaled": "l2", "embedding": "embed"}.get(self.replacement_target)
        if needs is not None and self.supervised_loss != needs:
            raise bad_value(
                f"{prefix}.replacement_target",
                self.replacement_target,
                f"auto, logit or gaussian with supervised_loss = {self.supervised_loss} "
                f"({self.replacement_target} needs supervised_loss = {needs})",
            )


# When a gamma_sup schedule reaches gamma_sup (objectives/schedule.py; steps are 0-based).
GAMMA_REACHED = {
    "ramp": "ramp reaches gamma_sup at step gamma_threshold",
    "switch": "switch turns gamma_sup on at step gamma_threshold + 1",
    "anneal": "anneal (= ramp) reaches gamma_sup at step gamma_threshold",
    "fine_tune": "fine_tune (= switch) turns gamma_sup on at step gamma_threshold + 1",
}


def gamma_threshold_limit(schedule: str, steps: int) -> int | None:
    """The largest train.gamma_threshold whose schedule reaches gamma_sup within ``steps``
    training steps (steps 0 .. steps - 1): steps - 1 for ramp, steps - 2 for switch; None for
    fixed (no threshold)."""
    limits = {"ramp": steps - 1, "switch": steps - 2}
    return limits.get({"anneal": "ramp", "fine_tune": "switch"}.get(schedule, schedule))


CORE_METRICS = ("beta_vae", "factor_vae", "mig", "dci", "sap", "modularity")


@dataclass(frozen=True)
class EvalParams:
    """Disentanglement metrics (METHODS.md section 6)."""

    mode: Literal["fast", "reference"] = "fast"
    metrics: tuple[str, ...] = field(default=CORE_METRICS, metadata=check(non_empty))
    seed: int = 0
    # Multiplies the study sample sizes (1.0 = disentanglement_lib's defaults).
    sample_scale: float = field(default=1.0, metadata=check(between(0, 1, lo_open=True)))
    # Also compute MIG / DCI / SAP on the labelled pool (few-label model selection).
    few_label: bool = True
    # Which pool rows the few-label scores (val_mig / val_dci / val_sap, and the search's val_*
    # objectives) use (metrics/few_label.py, docs/metrics.md). dlib: disentanglement_lib's
    # protocol: val_mig on all n labelled points, val_dci / val_sap fitted on the rows training
    # saw and scored on the held-out ones. heldout: every score on the held-out rows only
    # (stricter, not dlib's); refused below 100 held-out labels, too few to tell a perfect code
    # from a random one (measured: docs/metrics.md; metrics/few_label.py HELDOUT_MIN_LABELS).
    few_label_protocol: Literal["dlib", "heldout"] = "dlib"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Images per encoder call (the representation function's device batch).
    batch_size: int = field(default=1024, metadata=check(positive))
    # Torch CPU threads of the metric estimators (0: torch's default). 1 avoids OpenMP stalls
    # when the cores are shared with other work (docs/metrics.md).
    cpu_threads: int = field(default=1, metadata=check(non_negative))
    # Independent estimator problems (DCI's boosted trees) fitted at the same time, each in its
    # own thread on one torch thread; scores move by float rounding at most (0: one per core).
    cpu_workers: int = field(default=0, metadata=check(non_negative))
    # Write pictures (reconstructions, samples, traversals, heat maps) under <out>/plots.
    plots: bool = True
    # Metrics also computed for a freshly initialised encoder (same settings and seed), written
    # beside the model's as metrics.json's "random_encoder": the baseline a trained model must
    # beat. [] turns it off.
    random_baseline: tuple[str, ...] = ("mig", "dci")
    # Generation quality (metrics/generation.py: sliced Wasserstein on pixels, Frechet distance
    # in an in-project factor classifier's features): auto = for families that generate by
    # design (st_rkm); always = also every VAE (decoder means at z ~ N(0, I)); never.
    generation: Literal["auto", "always", "never"] = "auto"
    # Generated (and real) images scored, times sample_scale (at least 500).
    generation_samples: int = field(default=10_000, metadata=check(positive))
    # Training steps of the factor classifier (once per dataset: cached, metrics/generation.py).
    generation_classifier_steps: int = field(default=2000, metadata=check(positive))


@dataclass(frozen=True)
class SearchParams:
    """Hyper-parameter search over train.* keys, model.name and family keys (Optuna);
    docs/search.md."""

    # "{digest}" is replaced by a digest of everything that makes trials comparable (space,
    # objectives, steps, fixed train keys, model, the sections of the families trials train,
    # data, supervision): a changed configuration then gets a study of its own instead of
    # being mixed into an old one.
    study_name: str = field(
        default="semidisent-{digest}",
        metadata=check(lambda v: None if str(v).strip() else "a non-empty name"),
    )
    # Optuna storage URL; a relative sqlite path is resolved against the current directory.
    # Any RDB URL (postgresql+psycopg2://user@host/db) lets workers on several machines share it.
    storage: str = "sqlite:///optuna.db"
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["none", "median", "hyperband"] = "median"
    # The study's budget; `semidisent search --n-trials N` makes N this worker's own budget.
    n_trials: int = field(default=8, metadata=check(non_negative))
    # Trials with replacement_rate = 0 (the semi-supervised baseline of Locatello et al., no label
    # replacement; the other searched keys sampled as usual) that every study runs first, at most
    # n_trials; enqueued once per study (a resumed or shared study is not given more). Ignored,
    # with a note in the summary, when replacement_rate is not searched. 0: no baseline.
    baseline_trials: int = field(default=2, metadata=check(non_negative))
    timeout_s: float | None = field(default=None, metadata=check(positive))
    # Trials trained together as one batched model (asked together, told together).
    # null: 8 on CUDA, 1 on a CPU (whose compute-bound step gets slower when batched:
    # docs/search.md "Speed").
    trials_per_batch: int | None = field(default=None, metadata=check(positive))
    steps: int = field(default=1000, metadata=check(positive))
    # Intermediate evaluations of the objective per trial (evenly spaced, the last at `steps`):
    # reported to the pruner. 1 = evaluate at the end only (no pruning).
    reports: int = field(default=4, metadata=check(positive))
    objectives: tuple[str, ...] = field(default=("val_mig",), metadata=check(non_empty))
    directions: tuple[Literal["maximize", "minimize"], ...] = ("maximize",)
    # Sampler seed (mixed with the worker id and the study's size, so that workers and resumed
    # runs draw different trials).
    seed: int = 0
    # Trials sampled at random before TPE models the results, and completed trials the median
    # pruner waits for before it prunes.
    n_startup_trials: int = field(default=4, metadata=check(non_negative))
    # Full-ground-truth metrics (eval.metrics names) logged beside each completed trial, never
    # used for selection; [] to skip them (and the per-trial pictures).
    gt_metrics: tuple[str, ...] = ("mig", "dci")
    # Seconds between a worker's liveness records; a trial whose worker stays silent for three
    # intervals is failed and re-queued (up to max_retries times). null: no heartbeat.
    heartbeat_s: int | None = field(default=60, metadata=check(positive))
    max_retries: int = field(default=2, metadata=check(non_negative))
    # Parameter -> {low, high, log} or {choices: [...]}; keys are bare train.* names (beta),
    # model.name, or <family>.<key> of a family's own section (s2_factor_vae.gamma).
    space: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "beta": {"low": 1.0, "high": 16.0, "log": True},
            # Stepped, so that p = 0 (the baseline) and p = 1 are values the sampler can draw.
            "replacement_rate": {"low": 0.0, "high": 1.0, "step": 0.25},
            "gamma_sup": {"low": 0.1, "high": 10.0, "log": True},
        }
    )

    def validate(self, prefix: str) -> None:
        if len(self.directions) != len(self.objectives):
            raise bad_value(
                f"{prefix}.directions",
                list(self.directions),
                f"one direction per objective ({len(self.objectives)})",
            )
        if self.reports > self.steps:
            raise bad_value(f"{prefix}.reports", self.reports, f"at most steps = {self.steps}")
        from ..search.space import check_objectives

        check_objectives(self.objectives, self.pruner, prefix)
        if self.baseline_trials:
            from ..search.space import check_baseline_space

            check_baseline_space(self.space, self.sampler, self.baseline_trials, prefix)
        for name in self.gt_metrics:
            if name not in METRIC_NAMES:
                raise bad_value(
                    f"{prefix}.gt_metrics",
                    list(self.gt_metrics),
                    "metric names among " + ", ".join(METRIC_NAMES),
                )


@dataclass(frozen=True)
class TrackingParams:
    """MLflow side channel; disabled means a no-op tracker."""

    enabled: bool = True
    # null: $MLFLOW_TRACKING_URI if set, else a sqlite database next to the project.
    uri: str | None = None
    experiment: str = "semidisent"
    registered_model: str | None = "semidisent-vae"
    tags: dict[str, str] = field(default_factory=dict)


# The sections of the model families that have keys of their own, named after model.name.
METHOD_SECTIONS = {
    "s2_factor_vae": FactorVAEParams,
    "s2_dip_vae": DIPVAEParams,
    "s2_annealed_vae": AnnealedVAEParams,
    "s2_mine_vae": MineVAEParams,
    "ps_vae": PSVAEParams,
    "st_rkm": StRKMParams,
    "local_vae": LocalVAEParams,
    "drmm": DRMMParams,
}

SECTIONS = {
    "data": DataParams,
    "supervision": SupervisionParams,
    "model": ModelParams,
    "train": TrainParams,
    **METHOD_SECTIONS,
    "eval": EvalParams,
    "search": SearchParams,
    "tracking": TrackingParams,
}


@dataclass(frozen=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    supervision: SupervisionParams = field(default_factory=SupervisionParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    s2_factor_vae: FactorVAEParams = field(default_factory=FactorVAEParams)
    s2_dip_vae: DIPVAEParams = field(default_factory=DIPVAEParams)
    s2_annealed_vae: AnnealedVAEParams = field(default_factory=AnnealedVAEParams)
    s2_mine_vae: MineVAEParams = field(default_factory=MineVAEParams)
    ps_vae: PSVAEParams = field(default_factory=PSVAEParams)
    st_rkm: StRKMParams = field(default_factory=StRKMParams)
    local_vae: LocalVAEParams = field(default_factory=LocalVAEParams)
    drmm: DRMMParams = field(default_factory=DRMMParams)
    eval: EvalParams = field(default_factory=EvalParams)
    search: SearchParams = field(default_factory=SearchParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)

    def validate(self, prefix: str = "") -> None:
        info = dataset_info(self.data.dataset)
        sup = self.supervision
        if sup.n_labels is not None and info.size is not None and sup.n_labels > info.size:
            raise bad_value(
                "supervision.n_labels",
                sup.n_labels,
                f"at most the {info.size} images of {self.data.dataset}",
            )
        if sup.observed_factors is not None:
            for name in sup.observed_factors:
                if name not in info.factor_names:
                    raise bad_value(
                        "supervision.observed_factors",
                        list(sup.observed_factors),
                        f"factor names of {self.data.dataset}: {', '.join(info.factor_names)}",
                    )
        if sup.num_observed_factors is not None and sup.num_observed_factors > len(
            info.factor_names
        ):
            raise bad_value(
                "supervision.num_observed_factors",
                sup.num_observed_factors,
                f"at most {len(info.factor_names)} (factors of {self.data.dataset})",
            )
        if self.model.num_latent < len(info.factor_names):
            raise bad_value(
                "model.num_latent",
                self.model.num_latent,
                f"at least the {len(info.factor_names)} factors of {self.data.dataset} "
                "(the first latents are the supervised ones)",
            )
        for key in ("metrics", "random_baseline"):
            names = getattr(self.eval, key)
            if any(metric not in METRIC_NAMES for metric in names):
                raise bad_value(
                    f"eval.{key}", list(names), "metric names among " + ", ".join(METRIC_NAMES)
                )
        if self.model.name == "s2_mine_vae" and sup.labeller == "partial":
            raise bad_value(
                "supervision.labeller",
                sup.labeller,
                "perfect, binned or noisy with model.name = s2_mine_vae (its MINE estimates "
                "pair each latent with whole label columns: every entry must be observed)",
            )
        if self.model.name == "ps_vae":
            self._check_ps_vae(info.factor_names, info.factor_sizes)
        if self.model.name == "st_rkm" and self.model.num_latent > self.st_rkm.feature_dim:
            raise bad_value(
                "model.num_latent",
                self.model.num_latent,
                f"at most st_rkm.feature_dim = {self.st_rkm.feature_dim} with model.name = "
                "st_rkm (U has orthonormal columns in the feature space)",
            )
        if self.model.name == "local_vae":
            self._check_local_vae(info.factor_names, info.observation_shape)
        if self.model.name == "drmm":
            self._check_drmm(info.factor_names, info.observation_shape)
        self._check_few_label_pool(info.size)
        from ..search.space import parse_space

        # With model.name: a family key must belong to a family the trials train.
        parse_space(self.search.space, self.search.sampler, self.model.name)

    def _check_ps_vae(self, factor_names: tuple[str, ...], factor_sizes: tuple[int, ...]) -> None:
        """The specification resolves and checks against the dataset's label columns (their
        official sizes here; the trainer checks again against the prepared mask's)."""
        from ..methods.psvae.params import binned_sizes, resolve_spec
        from ..methods.psvae.spec import SpecError

        sup = self.supervision
        sizes = binned_sizes(factor_sizes, sup.labeller, sup.num_bins)
        try:
            resolve_spec(self.ps_vae, factor_names, sizes)
        except SpecError as e:
            why = f"a specification that fits: {e}"
            raise bad_value("ps_vae.spec", self.ps_vae.spec, why) from None

    def _check_local_vae(self, factor_names: tuple[str, ...], shape: tuple[int, int, int]) -> None:
        own, name = self.local_vae, self.data.dataset
        if own.objective == "m2" and len(factor_names) != 1:
            raise bad_value(
                "local_vae.objective",
                own.objective,
                f"vae with data.dataset = {name} (m2 classifies one label column; {name} has "
                f"{len(factor_names)})",
            )
        if own.network == "conv" and tuple(shape[1:]) != (64, 64):
            raise bad_value(
                "local_vae.network",
                own.network,
                f"mlp or auto with data.dataset = {name} ({shape[1]}x{shape[2]} images; conv "
                "takes 64x64)",
            )

    def _check_drmm(self, factor_names: tuple[str, ...], shape: tuple[int, int, int]) -> None:
        own, name = self.drmm, self.data.dataset
        if own.label is not None and own.label not in factor_names:
            raise bad_value(
                "drmm.label", own.label, f"a label column of {name}: {', '.join(factor_names)}"
            )
        from ..methods.drmm.params import spatial_sizes

        if min(spatial_sizes(shape[1], shape[2], len(own.channels))[-1]) < 1:
            raise bad_value(
                "drmm.channels",
                list(own.channels),
                f"at most {int(math.log2(min(shape[1:])))} layers for {name}'s "
                f"{shape[1]}x{shape[2]} images (each halves them)",
            )

    def _check_few_label_pool(self, dataset_size: int | None) -> None:
        """Refuse eval.few_label_protocol = heldout on a held-out pool too small to select models
        (metrics/few_label.py), before any training: when the few-label scores are used (the
        evaluate stage's eval.few_label or a val_* search objective) and the pool size is known
        here (n_labels, or label_fraction of a dataset of known size; otherwise the stages check
        the drawn mask)."""
        if self.eval.few_label_protocol != "heldout":
            return
        if not self.eval.few_label and not set(self.search.objectives) & set(FEW_LABEL_NAMES):
            return
        if self.supervision.n_labels is None and dataset_size is None:
            return
        from ..metrics.few_label import heldout_refusal

        n = self.n_labels_for(dataset_size or 0)
        n_val = validation_count(n, self.supervision.validation_fraction)
        why = heldout_refusal(n_val, n) if n_val else None
        if why:
            raise ParamsError(why)

    def method_params(self) -> Any:
        """The selected family's own section (None when it has none)."""
        name = self.model.name
        return getattr(self, name) if name in METHOD_SECTIONS else None

    def n_labels_for(self, dataset_size: int) -> int:
        sup = self.supervision
        if sup.n_labels is not None:
            return sup.n_labels
        return max(1, round(sup.label_fraction * dataset_size))

    def section(self, name: str) -> dict[str, Any]:
        return to_plain(getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def digest(self, *sections: str) -> str:
        """sha256 of the named sections (all when none), stable across runs."""
        names = sections or tuple(SECTIONS)
        payload = {n: self.section(n) for n in names}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def validation_count(n: int, fraction: float) -> int:
    """Held-out examples of a pool of n (dlib: train is the first ceil(n * (1 - fraction)))."""
    return n - math.ceil(n * (1.0 - fraction) - 1e-9)
