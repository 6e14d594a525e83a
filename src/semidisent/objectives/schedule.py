"""gamma_sup schedules (disentanglement_lib ``semi_supervised_vae.py`` annealers).

With s the 0-based training step (dlib's global step before the update) and T the threshold:

    fixed:  gamma(s) = gamma
    ramp:   gamma(s) = min(gamma, gamma * s / T)                 (dlib "anneal", also accepted)
    switch: gamma(s) = gamma * min(1, max(0, s - T))             (dlib "fine_tune", also accepted)

so "switch" is 0 up to and including step T and gamma from step T + 1 on, exactly as dlib's
integer-step formula (its test: 0 at s = 100, gamma at s = 101 for T = 100).

:func:`gamma_at` is the tensor form used inside the (possibly batched, graph-captured) training
step: each of K models carries its own gamma, schedule code and threshold.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def fixed(gamma: float, step: int, threshold: int) -> float:
    return gamma


def ramp(gamma: float, step: int, threshold: int) -> float:
    return min(gamma, gamma * step / threshold)


def switch(gamma: float, step: int, threshold: int) -> float:
    return gamma * min(1, max(0, step - threshold))


SCHEDULES: dict[str, Callable[[float, int, int], float]] = {
    "fixed": fixed,
    "ramp": ramp,
    "switch": switch,
    # disentanglement_lib's own names of the same annealers.
    "anneal": ramp,
    "fine_tune": switch,
}
# Codes of the schedules in the tensor form (the aliases share their schedule's code).
SCHEDULE_CODES: dict[str, int] = {
    "fixed": 0,
    "ramp": 1,
    "switch": 2,
    "anneal": 1,
    "fine_tune": 2,
}


def gamma_at(
    step: torch.Tensor, gamma: torch.Tensor, code: torch.Tensor, threshold: torch.Tensor
) -> torch.Tensor:
    """Tensor form of the schedules: step () int, gamma / code / threshold (K,) -> (K,) float.

    Branch-free (``torch.where``) so that it can live inside a CUDA graph and under vmap.
    """
    s = step.to(gamma.dtype)
    t = threshold.to(gamma.dtype)
    ramp_factor = torch.clamp(s / t.clamp(min=1.0), max=1.0)
    switch_factor = torch.clamp(s - t, min=0.0, max=1.0)
    factor = torch.where(
        code == SCHEDULE_CODES["fixed"],
        torch.ones_like(s),
        torch.where(code == SCHEDULE_CODES["ramp"], ramp_factor, switch_factor),
    )
    return gamma * factor
