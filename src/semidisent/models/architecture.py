"""The disentanglement_lib convolutional encoder and decoder (Locatello et al. 2019).

Encoder: conv 32 (4x4, s2), conv 32 (4x4, s2), conv 64 (s2), conv 64 (s2), ReLU after each,
FC 256 ReLU, linear heads to the mean and log-variance. Decoder: FC 256, FC 1024, reshape to
64 x 4 x 4, deconv 64, 32, 32, C (4x4, s2) with ReLU between; it outputs logits.

Deviation, recorded in the model params: the paper gives 4x4 kernels for convs 3-4, the released
code (``methods/shared/architectures.py``) uses 2x2; ``encoder_kernel`` chooses, 4 by default.
TF "same" padding is symmetric here: 4x4 s2 -> padding 1, 2x2 s2 -> padding 0. The flatten is
NCHW where TF's is NHWC: equivalent up to a permutation of FC weights (matters only to port
weights). Initialisation "xavier" mirrors TF's glorot-uniform kernels with zero biases.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(c_in: int, c_out: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, stride=2, padding=1 if kernel == 4 else 0)


class ConvEncoder(nn.Module):
    def __init__(self, in_channels: int, num_latent: int, kernel_34: int = 4):
        super().__init__()
        if kernel_34 not in (2, 4):
            raise ValueError(f"kernel of convs 3-4 must be 4 or 2, got {kernel_34}")
        self.convs = nn.Sequential(
            _conv(in_channels, 32, 4), nn.ReLU(),
            _conv(32, 32, 4), nn.ReLU(),
            _conv(32, 64, kernel_34), nn.ReLU(),
            _conv(64, 64, kernel_34), nn.ReLU(),
        )  # fmt: skip
        self.fc = nn.Linear(64 * 4 * 4, 256)
        self.mean = nn.Linear(256, num_latent)
        self.log_var = nn.Linear(256, num_latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.fc(self.convs(x).flatten(1)))
        return self.mean(h), self.log_var(h)


class DeconvDecoder(nn.Module):
    def __init__(self, out_channels: int, num_latent: int):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(num_latent, 256), nn.ReLU(), nn.Linear(256, 64 * 4 * 4), nn.ReLU()
        )
        self.deconvs = nn.Sequential(
            nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, out_channels, 4, stride=2, padding=1),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconvs(self.fc(z).view(-1, 64, 4, 4))


def xavier_init_(module: nn.Module) -> None:
    """TF defaults: glorot-uniform weights, zero biases, for every conv / deconv / linear layer."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
