"""The trained-model file (``model.pt``): weights + the config that rebuilds them + metadata.

The network is whatever the model family exports (``Method.export``: the VAE for the
semi-supervised family); the meta's ``model.name`` says which family, and that family rebuilds
the network from its config (``Method.network_from_config``).

This is what `semidisent train` hands to `evaluate`, the registry and users; training
checkpoints (optimiser, RNG states) are a separate, larger format owned by the trainer.
Loading uses ``weights_only=True``: the file holds tensors and plain Python values only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import ArtifactError

FORMAT = "semidisent.model/1"


def save_model(path: str | Path, model: Any, meta: dict[str, Any] | None = None) -> Path:
    """Write atomically (temp file + rename). ``model``: a family's exported network (a
    :class:`VAE` for the semi-supervised family), with ``config.to_dict()``; ``meta["model"]``
    names its family, which rebuilds it on load."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta or {},
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def require_model_file(path: str | Path) -> Path:
    """``path``, or the ArtifactError a missing model file gets."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"model file {path} does not exist; run `semidisent train` first")
    return path


def network_from_file(config: dict[str, Any], meta: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the exported network: the family named in the file's meta (``model.name``; the
    semi-supervised beta-VAE for files that name none) knows its network's config."""
    from ..methods import get_method

    name = (meta.get("model") or {}).get("name", "s2vae")
    try:
        method = get_method(name)
    except ValueError as e:
        raise ArtifactError(f"model file of an unknown family: {e}") from None
    return method.network_from_config(config)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Any, dict]:
    """(model in eval mode, meta). Raises ArtifactError for a missing or foreign file."""
    path = require_model_file(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt file
        raise ArtifactError(f"model file {path} cannot be read: {type(e).__name__}: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a semidisent model file (format {FORMAT})")
    model = network_from_file(payload["config"], payload["meta"])
    model.load_state_dict(payload["state_dict"])
    model.to(map_location).eval()
    return model, payload["meta"]
