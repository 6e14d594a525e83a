"""Where and how training runs: device, autocast dtype, fast path, device description."""

from __future__ import annotations

import os
import platform

import torch

from ..errors import SemidisentError


class DeviceError(SemidisentError):
    """The requested device is not available."""


def resolve_device(setting: str) -> torch.device:
    """train.device: auto (CUDA when present), cpu, cuda."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "train.device = 'cuda' but no CUDA device is visible to torch "
            f"{torch.__version__}; use train.device=auto or cpu"
        )
    return torch.device(setting)


def resolve_amp(setting: str, device: torch.device) -> torch.dtype | None:
    """train.amp: auto = bf16 on CUDA devices that support it, float32 on CPU (where bf16
    autocast is slower); bf16 forces it; off = float32."""
    if setting == "off":
        return None
    if setting == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def resolve_fast(setting: str, device: torch.device) -> bool:
    """train.fast: auto = on for CUDA (compiled step replayed as a CUDA graph), off on CPU
    (compilation costs minutes there and the CPU is compute bound anyway); on = compile on
    any device (the CUDA graph only on CUDA)."""
    if setting == "auto":
        return device.type == "cuda"
    return setting == "on"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu ({cpu}, {torch.get_num_threads()} threads of {os.cpu_count()} cores)"
