"""A study: named arms crossed with a grid of labelled pools and seeds, and the plan that trains it.

A study definition (a YAML file under ``studies/``, docs/study.md) names **arms** (each a set of
train / model / family overrides), a **baseline** arm, and the grid every arm is trained on:
``n_labels`` x ``labeller`` (x an optional ``beta`` grid) make the **cells**;
``supervision_seeds`` x ``training_seeds`` make the **pairs** inside a cell: every arm of a pair
sees the same labelled pool, the same initial weights and the same batches, so ``arm - baseline``
over the pairs is a paired comparison. Presets (``ci``, ``cpu``, ``paper``) replace top-level
keys of the definition (``overrides`` and ``statistics`` are merged key by key).

Every model's parameters are params.yaml, then the definition's ``overrides``, then the command
line's ``-S`` overrides, then the cell, the seeds and the arm; each is validated by the project's
schema.
Bad definitions are refused here, before anything runs, with one line each (:class:`StudyError`):
unknown keys (with the closest known one), an arm equal to the baseline or to another arm, a
paired comparison over a single seed pair, cells the schema refuses.

The plan is a pure function of the resolved document (:meth:`Study.document`), so a worker
process or a Kubeflow pod rebuilds exactly the orchestrator's plan from ``study.json``. Nothing
here imports torch unless the plan has to group models for a GPU (``batch: group``).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..config.load import apply_overrides, params_from_dict, parse_override, read_yaml
from ..config.schema import (
    CORE_METRICS,
    LABELLERS,
    METHOD_SECTIONS,
    ModelParams,
    Params,
    TrainParams,
)
from ..config.validation import bad_value, between, build, check, non_empty, positive, to_plain
from ..errors import ParamsError, SemidisentError
from ..metrics.names import HEADLINE, METRIC_NAMES

# Study metrics that are not disentanglement metrics: scores of another evaluation that the
# evaluate stage writes to metrics.json's summary, higher is better like every study metric.
SUMMARY_SCORES = ("classification_accuracy",)

DEFAULT_DEFINITION = "studies/label_replacement.yaml"
# Train keys that say how a run executes, not what it learns: never an arm's business, and left
# out of a model's identity (a changed checkpoint interval must not retrain finished models).
EXECUTION_KEYS = ("device", "fast", "checkpoint_every", "log_every")
# Eval keys that change how fast scores are computed, not the scores (beyond float rounding).
EVAL_EXECUTION_KEYS = ("device", "batch_size", "cpu_threads", "cpu_workers")
ARM_SECTIONS = ("train", "model", *METHOD_SECTIONS)


class StudyError(SemidisentError):
    """A study definition that cannot be run, or a study that cannot go on."""


def _positive_list(v: Any) -> str | None:
    if v is None:
        return None
    if any(x <= 0 for x in v):
        return "a list of numbers > 0"
    if len(set(v)) != len(v):
        return "a list without repeated values"
    return None


def _distinct(v: Any) -> str | None:
    if v is None:
        return None
    return None if len(set(v)) == len(v) else "a list without repeated values"


@dataclass(frozen=True)
class StatisticsSettings:
    """How the study's tables are computed (study/statistics.py)."""

    # Two-sided confidence of every interval (bootstrap CIs of means and of paired differences).
    confidence: float = field(
        default=0.95, metadata=check(between(0, 1, lo_open=True, hi_open=True))
    )
    # Bootstrap resamples per interval (scipy.stats.bootstrap).
    resamples: int = field(default=9999, metadata=check(positive))
    # Base seed of the resampling; each interval mixes in its own key, so a table does not depend
    # on the order in which it is computed.
    seed: int = 0


