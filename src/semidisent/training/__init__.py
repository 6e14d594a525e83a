"""Training: device-resident data, the (batched, compiled, graph-captured) step, checkpoints
and the loop. Imports only torch, numpy and tqdm outside the package."""

from .checkpoint import CheckpointError
from .trainer import (
    VARYING_KEYS,
    NonFiniteLossError,
    TrainResult,
    group_configs,
    train,
    train_many,
)

__all__ = [
    "VARYING_KEYS",
    "CheckpointError",
    "NonFiniteLossError",
    "TrainResult",
    "group_configs",
    "train",
    "train_many",
]
