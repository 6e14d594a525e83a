"""`semidisent study`: a study definition (studies/*.yaml) + params.yaml -> every model trained,
evaluated and compared (docs/study.md); thin wrappers over :mod:`semidisent.study` for the CLI,
the DVC stage and the Kubeflow study pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..study.definition import DEFAULT_DEFINITION, Study, load_study


def default_out(study: Study) -> Path:
    return Path("results") / study.label


def run_study_stage(
    definition: str | Path = DEFAULT_DEFINITION,
    preset: str | None = None,
    params_path: str | Path = "params.yaml",
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    *,
    jobs: int | None = None,
    doc: str | Path | None = None,
    progress: bool = True,
) -> Any:
    """Load, check and run (or resume) the study; returns the runner's :class:`StudyRun`."""
    from ..study.runner import run_study

    study = load_study(definition, preset, params_path, overrides)
    return run_study(study, out or default_out(study), jobs=jobs, progress=progress, doc=doc)


def report_stage(out: str | Path, doc: str | Path | None = None) -> dict[str, Any]:
    """The tables, pictures and (``doc``) the generated section again, from a study folder's
    files alone (no training): the study it holds is the one in its study.json."""
    from ..study import report
    from ..study.runner import load_study_file

    out = Path(out)
    study = load_study_file(out)
    result = report.aggregate(study, out)
    if doc is not None:
        report.update_doc(doc, study, out, result)
    return result