@dataclass(frozen=True)
class StudyDefinition:
    """One study, after its preset is applied (docs/study.md "Definition")."""

    name: str = field(
        default="study",
        metadata=check(
            lambda v: (
                None
                if v and all(c.isalnum() or c in "-_" for c in v)
                else "a name of letters, digits, - and _"
            )
        ),
    )
    description: str = ""
    # arm name -> overrides: bare train keys (replacement_rate), train.<key>, model.<key> or
    # <family>.<key> (the search space's convention).
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The arm every other arm is compared with, pair by pair.
    baseline: str = "baseline"
    # Further paired comparisons [arm, reference] beyond "every arm - baseline".
    comparisons: tuple[tuple[str, str], ...] = ()
    # The grid: cells = n_labels x labeller (x beta); pairs = supervision_seeds x training_seeds.
    n_labels: tuple[int, ...] = field(default=(1000,), metadata=check(_positive_list))
    labeller: tuple[str, ...] = field(default=("perfect",), metadata=check(non_empty))
    supervision_seeds: tuple[int, ...] = field(default=(0,), metadata=check(_distinct))
    training_seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=check(_distinct))
    # Optional small beta grid (train.beta per cell); null: every model uses train.beta.
    beta: tuple[float, ...] | None = field(default=None, metadata=check(_positive_list))
    # Paired comparisons (bootstrap CI of the mean difference, Wilcoxon signed-rank test).
    paired: bool = True
    # Ground-truth metrics of every model (eval.metrics of its evaluation).
    metrics: tuple[str, ...] = field(default=CORE_METRICS, metadata=check(non_empty))
    # The few-label score that picks a model (model selection, Locatello et al. 2020).
    selection: Literal["val_mig", "val_dci", "val_sap"] = "val_mig"
    # params keys -> values for every model of the study (dotted, as -S writes them).
    overrides: dict[str, Any] = field(default_factory=dict)
    # auto: models that can share one batched run are trained as one (K models) on CUDA, one at a
    # time on a CPU (whose compute-bound step gets slower when batched); one | group: forced.
    batch: Literal["auto", "one", "group"] = "auto"
    # Training processes side by side (CPU): 1 runs every model in this process; N > 1 runs
    # them as N single-threaded worker processes (DESIGN.md "Performance principles").
    jobs: int = field(default=1, metadata=check(positive))
    statistics: StatisticsSettings = field(default_factory=StatisticsSettings)

    def validate(self, prefix: str) -> None:
        for i, name in enumerate(self.labeller):
            if name not in LABELLERS:
                raise bad_value(f"{prefix}.labeller[{i}]", name, "one of " + ", ".join(LABELLERS))
        if len(set(self.labeller)) != len(self.labeller):
            raise bad_value(f"{prefix}.labeller", list(self.labeller), "no repeated labeller")
        if not self.training_seeds or not self.supervision_seeds:
            raise StudyError(f"{prefix}: training_seeds and supervision_seeds need a seed each")
        for name in self.metrics:
            if name not in SUMMARY_SCORES and (name not in METRIC_NAMES or name not in HEADLINE):
                raise bad_value(
                    f"{prefix}.metrics",
                    list(self.metrics),
                    "names among " + ", ".join((*METRIC_NAMES, *SUMMARY_SCORES)),
                )
        if self.beta is not None and not self.beta:
            raise bad_value(f"{prefix}.beta", [], "null or a non-empty list")


# ------------------------------------------------------------------------------ reading


