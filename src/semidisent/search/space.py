"""The search space of ``search.space`` in params.yaml, parsed and checked before any trial.

Each key is a bare ``train.*`` parameter (``beta``), the model family ``model.name``, or a key of
a family's own params section (``s2_factor_vae.gamma``); each value is either a range
``{low, high[, log][, step]}`` or ``{choices: [...]}``. Every bound and choice must itself be a
valid value of that parameter (so ``beta: {low: 0, ...}`` fails with train.beta's own rule and
``s2_factor_vae.gamma: {low: -1, ...}`` with s2_factor_vae.gamma's), a range must not be empty,
and the grid sampler needs finite values (choices, or a step). Keys that change how a run
executes rather than what it learns (``NOT_SEARCHABLE``) are refused; the trial length is
``search.steps``. A family key must belong to a family the trials train (``model.name``, or one
of its searched choices): otherwise it would be drawn for every trial and read by none.

The nested form that ``-S search.space.s2_factor_vae.gamma=...`` or ``dvc exp run -S`` writes
(``s2_factor_vae: {gamma: {...}}``) is the same key (:func:`flatten_space`).

The objectives a study may optimise are checked here too (``check_objectives``): the few-label
scores computed on the labelled pool (``eval.few_label_protocol``), or final training statistics,
never a full-ground-truth metric (those are logged beside each trial, ``search.gt_metrics``).

So are two things that would make a search silently meaningless: a searched replacement rate
without p = 0, the baseline every study runs (``check_baseline_space``), and a ramp / switch
gamma_sup schedule whose threshold no trial of ``search.steps`` steps reaches
(``check_gamma_schedule``, before any trial: it involves train and search).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from ..config.validation import bad_value, coerce


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def contains(self, value: float) -> bool:
        """Whether ``value`` is a value of this dimension (a choice, or a point of the range
        and of its step)."""
        if self.kind == "categorical":
            return any(not isinstance(c, (str, bool)) and c == value for c in self.choices)
        assert self.low is not None and self.high is not None
        if not self.low <= value <= self.high:
            return False
        step = self.step if self.step is not None else (1 if self.kind == "int" else None)
        if step is None:
            return True
        k = (value - self.low) / step
        return abs(k - round(k)) < 1e-9

    def max_value(self) -> Any:
        """The largest value a trial can get (the last point of a stepped range)."""
        if self.kind == "categorical":
            return max(self.choices)
        assert self.low is not None and self.high is not None
        step = self.step if self.step is not None else (1 if self.kind == "int" else None)
        if step is None:
            return self.high
        top = self.low + math.floor((self.high - self.low) / step + 1e-9) * step
        return round(top) if self.kind == "int" else top

    def grid_values(self) -> list[Any]:
        if self.kind == "categorical":
            return list(self.choices)
        step = self.step if self.step is not None else (1 if self.kind == "int" else None)
        assert step is not None and self.low is not None and self.high is not None
        n = math.floor((self.high - self.low) / step + 1e-9) + 1
        values = [self.low + i * step for i in range(n)]
        return [round(v) for v in values] if self.kind == "int" else values


RANGE_KEYS = {"low", "high", "log", "step"}
# Execution settings, not hyper-parameters (the trial length is search.steps).
NOT_SEARCHABLE = ("steps", "device", "fast", "amp", "checkpoint_every", "log_every")

# Objectives: few-label model-selection scores (the labelled pool, eval.few_label_protocol) and
# the last training window's mean statistics (e.g. for a disentanglement / reconstruction front).
FEW_LABEL_OBJECTIVES = ("val_mig", "val_dci", "val_sap")
TRAINING_OBJECTIVES = ("recon", "kl", "loss")
OBJECTIVE_NAMES = FEW_LABEL_OBJECTIVES + TRAINING_OBJECTIVES


def check_objectives(objectives: Sequence[str], pruner: str, prefix: str = "search") -> None:
    """Refuse unknown or full-ground-truth objectives, duplicates, and pruning several of them."""
    from ..metrics.names import METRIC_NAMES

    key = f"{prefix}.objectives"
    for name in objectives:
        if name in METRIC_NAMES:
            raise bad_value(
                key,
                list(objectives),
                f"few-label or training objectives ({', '.join(OBJECTIVE_NAMES)}); {name} uses "
                "the full ground truth: it is logged beside each trial (search.gt_metrics), "
                "never selected on",
            )
        if name not in OBJECTIVE_NAMES:
            raise bad_value(key, list(objectives), "names among " + ", ".join(OBJECTIVE_NAMES))
    if len(set(objectives)) != len(objectives):
        raise bad_value(key, list(objectives), "distinct names")
    if len(objectives) > 1 and pruner != "none":
        raise bad_value(
            f"{prefix}.pruner",
            pruner,
            "none with several objectives (Optuna prunes single-objective studies only)",
        )


# The searched model family (its choices are model.name values); the only searchable model key:
# the others shape the network every family shares.
MODEL_KEY = "model.name"
# The sections of a nested space entry (``model: {name: {...}}``) that name a dotted key.
_NESTED_SECTIONS = ("train", "model")


def _section_class(section: str) -> type:
    from ..config.schema import METHOD_SECTIONS, ModelParams, TrainParams

    if section == "train":
        return TrainParams
    if section == "model":
        return ModelParams
    return METHOD_SECTIONS[section]


def split_key(name: str) -> tuple[str, str]:
    """A space key as (params section, field): ``beta`` -> (train, beta), ``model.name`` ->
    (model, name), ``s2_factor_vae.gamma`` -> (s2_factor_vae, gamma)."""
    section, dot, field_name = name.partition(".")
    return ("train", name) if not dot else (section, field_name)


def qualified(name: str) -> str:
    """The params.yaml key of a space key (``beta`` -> ``train.beta``)."""
    section, field_name = split_key(name)
    return f"{section}.{field_name}"


def _field(name: str) -> tuple[Any, Any]:
    section, field_name = split_key(name)
    cls = _section_class(section)
    return cls.__dataclass_fields__[field_name], typing.get_type_hints(cls)[field_name]


def _checked(name: str, value: Any, key: str) -> Any:
    """``value`` as a valid value of the space key ``name`` (its section's own rule), or a
    ParamsError naming ``key``."""
    f, tp = _field(name)
    v = coerce(value, tp, key)
    check = f.metadata.get("check")
    msg = check(v) if check else None
    if msg:
        raise bad_value(key, value, f"{msg} (as {qualified(name)})")
    return v


def flatten_space(space: Any) -> Any:
    """``search.space`` with nested section entries as dotted keys: ``{s2_factor_vae: {gamma:
    {low: 5, high: 50}}}`` (what ``dvc exp run -S search.space.s2_factor_vae.gamma=...`` writes
    into params.yaml) is ``{"s2_factor_vae.gamma": {low: 5, high: 50}}``. A nested entry wins
    over a dotted one of the same key: it is the override written later. Anything that is not
    a mapping is left for :func:`parse_space` to refuse."""
    from ..config.schema import METHOD_SECTIONS

    if not isinstance(space, dict):
        return space
    sections = (*_NESTED_SECTIONS, *METHOD_SECTIONS)
    flat: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for name, spec in space.items():
        is_dim = isinstance(spec, dict) and bool(set(spec) & (RANGE_KEYS | {"choices"}))
        if name in sections and isinstance(spec, dict) and spec and not is_dim:
            nested.update({f"{name}.{k}": v for k, v in spec.items()})
        else:
            flat[name] = spec
    return {**flat, **nested}


def family_of(name: str) -> str | None:
    """The family whose own section holds the space key ``name`` (None: train or model)."""
    section, _ = split_key(name)
    return None if section in ("train", "model") else section


def trial_sections(
    trial_params: dict[str, Any], model_name: str | None
) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """A trial's searched values by params section: ``(its model.name, {"train": {...},
    "<family>": {...}})``. ``model_name`` is the fixed model.name (used when it is not searched;
    None: unknown). Keys of other families than the trial's are left out: they were drawn for
    every trial (one space for all) but apply to their own family's trials only."""
    name = trial_params.get(MODEL_KEY, model_name)
    out: dict[str, dict[str, Any]] = {"train": {}}
    for key, value in trial_params.items():
        section, field_name = split_key(key)
        if section == "model":
            continue
        if section == "train" or section == name:
            out.setdefault(section, {})[field_name] = value
    return name, out


