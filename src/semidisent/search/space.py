"""The search space of ``search.space`` in params.yaml, parsed and checked before any trial.

Each key is a ``train.*`` parameter; each value is either a range ``{low, high[, log][, step]}``
or ``{choices: [...]}``. Every bound and choice must itself be a valid value of that training
parameter (so ``beta: {low: 0, ...}`` fails with train.beta's own rule), a range must not be
empty, and the grid sampler needs finite values (choices, or a step). Keys that change how a
run executes rather than what it learns (``NOT_SEARCHABLE``) are refused; the trial length is
``search.steps``.

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


def _train_field(name: str) -> tuple[Any, Any]:
    from ..config.schema import TrainParams

    fields = TrainParams.__dataclass_fields__
    return fields[name], typing.get_type_hints(TrainParams)[name]


def _checked(name: str, value: Any, key: str) -> Any:
    """``value`` as a valid train.<name>, or a ParamsError naming ``key``."""
    f, tp = _train_field(name)
    v = coerce(value, tp, key)
    check = f.metadata.get("check")
    msg = check(v) if check else None
    if msg:
        raise bad_value(key, value, f"{msg} (as train.{name})")
    return v


def _base_type(tp: Any) -> Any:
    """int for ``int | None`` and so on."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def parse_space(space: dict[str, dict[str, Any]], sampler: str = "tpe") -> list[Dimension]:
    from ..config.schema import TrainParams

    dims = []
    train_keys = set(TrainParams.__dataclass_fields__)
    if not space:
        raise bad_value("search.space", space, "at least one train parameter to search")
    for name, spec in space.items():
        key = f"search.space.{name}"
        if name not in train_keys:
            raise bad_value(key, spec, "a key of train: " + ", ".join(sorted(train_keys)))
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
        _, tp = _train_field(name)
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
            raise bad_value(key, spec, f"choices (train.{name} is not numeric)")
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
