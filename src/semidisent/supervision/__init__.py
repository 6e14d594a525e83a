"""Supervision masks: which examples are labelled, with which (degraded) labels."""

from .mask import SupervisionMask, build_mask

__all__ = ["SupervisionMask", "build_mask"]
