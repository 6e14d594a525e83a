"""Exceptions that carry a message meant for the user.

The CLI prints a :class:`SemidisentError` as one line and exits with status 2, without a
traceback: these are mistakes in input (parameters, files), not bugs.
"""

from __future__ import annotations


class SemidisentError(Exception):
    """An error caused by user input; its message says what is wrong and what is allowed."""


class ParamsError(SemidisentError):
    """A parameter is unknown, of the wrong type or out of range."""


class DataError(SemidisentError):
    """A dataset file is missing, truncated or not in the expected format."""


class ArtifactError(SemidisentError):
    """A prepared artifact is corrupt, incomplete or does not match what was asked for."""