def read_definition(path: str | Path) -> dict[str, Any]:
    """The definition file as a mapping (with its ``presets`` and default ``preset``)."""
    try:
        return read_yaml(path)
    except ParamsError as e:
        raise StudyError(str(e).replace("parameter file", "study definition")) from None


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """A preset over the definition: top-level keys replaced, ``overrides`` and ``statistics``
    merged key by key (a preset adds ``train.steps`` without repeating the others)."""
    out = copy.deepcopy(dict(base))
    for k, v in top.items():
        if k in ("overrides", "statistics") and isinstance(v, Mapping):
            out[k] = {**(out.get(k) or {}), **v}
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_study_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """``study.key=value`` overrides (``-S study.training_seeds=[0,1]``) on the definition."""
    out = copy.deepcopy(dict(raw))
    for text in overrides:
        path, value = parse_override(text)
        if path[0] != "study" or len(path) < 2:
            raise StudyError(f"invalid study override {text!r}: expected study.key=value")
        node = out
        for part in path[1:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {} if child is None else child
            if not isinstance(child, dict):
                raise StudyError(f"invalid study override {text!r}: {part} is not a mapping")
            node = child
        node[path[-1]] = value
    return out


def resolve_definition(
    raw: Mapping[str, Any], preset: str | None = None, overrides: Iterable[str] = ()
) -> tuple[StudyDefinition, str | None]:
    """The definition with its preset (``preset`` or the file's default) and ``study.*``
    overrides applied, validated: (definition, preset name)."""
    raw = dict(raw)
    presets = raw.pop("presets", None) or {}
    default = raw.pop("preset", None)
    if not isinstance(presets, Mapping):
        raise StudyError("study presets: expected a mapping of preset name -> keys")
    chosen = preset if preset is not None else default
    if chosen is not None:
        if chosen not in presets:
            known = ", ".join(presets) or "none"
            raise StudyError(f"unknown study preset {chosen!r}; this definition has: {known}")
        raw = _merge(raw, presets[chosen] or {})
    raw = apply_study_overrides(raw, overrides)
    try:
        definition = build(StudyDefinition, raw, "study")
    except ParamsError as e:
        raise StudyError(str(e)) from None
    return definition, chosen


# ------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Cell:
    """n_labels x labeller (x beta): the unit of the tables."""

    n_labels: int
    labeller: str
    beta: float | None = None

    @property
    def id(self) -> str:
        base = f"n{self.n_labels}-{self.labeller}"
        return base if self.beta is None else f"{base}-b{self.beta:g}"


@dataclass(frozen=True)
class ModelSpec:
    """One model of the study."""

    arm: str
    cell: Cell
    supervision_seed: int
    training_seed: int
    params: Params
    prepared_id: str
    identity: str  # digest of what determines the trained weights
    eval_identity: str  # digest of what determines its scores

    @property
    def pair(self) -> tuple[int, int]:
        return (self.supervision_seed, self.training_seed)

    @property
    def id(self) -> str:
        """Also its directory under ``models/``."""
        return f"{self.arm}/{self.cell.id}/s{self.supervision_seed}-t{self.training_seed}"


@dataclass(frozen=True)
class Unit:
    """Models trained together: one batched run (K models) or a single model."""

    id: str
    models: tuple[str, ...]
    prepared_id: str


def _digest(obj: Any, n: int = 12) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def training_identity(params: Params) -> dict[str, Any]:
    """What determines a model's weights: data, supervision, model, its family's section and
    every train key except the execution ones (``train.steps`` included)."""
    own = params.method_params()
    return {
        "data": params.section("data"),
        "supervision": params.section("supervision"),
        "model": params.section("model"),
        **({params.model.name: to_plain(own)} if own is not None else {}),
        "train": {k: v for k, v in params.section("train").items() if k not in EXECUTION_KEYS},
    }


def eval_identity(params: Params) -> dict[str, Any]:
    return {k: v for k, v in params.section("eval").items() if k not in EVAL_EXECUTION_KEYS}


def prepared_id(params: Params) -> str:
    sup = params.supervision
    key = _digest({"data": params.section("data"), "supervision": params.section("supervision")}, 8)
    return f"n{sup.n_labels}-{sup.labeller}-s{sup.seed}-{key}"


def _section_fields(section: str) -> list[str]:
    cls = {"train": TrainParams, "model": ModelParams, **METHOD_SECTIONS}[section]
    return [f.name for f in dataclasses.fields(cls)]


def arm_key(arm: str, key: str, definition: StudyDefinition) -> str:
    """An arm's key as ``section.field`` (bare keys are train keys), or the one-line refusal."""
    section, sep, name = str(key).partition(".")
    if not sep:
        section, name = "train", section
    where = f"study arm {arm!r}"
    if section in ("data", "supervision", "eval", "search", "tracking"):
        raise StudyError(
            f"{where}: {key!r} is not an arm key: arms set train, model or family keys; the "
            "labelled pool is the study's grid (n_labels, labeller, supervision_seeds) and "
            "data / eval / tracking keys go in the study's overrides"
        )
    if section not in ARM_SECTIONS:
        close = difflib.get_close_matches(section, [*ARM_SECTIONS, *_section_fields("train")], 1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise StudyError(
            f"{where}: unknown key {key!r}{hint}; an arm sets train keys (bare or train.<key>), "
            f"model.<key> or <family>.<key> ({', '.join(METHOD_SECTIONS)})"
        )
    fields = _section_fields(section)
    if name not in fields:
        close = difflib.get_close_matches(name, fields, 1)
        hint = ""
        if close:
            hint = f" (did you mean {close[0] if not sep else f'{section}.{close[0]}'}?)"
        raise StudyError(f"{where}: unknown key {key!r}{hint}; {section} keys: {', '.join(fields)}")
    if section == "train" and name == "seed":
        raise StudyError(f"{where}: train.seed is the study's training_seeds axis, not an arm key")
    if section == "train" and name == "beta" and definition.beta is not None:
        raise StudyError(
            f"{where}: train.beta is the study's beta axis (beta: {list(definition.beta)}); "
            "set it in arms only when the study has no beta grid"
        )
    if section == "train" and name in EXECUTION_KEYS:
        raise StudyError(
            f"{where}: train.{name} says how a run executes, not what it learns: set it in the "
            "study's overrides, for every arm"
        )
    return f"{section}.{name}"


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    section, name = dotted.split(".", 1)
    raw.setdefault(section, {})[name] = value


@dataclass
class Study:
    """A resolved definition, the base parameters and the plan."""

    definition: StudyDefinition
    preset: str | None
    base: dict[str, Any]  # params.yaml + -S + the definition's overrides, as a plain mapping
    batch: Literal["one", "group"]
    models: list[ModelSpec] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)  # normalised (section.key)

    # -- identity -------------------------------------------------------------------------
    def document(self) -> dict[str, Any]:
        """Everything the plan is a function of (``study.json``; a worker or a pod rebuilds the
        same plan from it)."""
        return {
            "format": "semidisent.study/1",
            "definition": to_plain(self.definition),
            # JSON files here sort their keys: the arms' order (the plan's, the tables') is kept
            # apart.
            "arm_order": list(self.definition.arms),
            "preset": self.preset,
            "base": self.base,
            "batch": self.batch,
        }

    @property
    def digest(self) -> str:
        return _digest(self.document(), 16)

    @property
    def label(self) -> str:
        return f"{self.definition.name}-{self.preset}" if self.preset else self.definition.name

    @property
    def base_params(self) -> Params:
        return params_from_dict(self.base)

    # -- lookups --------------------------------------------------------------------------
    @property
    def cells(self) -> list[Cell]:
        d = self.definition
        betas: Sequence[float | None] = d.beta if d.beta is not None else (None,)
        return [Cell(n, lab, b) for n in d.n_labels for lab in d.labeller for b in betas]

    @property
    def pairs(self) -> list[tuple[int, int]]:
        d = self.definition
        return [(s, t) for s in d.supervision_seeds for t in d.training_seeds]

    def model(self, model_id: str) -> ModelSpec:
        return self._by_id[model_id]

    @property
    def _by_id(self) -> dict[str, ModelSpec]:
        cached = getattr(self, "_index", None)
        if cached is None:
            cached = {m.id: m for m in self.models}
            object.__setattr__(self, "_index", cached)
        return cached

    def unit(self, unit_id: str) -> Unit:
        for u in self.units:
            if u.id == unit_id:
                return u
        raise StudyError(f"study {self.label} has no unit {unit_id!r} (its plan changed?)")

    def comparisons(self) -> list[tuple[str, str]]:
        """(arm, reference): every arm against the baseline, then the extra ones."""
        d = self.definition
        out = [(a, d.baseline) for a in d.arms if a != d.baseline]
        out += [tuple(c) for c in d.comparisons if tuple(c) not in out]  # type: ignore[misc]
        return out


def build_study(
    definition: StudyDefinition,
    preset: str | None,
    base: Mapping[str, Any],
    batch: Literal["one", "group"] | None = None,
) -> Study:
    """Check the definition against the base parameters and make the plan."""
    d = definition
    if d.baseline not in d.arms:
        known = ", ".join(d.arms) or "none"
        raise StudyError(f"study baseline {d.baseline!r} is not one of its arms ({known})")
    if len(d.arms) < 2:
        raise StudyError(
            f"study {d.name}: arms {list(d.arms)}: a comparison needs at least one arm besides "
            f"the baseline {d.baseline!r}"
        )
    for name in d.arms:
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise StudyError(f"study arm {name!r}: arm names are letters, digits, - and _")
    arms: dict[str, dict[str, Any]] = {}
    for name, overrides in d.arms.items():
        if not isinstance(overrides, Mapping):
            raise StudyError(f"study arm {name!r}: expected a mapping of keys to values")
        arms[name] = {arm_key(name, k, d): v for k, v in (overrides or {}).items()}
    for pair in d.comparisons:
        if len(pair) != 2:
            raise StudyError(f"study comparison {list(pair)}: expected [arm, reference]")
        a, ref = pair
        for x in (a, ref):
            if x not in d.arms:
                raise StudyError(f"study comparison [{a}, {ref}]: {x!r} is not an arm")
        if a == ref:
            raise StudyError(f"study comparison [{a}, {ref}]: an arm compared with itself")
    pairs = len(d.training_seeds) * len(d.supervision_seeds)
    if d.paired and pairs < 2:
        cell = Cell(d.n_labels[0], d.labeller[0], d.beta[0] if d.beta else None)
        raise StudyError(
            f"study cell {cell.id} has {pairs} seed pair (training_seeds "
            f"{list(d.training_seeds)} x supervision_seeds {list(d.supervision_seeds)}); a paired "
            "test needs at least 2: add seeds, or set paired: false"
        )
    if batch is None:
        batch = "one" if d.batch == "auto" else d.batch
    study = Study(d, preset, dict(base), batch, arms=arms)
    study.models = _models(study)
    _check_distinct_arms(study)
    study.units = _units(study)
    return study


def _model_params(study: Study, arm: str, cell: Cell, sup_seed: int, seed: int) -> Params:
    raw = copy.deepcopy(study.base)
    d = study.definition
    sup = raw.setdefault("supervision", {})
    sup.update(n_labels=cell.n_labels, label_fraction=None, labeller=cell.labeller, seed=sup_seed)
    raw.setdefault("train", {})["seed"] = seed
    if cell.beta is not None:
        raw["train"]["beta"] = cell.beta
    # The study's evaluation: its metrics, the few-label scores (model selection) and no random
    # encoder per model (the study scores one per labelled pool instead).
    ev = raw.setdefault("eval", {})
    suite = [m for m in d.metrics if m in METRIC_NAMES]
    ev.update(few_label=True, random_baseline=[])
    if suite:  # a study scored on the classification evaluation alone keeps eval.metrics
        ev["metrics"] = suite
    for key, value in study.arms[arm].items():
        _set(raw, key, value)
    try:
        params = params_from_dict(raw)
    except ParamsError as e:
        raise StudyError(f"study arm {arm!r}, cell {cell.id}: {e}") from None
    name = params.model.name
    for key in study.arms[arm]:
        section = key.split(".", 1)[0]
        if section in METHOD_SECTIONS and section != name:
            raise StudyError(
                f"study arm {arm!r}: {key} applies to model.name = {section}, but the arm trains "
                f"{name}; add model.name: {section} to the arm"
            )
    return params


def _models(study: Study) -> list[ModelSpec]:
    out = []
    for cell in study.cells:
        for sup_seed, seed in study.pairs:
            for arm in study.definition.arms:  # arms innermost: a stopped study has whole pairs
                p = _model_params(study, arm, cell, sup_seed, seed)
                out.append(
                    ModelSpec(
                        arm=arm,
                        cell=cell,
                        supervision_seed=sup_seed,
                        training_seed=seed,
                        params=p,
                        prepared_id=prepared_id(p),
                        identity=_digest(training_identity(p), 16),
                        eval_identity=_digest(eval_identity(p), 16),
                    )
                )
    return out


def _check_distinct_arms(study: Study) -> None:
    """An arm that trains exactly what another trains compares nothing (refused). The arms'
    overrides are the same in every cell, so the first cell and pair decide."""
    first = study.cells[0], study.pairs[0]
    base = study.definition.baseline
    seen: dict[str, str] = {}
    for m in study.models:
        if (m.cell, m.pair) != first:
            continue
        other = seen.get(m.identity)
        if other is not None:
            arm, same = (other, m.arm) if m.arm == base else (m.arm, other)
            what = f"the baseline {base!r}" if same == base else f"arm {same!r}"
            shown = ", ".join(f"{k}={v}" for k, v in study.arms[arm].items()) or "none"
            raise StudyError(
                f"study arm {arm!r} is identical to {what}: after its overrides ({shown}) it "
                "trains the same parameters, so the comparison would compare a model with itself"
            )
        seen[m.identity] = m.arm


def _units(study: Study) -> list[Unit]:
    """One model per unit, or (batch: group) the models that share a labelled pool, a family and
    every structural key, trained as one batched model."""
    groups: dict[tuple, list[ModelSpec]] = {}
    if study.batch == "one":
        for m in study.models:
            groups[(m.id,)] = [m]
    else:
        from ..methods import get_method
        from ..methods.base import RunSpec
        from ..training.trainer import structural_key

        for m in study.models:
            p = m.params
            method = get_method(p.model.name)
            skey = structural_key(RunSpec(p.train, p.method_params()), method)
            key = (m.prepared_id, p.model, repr(skey))
            groups.setdefault(key, []).append(m)
    units = []
    for members in groups.values():
        uid = "u" + _digest([m.identity for m in members], 10)
        units.append(Unit(uid, tuple(m.id for m in members), members[0].prepared_id))
    return units


# ------------------------------------------------------------------------------ entry points


def resolve_batch(definition: StudyDefinition, base: Params) -> Literal["one", "group"]:
    """``batch: auto``: group on CUDA (one small model leaves a GPU idle), one on a CPU."""
    if definition.batch != "auto":
        return definition.batch
    if base.train.device == "cpu":
        return "one"
    from ..training.runtime import resolve_device

    return "group" if resolve_device(base.train.device).type == "cuda" else "one"


def split_overrides(overrides: Iterable[str]) -> tuple[list[str], list[str]]:
    """(params overrides, study.* overrides) of the command line's ``-S`` list."""
    params, study = [], []
    for o in overrides:
        (study if o.strip().startswith("study.") else params).append(o)
    return params, study


def load_study(
    definition_path: str | Path = DEFAULT_DEFINITION,
    preset: str | None = None,
    params_path: str | Path | None = "params.yaml",
    overrides: Iterable[str] = (),
    *,
    batch: Literal["one", "group"] | None = None,
) -> Study:
    """params.yaml, the definition's ``overrides`` (after its preset), then the ``-S``
    overrides (``study.*`` ones change the definition) -> the checked study and its plan.
    Raises :class:`StudyError` (or ParamsError) with one line naming what is wrong."""
    params_over, study_over = split_overrides(overrides)
    raw_params = read_yaml(params_path) if params_path is not None else {}
    definition, chosen = resolve_definition(read_definition(definition_path), preset, study_over)
    # params.yaml, then the definition's overrides, then the command line's -S (the user's last
    # word). The overrides go through -S's path (JSON is YAML: values keep their types), so an
    # unknown or bad key gets the schema's one-line error.
    extra = [f"{k}={json.dumps(v)}" for k, v in definition.overrides.items()]
    base = params_from_dict(apply_overrides(apply_overrides(raw_params, extra), params_over))
    if batch is None:
        batch = resolve_batch(definition, base)
    return build_study(definition, chosen, base.to_dict(), batch)


def study_from_document(doc: Mapping[str, Any]) -> Study:
    """The study of a ``study.json`` (what workers and pods run)."""
    if doc.get("format") != "semidisent.study/1":
        raise StudyError("not a semidisent study document (format semidisent.study/1)")
    raw = dict(doc["definition"])
    arms = raw.get("arms") or {}
    order = [a for a in doc.get("arm_order") or [] if a in arms]
    raw["arms"] = {a: arms[a] for a in [*order, *(a for a in arms if a not in order)]}
    try:
        definition = build(StudyDefinition, raw, "study")
    except ParamsError as e:
        raise StudyError(str(e)) from None
    return build_study(definition, doc.get("preset"), doc["base"], doc["batch"])


def describe(study: Study) -> str:
    """The plan in a few lines (``semidisent study plan``)."""
    d = study.definition
    lines = [
        f"study {d.name}, preset {study.preset or '(none)'}: {len(study.models)} models in "
        f"{len(study.units)} training units ({study.batch}: "
        f"{'one batched run per group' if study.batch == 'group' else 'one model per run'})",
        f"baseline: {d.baseline}; comparisons: "
        + ", ".join(f"{a} - {b}" for a, b in study.comparisons()),
    ]
    for name, arm in study.arms.items():
        shown = ", ".join(f"{k}={v}" for k, v in arm.items()) or "(base parameters)"
        lines.append(f"  arm {name}: {shown}")
    lines.append(
        "cells: " + ", ".join(c.id for c in study.cells) + f"; pairs per cell: {len(study.pairs)}"
        f" (supervision seeds {list(d.supervision_seeds)} x training seeds "
        f"{list(d.training_seeds)})"
    )
    p = study.models[0].params
    lines.append(
        f"training: {p.train.steps} steps, batch {p.train.batch_size}; evaluation: "
        f"{', '.join(d.metrics)} at sample_scale {p.eval.sample_scale:g} + few-label "
        f"({d.selection} selects); jobs {d.jobs}"
    )
    return "\n".join(lines)


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False)
