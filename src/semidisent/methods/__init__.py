"""Model families behind one interface (:mod:`.base`), keyed by ``model.name`` (:mod:`.names`).

Importing this package is light (no torch): :func:`get_method` imports a family when it is
asked for, so the params schema and the Kubeflow compiler can list names without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .names import METHOD_NAMES

if TYPE_CHECKING:
    from .base import Method


def get_method(name: str) -> Method:
    """The method registered under ``model.name`` = ``name``."""
    if name == "ps_vae":
        from .psvae.method import PSVAEMethod

        return PSVAEMethod()
    if name == "local_vae":
        from .localvae.method import LocalVAEMethod

        return LocalVAEMethod()
    if name == "drmm":
        from .drmm.method import DRMMMethod

        return DRMMMethod()
    if name == "st_rkm":
        from .strkm.method import StRKMMethod

        return StRKMMethod()
    from .s2.method import S2_METHODS

    if name not in S2_METHODS:
        raise ValueError(f"unknown model.name {name!r}; one of {', '.join(METHOD_NAMES)}")
    return S2_METHODS[name]


__all__ = ["METHOD_NAMES", "get_method"]
