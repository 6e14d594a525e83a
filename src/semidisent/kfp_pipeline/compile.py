"""``semidisent pipeline compile``: params.yaml (+ overrides) -> the pipeline's IR YAML."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config.schema import Params
from .settings import ClusterSettings


def build_pipeline(params: Params, settings: ClusterSettings) -> Callable[..., Any]:
    """The ``@dsl.pipeline`` function of ``pipelines/``, its defaults taken from ``params``
    (already validated: a wrong value never reaches the compiler, let alone a cluster)."""
    from .project import pipeline_module

    return pipeline_module().build_pipeline(params, settings)


def compile_pipeline(params: Params, settings: ClusterSettings, out: str | Path) -> Path:
    """Write the IR YAML (two documents: the pipeline spec and its Kubernetes platform spec)."""
    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(params, settings), str(out))
    return out
