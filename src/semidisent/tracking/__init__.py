"""Tracking side channel (MLflow when enabled, a no-op otherwise)."""

from .base import NULL_TRACKER, Tracker

__all__ = ["NULL_TRACKER", "Tracker"]
