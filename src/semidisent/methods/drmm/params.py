"""The ``drmm`` params.yaml section (docs/drmm.md). Defaults follow the authors' follow-up code
(``minhtannguyen/drmm-tensorflow``, seed_models.md section 4): entropy weight 0.5
(``--kl``), non-negativity weight 0.5 (``--cw``), costs on the unlabelled batch
(``--cost_mode unsup``), prior momentum 0.99; except the reconstruction weight, which the
reference leaves at its model default 0 while the paper's objective has the term: 1 here, and
divisive normalisation, off by default (the reference CLI turns it on) so that the default
bottom-up pass is exactly a plain conv net. Train keys that apply: seed, steps, batch_size,
labelled_batch_size, lr (the authors: 1e-3), device, fast, amp and the intervals. Torch-free: the
params schema imports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...config.validation import between, check, each, non_empty, non_negative, positive


@dataclass(frozen=True)
class DRMMParams:
    """drmm: the Deep Rendering Mixture Model (Patel, Nguyen & Baraniuk 2016), semi-supervised."""

    # drmm: cross-entropy on the labelled batch + reconstruction through the inferred switches
    # + entropy + non-negativity of the renderings; cnn: the same network trained on the
    # cross-entropy of the labelled batch alone (the plain-CNN baseline of the same shape).
    objective: Literal["drmm", "cnn"] = "drmm"
    # The label column it classifies (a factor name); null: the dataset's first column (digit
    # of the digit datasets, shape of dSprites).
    label: str | None = None
    # One rendering layer per entry: conv of that many channels (odd kernel, "same" padding,
    # stride 1), optional divisive normalisation, ReLU (the ON/OFF switch a), 2x2 max-pool (the
    # position switch t); then a linear softmax layer whose rows are the class templates.
    channels: tuple[int, ...] = field(
        default=(32, 64, 128), metadata=check(lambda v: non_empty(v) or each(positive)(v))
    )
    kernel_sizes: tuple[int, ...] = field(
        default=(5, 3, 3), metadata=check(lambda v: non_empty(v) or each(positive)(v))
    )
    # A per-channel conv bias (the theory's b = -||mu||^2 / 2 sigma^2 + log pi_on / pi_off).
    bias: bool = True
    # The reference's divisive normalisation after each conv (local mean and variance over the
    # channels and the kernel's window; learned alpha, sigma, b per layer).
    divisive_norm: bool = False
    # Weights of the unsupervised terms (per-model: may differ between batched models).
    rc_weight: float = field(default=1.0, metadata=check(non_negative))
    kl_weight: float = field(default=0.5, metadata=check(non_negative))
    nn_weight: float = field(default=0.5, metadata=check(non_negative))
    # The batch the unsupervised terms are computed on (both: half each, as the reference).
    cost_on: Literal["unlabelled", "labelled", "both"] = "unlabelled"
    # EMA-updated priors of the switches (pi_a: ON probability of every unit, pi_t: argmax
    # frequency of every pooling position), used to render images from a class alone.
    ema_priors: bool = True
    prior_momentum: float = field(default=0.99, metadata=check(between(0.0, 1.0, hi_open=True)))

    def validate(self, prefix: str) -> None:
        from ...config.validation import bad_value

        if len(self.kernel_sizes) != len(self.channels):
            raise bad_value(
                f"{prefix}.kernel_sizes",
                list(self.kernel_sizes),
                f"one kernel size per layer of {prefix}.channels ({len(self.channels)})",
            )
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise bad_value(
                f"{prefix}.kernel_sizes",
                list(self.kernel_sizes),
                "odd sizes (same padding keeps the top-down pass the exact adjoint)",
            )


def spatial_sizes(height: int, width: int, layers: int) -> list[tuple[int, int]]:
    """The feature map size entering each layer, and after the last pool (floor 2x2 pools)."""
    sizes = [(height, width)]
    for _ in range(layers):
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    return sizes
