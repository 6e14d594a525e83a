"""Where and how training runs: device, autocast dtype, fast path, device description."""

from __future__ import annotations

import logging
import os
import platform

import torch

from ..errors import SemidisentError

log = logging.getLogger(__name__)


class DeviceError(SemidisentError):
    """The requested device is not available."""


def cuda_unusable_reason() -> str | None:
    """Why CUDA cannot be used by this process (None when it can): no CUDA build of torch, or
    the driver's or runtime's own error (e.g. a driver too old for the installed CUDA build)."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    try:
        torch.cuda.init()
    except Exception as e:  # the driver's message is the useful part
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}): {str(e).strip()}"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device"


def resolve_device(setting: str) -> torch.device:
    """train.device: auto (CUDA when usable), cpu, cuda. ``auto`` on a CUDA build of torch that
    cannot use the GPU (driver too old, no device visible) says so loudly before falling back
    to the CPU; ``cuda`` refuses with the reason."""
    if setting == "cpu":
        return torch.device("cpu")
    reason = cuda_unusable_reason()
    if reason is None:
        return torch.device(setting if setting != "auto" else "cuda")
    if setting == "cuda":
        raise DeviceError(f"train.device = 'cuda' but CUDA is not usable: {reason}")
    if torch.version.cuda is not None:  # a GPU build that cannot use a GPU: likely unintended
        log.warning("train.device = auto: CUDA is not usable (%s); training on the CPU", reason)
    return torch.device("cpu")


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
