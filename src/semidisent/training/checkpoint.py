"""Training checkpoints: atomic, resumable exactly, refused when the run's parameters differ.

A checkpoint holds every mutable tensor of the run (parameters, Adam moments and counts, the step
counter, the loss accumulator, the non-finite record, the active switches), the loss curves so
far and the run's *identity*: the parameters that determine the result (train keys except the
execution-only ones in ``EXECUTION_KEYS``, model params, the prepared artifact's content and
mask hashes, the resolved autocast dtype). Data indices, noise and the variants' colours come from a
counter-based generator driven by the step counter, so restoring the tensors restores every
random stream too.

Files are written to a temporary name, fsynced and renamed (``checkpoints/ckpt-<step>.pt``), so
a kill at any moment leaves either the previous or the new checkpoint, never a torn one; the
newest readable file is used on resume, and the last ``KEEP`` are kept.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..config.schema import ModelParams, TrainParams
from ..config.validation import to_plain
from ..errors import SemidisentError

log = logging.getLogger(__name__)
FORMAT = "semidisent.checkpoint/1"
KEEP = 2
# Keys that change how a run executes, not what it computes. steps is among them: a run may be
# extended by resuming it with more steps (it then equals an uninterrupted longer run).
EXECUTION_KEYS = ("device", "fast", "checkpoint_every", "log_every", "steps")


class CheckpointError(SemidisentError):
    """A checkpoint cannot be used (other parameters, unreadable, past the requested steps)."""


def run_identity(
    configs: Sequence[Any],
    model: ModelParams,
    content_sha256: str,
    mask_sha256: str,
    amp: str,
) -> dict[str, Any]:
    """``configs``: RunSpecs (train section + the family's own section, or None)."""

    def train_keys(tp: TrainParams) -> dict[str, Any]:
        return {k: v for k, v in to_plain(tp).items() if k not in EXECUTION_KEYS}

    trains = [train_keys(c.train) for c in configs]
    ident: dict[str, Any] = {
        "train": trains[0] if len(configs) == 1 else trains,
        "model": to_plain(model),
        "data.content_sha256": content_sha256,
        "supervision.mask_sha256": mask_sha256,
        "amp (resolved)": amp,
    }
    own = [to_plain(c.method) for c in configs if c.method is not None]
    if own:  # the family's section (absent for families without one: older checkpoints match)
        ident[model.name] = own[0] if len(configs) == 1 else own
    return ident


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def identity_differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Human-readable differences, one per key: 'train.beta = 4.0 (checkpoint) vs 8.0 (now)'."""
    a, b = _flatten(saved), _flatten(wanted)
    return [
        f"{k} = {a.get(k)!r} in the checkpoint but {b.get(k)!r} now"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


class CheckpointDir:
    def __init__(self, path: str | Path, keep: int = KEEP):
        self.path = Path(path)
        self.keep = keep

    def files(self) -> list[Path]:
        """Complete checkpoint files, newest first."""
        if not self.path.is_dir():
            return []
        return sorted(self.path.glob("ckpt-*.pt"), reverse=True)

    def latest(self) -> tuple[Path, dict[str, Any]] | None:
        for f in self.files():
            try:
                payload = torch.load(f, map_location="cpu", weights_only=True)
            except Exception as e:  # a file damaged after its rename (disk full, manual edit)
                log.warning("checkpoint %s is unreadable (%s: %s); trying an older one", f,
                            type(e).__name__, e)  # fmt: skip
                continue
            if isinstance(payload, dict) and payload.get("format") == FORMAT:
                return f, payload
            log.warning("%s is not a semidisent checkpoint; ignored", f)
        return None

    def save(self, step: int, payload: dict[str, Any]) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        final = self.path / f"ckpt-{step:09d}.pt"
        tmp = self.path / f".{final.name}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, "step": step, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        self._fsync_dir()
        for old in self.files()[self.keep :]:
            old.unlink(missing_ok=True)
        for stale in self.path.glob(".ckpt-*.tmp-*"):  # left by a killed writer
            if not stale.name.endswith(f"-{os.getpid()}"):
                stale.unlink(missing_ok=True)
        return final

    def _fsync_dir(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def check_resumable(
    path: Path, payload: dict[str, Any], identity: dict[str, Any], steps: int
) -> None:
    diffs = identity_differences(payload.get("identity", {}), identity)
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise CheckpointError(
            f"cannot resume from {path}: the run was made with other parameters ({shown}). "
            f"Remove {path.parent} to start over, or restore the parameters to resume"
        )
    if payload["step"] > steps:
        raise CheckpointError(
            f"cannot resume from {path}: it is at step {payload['step']}, beyond "
            f"train.steps = {steps}; remove {path.parent} or raise train.steps"
        )
