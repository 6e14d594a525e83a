"""Typed, validated parameters (params.yaml is the single source)."""

from .load import apply_overrides, load_params, params_from_dict, parse_override
from .schema import (
    DataParams,
    EvalParams,
    ModelParams,
    Params,
    SearchParams,
    SupervisionParams,
    TrackingParams,
    TrainParams,
    validation_count,
)

__all__ = [
    "DataParams",
    "EvalParams",
    "ModelParams",
    "Params",
    "SearchParams",
    "SupervisionParams",
    "TrackingParams",
    "TrainParams",
    "apply_overrides",
    "load_params",
    "params_from_dict",
    "parse_override",
    "validation_count",
]
