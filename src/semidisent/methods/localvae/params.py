"""The ``local_vae`` params.yaml section (docs/localvae.md). Defaults follow the authors' MNIST
settings where they fit a CPU (z = model.num_latent; decoder_channels 16; 10 mixture components;
5 residual blocks; hidden 500) except the PixelCNN width (64, the authors' 256) and the absence of
batch normalisation. Train keys that apply: seed, steps, batch_size, labelled_batch_size (M2),
lr (the authors: 3e-4 for the VAE, 1e-3 for M2), device, fast, amp and the intervals. Torch-free:
the params schema imports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...config.validation import check, non_negative, positive


@dataclass(frozen=True)
class LocalVAEParams:
    """local_vae: a VAE (or M2) decoded by a PixelCNN of a small causal window (Zhang et al.)."""

    # vae: the ELBO (beta = 1); m2: Kingma et al.'s M2 with y enumerated (methods/psvae's M2 on
    # this decoder; the classification weight is m2_alpha (N_u + N_l) / N_l).
    objective: Literal["vae", "m2"] = "vae"
    # local: type-A (2l+1)x(2l+1) masked conv + 1x1 residual blocks; full: 7x7 + 3x3 masked
    # residual blocks (PixelCNN); factorised: the plain decoder (no PixelCNN).
    decoder: Literal["local", "full", "factorised"] = "local"
    # l of the local window (ignored by full / factorised).
    local_size: Literal[1, 3, 5] = 1
    likelihood: Literal["logistic_mixture", "bernoulli"] = "logistic_mixture"
    # Colour: ci = channels independent given the component; ca = PixelCNN++'s channel-
    # autoregressive means (the same model for one channel).
    channel_mode: Literal["ci", "ca"] = "ci"
    mixtures: int = field(default=10, metadata=check(positive))
    # Channels of h(z), the ordinary decoder's full-resolution feature map.
    feature_channels: int = field(default=16, metadata=check(positive))
    # Channels of the PixelCNN (half from the image, half from h(z)).
    pixel_channels: int = field(default=64, metadata=check(positive))
    res_blocks: int = field(default=5, metadata=check(non_negative))
    # Encoder / ordinary decoder: mlp (any size), conv (64x64), auto: conv at 64x64 else mlp.
    network: Literal["auto", "mlp", "conv"] = "auto"
    hidden: int = field(default=500, metadata=check(positive))
    # KL weight of the vae objective (1: the ELBO).
    beta: float = field(default=1.0, metadata=check(positive))
    # M2: classification weight factor (Kingma et al.'s and the authors' 0.1) and the labelled
    # bound's weight against the unlabelled one.
    m2_alpha: float = field(default=0.1, metadata=check(non_negative))
    labelled_weight: float = field(default=1.0, metadata=check(non_negative))
    # The "probes" evaluation's linear classifier: logistic regression, or the authors' linear
    # SVM (sklearn SVC(kernel="linear"), slow beyond ~10,000 rows).
    linear_probe: Literal["logistic", "svm"] = "logistic"

    def validate(self, prefix: str) -> None:
        return None
