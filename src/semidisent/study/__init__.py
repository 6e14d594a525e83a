"""Studies: named arms x labelled pools x seeds, trained, evaluated and compared with paired
statistics (docs/study.md). ``definition`` is torch-free; ``runner`` trains and evaluates;
``statistics``, ``report`` and ``plots`` turn the models' scores into tables and pictures."""

from .definition import (
    DEFAULT_DEFINITION,
    Study,
    StudyDefinition,
    StudyError,
    load_study,
    study_from_document,
)

__all__ = [
    "DEFAULT_DEFINITION",
    "Study",
    "StudyDefinition",
    "StudyError",
    "load_study",
    "study_from_document",
]
