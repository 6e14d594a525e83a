"""Classification at test time, two ways (the reference notebook's ``test(..., infer=False /
True)``):

- ``encoder``: argmax q(y | x) of each supervised categorical (parents at their deterministic
  values); a supervised gaussian predicts the label whose standardised value is nearest to its
  mean;
- ``inferred``: importance-weighted inference. S samples of every variable from q (relaxed at the
  network's temperature), log w_s = log p(x, v_s) - log q(v_s | x), w = softmax_s(log w), and the
  prediction argmax sum_s w_s y_s (a gaussian: the label nearest to sum_s w_s v_s).

Random numbers come from a ``torch.Generator`` seeded by the caller (evaluation is not a
training step: nothing needs the counter stream here).
"""

from __future__ import annotations

import numpy as np
import torch

from ...objectives.relaxed import standardised_label
from .model import Observed, siddharth_terms
from .networks import PSNetwork

ENCODER, INFERRED = "encoder", "inferred"


def _nearest_label(value: torch.Tensor, size: int) -> torch.Tensor:
    """The label whose standardised value is nearest to ``value`` (N,)."""
    grid = standardised_label(torch.arange(size, device=value.device), size)
    return (value[:, None] - grid[None, :]).abs().argmin(-1)


@torch.inference_mode()
def predict(
    net: PSNetwork, x: torch.Tensor, samples: int, generator: torch.Generator
) -> dict[str, dict[str, torch.Tensor]]:
    """{label column: {"encoder": labels (N,), "inferred": labels (N,)}} for images x in [0, 1]."""
    spec = net.spec
    sizes = tuple(net.config.label_sizes)
    det = net.deterministic(x)
    n = x.shape[0]
    f = len(spec.factor_names)
    nothing = Observed(
        spec,
        sizes,
        torch.full((n, f), -1, dtype=torch.int64, device=x.device),
        torch.zeros((n, f), dtype=torch.bool, device=x.device),
    )
    u = torch.rand(
        (samples, n, spec.uniforms_per_sample), generator=generator, device=generator.device
    ).to(x.device)
    # Centred away from 0 and 1 like the training stream (Gumbel and erfinv need (0, 1)).
    u = u.clamp(1e-7, 1.0 - 1e-7)
    t = siddharth_terms(net, x, nothing, u, net.config.temperature, 0.0)
    w = torch.softmax(t["log_ratio"], dim=0)  # (S, N)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for v in spec.variables:
        if not v.supervised:
            continue
        value, params = det[v.name]
        expected = (w[..., None] * t["values"][v.name]).sum(0)  # (N, size)
        if v.categorical:
            enc, inf = params.argmax(-1), expected.argmax(-1)
        else:
            k = sizes[spec.label_index(v)]
            enc, inf = _nearest_label(value[:, 0], k), _nearest_label(expected[:, 0], k)
        out[v.label] = {ENCODER: enc, INFERRED: inf}  # type: ignore[index]
    return out


class Predictor:
    """``fn(x (n, C, H, W), uint8 pixels or float in [0, 1]) -> {label column: {inference:
    labels (n,) numpy}}`` in chunks,
    on a device, with a seeded generator (the "classification" evaluation's contract)."""

    def __init__(self, net: PSNetwork, device: str, samples: int, seed: int, batch_size: int = 256):
        self.net = net.to(device).eval()
        self.device = torch.device(device)
        self.samples = samples
        self.batch_size = batch_size
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def __call__(self, x: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        parts: dict[str, dict[str, list[np.ndarray]]] = {}
        for start in range(0, len(x), self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + self.batch_size]))
            chunk = chunk.to(self.device)
            if chunk.dtype == torch.uint8:  # stored pixels: the values the sampler decodes
                chunk = chunk.float() * torch.tensor(1.0 / 255.0, dtype=torch.float32)
            for name, kinds in predict(self.net, chunk, self.samples, self.generator).items():
                for kind, labels in kinds.items():
                    parts.setdefault(name, {}).setdefault(kind, []).append(labels.cpu().numpy())
        return {
            name: {kind: np.concatenate(v) for kind, v in kinds.items()}
            for name, kinds in parts.items()
        }
