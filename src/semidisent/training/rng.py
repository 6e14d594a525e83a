"""Counter-based random numbers: bits = hash(key, step, counter), computed with tensor ops.

Why not a ``torch.Generator``: the training step must be replayable as a CUDA graph, batchable
over K models and resumable bit-exactly. A counter-based stream needs no state besides the step
counter, which is a device tensor the step itself increments: the same numbers come out on CPU
and CUDA, in eager, compiled or graph-replayed steps, for one model or K stacked ones, and after
a resume. (This is the design of JAX's and Philox's RNGs; the hash is murmur3's 32-bit
finaliser, applied twice with the key mixed in.)

All arithmetic is on int64 tensors holding 32-bit values; every product stays below 2^63
(:func:`_mul32` splits the constant into 16-bit halves), so nothing relies on overflow.
"""

from __future__ import annotations

import math

import torch

MASK32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9
_TWO_POW_M24 = 1.0 / (1 << 24)
_BELOW_ONE = 1.0 - _TWO_POW_M24


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x in [0, 2^32) and a 32-bit constant c."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3 fmix32: a bijection of [0, 2^32) with full avalanche."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def mix32_int(x: int) -> int:
    """The same hash on a Python int (to derive keys on the host)."""
    x &= MASK32
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & MASK32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & MASK32
    return x ^ (x >> 16)


def make_key(seed: int, stream: int) -> int:
    """A 32-bit key for (seed, stream); streams separate independent uses of one seed."""
    return mix32_int(mix32_int(seed & MASK32) ^ mix32_int((stream + 1) * GOLDEN) ^ (seed >> 32))


def counter_constants(n: int, device: torch.device | str) -> torch.Tensor:
    """The per-position part of the hash input, precomputed once (int64 (n,))."""
    return _mul32(torch.arange(n, dtype=torch.int64, device=device) + 1, GOLDEN)


def random_bits(key: torch.Tensor, step: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """32-bit random values: key (...,) int64, step () int64, counters (n,) -> (..., n) int64."""
    a = mix32(key ^ _mul32(step & MASK32, 0x2545F491))  # (...,) one value per key and step
    a = a[..., None]
    return mix32((mix32(a ^ counters) + a) & MASK32)


def to_uniform(bits: torch.Tensor) -> torch.Tensor:
    """float32 in (0, 1): the top 24 bits, centred in their cell (never 0 or 1). The top cell's
    centre, 1 - 2^-25, is not a float32 and rounds to 1.0 (then to_normal gave inf, once in
    2^24 draws): it is clamped to 1 - 2^-24, the largest float32 below 1; no other value moves."""
    return (((bits >> 8).to(torch.float32) + 0.5) * _TWO_POW_M24).clamp(max=_BELOW_ONE)


def to_normal(bits: torch.Tensor) -> torch.Tensor:
    """Standard normal by the inverse CDF (tails cut at about 5.4 sigma by the 24-bit grid)."""
    return math.sqrt(2.0) * torch.erfinv(2.0 * to_uniform(bits) - 1.0)


def to_index(bits: torch.Tensor, n: int) -> torch.Tensor:
    """Uniform integers in [0, n) (Lemire's multiply-shift; bias < n / 2^32)."""
    if not 0 < n < 2**31:
        raise ValueError(f"index range must be in (0, 2^31), got {n}")
    return (bits * n) >> 32
