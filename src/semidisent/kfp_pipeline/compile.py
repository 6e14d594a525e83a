"""``semidisent pipeline compile``: params.yaml (+ overrides) -> the pipeline's IR YAML."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config.schema import Params
from .settings import NAME_PARAMETERS_FROM, OPTIONAL_FROM, ClusterSettings

# Fields of the Kubernetes platform spec that older backends' drivers refuse as unknown (they
# unmarshal it strictly, kubeflow/pipelines#12495): `optional` on secret / ConfigMap env
# sources (backend 2.15; kfp-kubernetes writes it even when false) and the parameterised names
# (backend 2.5; the deprecated constant names stay beside them).
OPTIONAL_FIELDS = ("optional",)
NAME_PARAMETER_FIELDS = (
    "secretNameParameter",
    "configMapNameParameter",
    "pvcNameParameter",
)


def build_pipeline(params: Params, settings: ClusterSettings) -> Callable[..., Any]:
    """The ``@dsl.pipeline`` function of ``pipelines/``, its defaults taken from ``params``
    (already validated: a wrong value never reaches the compiler, let alone a cluster)."""
    from .project import pipeline_module

    return pipeline_module().build_pipeline(params, settings)


def with_source(settings: ClusterSettings) -> ClusterSettings:
    """``settings`` recording the code they compile (version + commit of the checkout), which
    the pipeline's first step compares with the image's."""
    if settings.source:
        return settings
    from .image import checkout_source
    from .project import project_root

    source = checkout_source(project_root())
    return dataclasses.replace(settings, source=json.dumps(source.encode(), sort_keys=True))


def compile_pipeline(params: Params, settings: ClusterSettings, out: str | Path) -> Path:
    """Write the IR YAML (two documents: the pipeline spec and its Kubernetes platform spec)."""
    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(params, settings), str(out))
    drop = (OPTIONAL_FIELDS if settings.backend < OPTIONAL_FROM else ()) + (
        NAME_PARAMETER_FIELDS if settings.backend < NAME_PARAMETERS_FROM else ()
    )
    if drop:
        for_old_backend(out, drop)
    return out


def for_old_backend(path: Path, drop: tuple[str, ...]) -> None:
    """Drop the fields an older backend does not know from the platform spec (the pipeline
    spec itself is unchanged)."""
    import yaml

    docs = list(yaml.safe_load_all(path.read_text()))

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in drop}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    docs = [docs[0], *[strip(d) for d in docs[1:]]]
    path.write_text(yaml.safe_dump_all(docs, sort_keys=True))