def applied_params(trial_params: dict[str, Any], model_name: str | None) -> dict[str, Any]:
    """A trial's searched keys that apply to it (its own family's keys, not the others')."""
    name = trial_params.get(MODEL_KEY, model_name)
    return {k: v for k, v in trial_params.items() if family_of(k) is None or family_of(k) == name}


def _base_type(tp: Any) -> Any:
    """int for ``int | None`` and so on."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _check_key(name: str, spec: Any, key: str) -> None:
    """Refuse a space key that names no searchable parameter, with what is allowed."""
    from ..config.schema import METHOD_SECTIONS, TrainParams

    section, field_name = split_key(name)
    families = ", ".join(METHOD_SECTIONS)
    if section == "train" and "." not in name:
        train_keys = set(TrainParams.__dataclass_fields__)
        if name not in train_keys:
            raise bad_value(
                key,
                spec,
                "a key of train: " + ", ".join(sorted(train_keys)) + f"; or {MODEL_KEY}, or "
                f"<family>.<key> of a family's own section ({families})",
            )
    elif section == "train":
        raise bad_value(key, spec, f"the bare train key {field_name} (train keys have no prefix)")
    elif section == "model":
        if field_name != "name":
            raise bad_value(
                key,
                spec,
                f"{MODEL_KEY}, the only searchable model key (the others shape the network "
                "every family shares)",
            )
    elif section in METHOD_SECTIONS:
        keys = list(METHOD_SECTIONS[section].__dataclass_fields__)
        if field_name not in keys:
            raise bad_value(key, spec, f"a key of {section}: " + ", ".join(keys))
    else:
        raise bad_value(
            key,
            spec,
            f"a train key (bare: beta), {MODEL_KEY}, or <family>.<key> of a family's own "
            f"section ({families})",
        )


def _check_families(
    dims: Sequence[Dimension], space: dict[str, Any], model_name: str | None
) -> None:
    """Refuse a family key whose family no trial trains: neither the fixed model.name nor one of
    the searched model.name choices (its value would be drawn for every trial, read by none)."""
    searched = {d.name: d for d in dims}
    if MODEL_KEY in searched:
        trained = set(searched[MODEL_KEY].choices)
        where = f"search.space.{MODEL_KEY} choices {list(searched[MODEL_KEY].choices)}"
    elif model_name is not None:
        trained = {model_name}
        where = f"model.name = {model_name}"
    else:
        return
    for d in dims:
        family = family_of(d.name)
        if family is not None and family not in trained:
            raise bad_value(
                f"search.space.{d.name}",
                space[d.name],
                f"a key of a family the trials train ({where}): set model.name = {family}, or "
                f"search {MODEL_KEY} with {family} among its choices",
            )


def parse_space(
    space: dict[str, dict[str, Any]], sampler: str = "tpe", model_name: str | None = None
) -> list[Dimension]:
    """The checked dimensions of ``search.space``. ``model_name`` (the fixed model.name): also
    refuse keys of families no trial trains (the params check at load passes it)."""
    dims = []
    space = flatten_space(space)
    if not space:
        raise bad_value("search.space", space, "at least one train parameter to search")
    for name, spec in space.items():
        key = f"search.space.{name}"
        _check_key(name, spec, key)
        if name in NOT_SEARCHABLE:
            raise bad_value(
                key,
                spec,
                "a train hyper-parameter, not an execution setting ("
                + ", ".join(NOT_SEARCHABLE)
                + "; the trial length is search.steps)",
            )
        if not isinstance(spec, dict):
            raise bad_value(
                key, spec, "{low: .., high: ..[, log: true][, step: ..]} or {choices: [...]}"
            )
        _, tp = _field(name)
        base = _base_type(tp)
        if "choices" in spec:
            if set(spec) != {"choices"}:
                raise bad_value(key, spec, "either choices or a range, not both")
            choices = spec["choices"]
            if not isinstance(choices, (list, tuple)) or not choices:
                raise bad_value(f"{key}.choices", choices, "a non-empty list")
            values = tuple(_checked(name, c, f"{key}.choices") for c in choices)
            if len(set(values)) != len(values):
                raise bad_value(f"{key}.choices", list(choices), "distinct values")
            dims.append(Dimension(name, "categorical", choices=values))
            continue
        unknown = set(spec) - RANGE_KEYS
        if unknown or not {"low", "high"} <= set(spec):
            raise bad_value(
                key, spec, "{low: .., high: ..[, log: true][, step: ..]} or {choices: [...]}"
            )
        if base not in (int, float):
            raise bad_value(key, spec, f"choices ({qualified(name)} is not numeric)")
        low = _checked(name, spec["low"], f"{key}.low")
        high = _checked(name, spec["high"], f"{key}.high")
        if not low < high:
            raise bad_value(
                f"{key}.high", spec["high"], f"a value above low = {low} (the range is empty)"
            )
        log = coerce(spec.get("log", False), bool, f"{key}.log")
        if log and low <= 0:
            raise bad_value(f"{key}.low", low, "a number > 0 for a log-uniform range")
        step = spec.get("step")
        if step is not None:
            step = coerce(step, float, f"{key}.step")
            if step <= 0 or step > high - low:
                raise bad_value(f"{key}.step", step, f"a number in (0, {high - low}]")
            if log:
                raise bad_value(f"{key}.step", step, "no step with log: true")
        if sampler == "grid" and step is None and base is not int:  # ints: step 1
            raise bad_value(key, spec, "choices or a step: the grid sampler needs finite values")
        dims.append(
            Dimension(
                name, "int" if base is int else "float", low=low, high=high, log=log, step=step
            )
        )
    _check_families(dims, space, model_name)
    return dims


# The searched key whose value 0 is the semi-supervised baseline (no label replacement).
BASELINE_KEY = "replacement_rate"


def check_baseline_space(
    space: dict[str, dict[str, Any]], sampler: str, baseline_trials: int, prefix: str = "search"
) -> None:
    """With baseline trials, a searched replacement rate must include p = 0."""
    if not baseline_trials or BASELINE_KEY not in space:
        return  # not searched: the fixed train.replacement_rate is every trial's (documented)
    dims = {d.name: d for d in parse_space(space, sampler)}
    if not dims[BASELINE_KEY].contains(0.0):
        raise bad_value(
            f"{prefix}.space.{BASELINE_KEY}",
            space[BASELINE_KEY],
            f"a range from low: 0 or choices with 0 while {prefix}.baseline_trials = "
            f"{baseline_trials} (p = 0 is the semi-supervised baseline every study runs; "
            f"{prefix}.baseline_trials=0 searches without it)",
        )


def check_gamma_schedule(params: Any) -> None:
    """Refuse a ramp / switch gamma_sup schedule whose threshold (the fixed train value, or the
    largest searched one) no trial reaches: trials train ``search.steps`` steps, not
    ``train.steps``. Called before any trial (a 20k-step search of a 300k-step schedule would
    otherwise never switch gamma_sup on, silently)."""
    from ..config.schema import GAMMA_REACHED, gamma_threshold_limit
    from ..errors import ParamsError

    sp, train = params.search, params.train
    dims = {d.name: d for d in parse_space(sp.space, sp.sampler)}
    schedules = dims["gamma_schedule"].choices if "gamma_schedule" in dims else None
    limits = [
        (s, limit)
        for s in (schedules or (train.gamma_schedule,))
        if (limit := gamma_threshold_limit(s, sp.steps)) is not None
    ]
    if not limits:
        return
    schedule, limit = min(limits, key=lambda x: x[1])  # switch is the stricter one
    if "gamma_threshold" in dims:
        dim = dims["gamma_threshold"]
        part = "choices" if dim.kind == "categorical" else "high"
        key = f"search.space.gamma_threshold.{part} (train.gamma_threshold)"
        threshold = dim.max_value()
        shown = list(dim.choices) if dim.kind == "categorical" else threshold
    else:
        key, threshold = "train.gamma_threshold", train.gamma_threshold
        shown = threshold
    if threshold <= limit:
        return
    where = " (a choice of search.space.gamma_schedule)" if schedules else ""
    raise ParamsError(
        f"invalid parameter {key} = {shown!r}: expected a step < {limit + 1} with "
        f"train.gamma_schedule = {schedule}{where} and search.steps = {sp.steps}: each trial "
        f"trains search.steps steps (not train.steps = {train.steps}) and "
        f"{GAMMA_REACHED[schedule]}, which no trial would reach; lower train.gamma_threshold "
        "or raise search.steps"
    )
