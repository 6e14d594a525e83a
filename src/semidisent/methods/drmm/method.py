"""``drmm``: the Deep Rendering Mixture Model (Patel, Nguyen & Baraniuk, NeurIPS 2016) with the
semi-supervised objective of the authors' follow-up code, on the method interface
(docs/architecture.md, docs/drmm.md). ``drmm.objective: cnn`` trains the same network on the
labelled batch's cross-entropy alone: the plain-CNN baseline of the same shape."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ...errors import SemidisentError
from ..base import BuildContext, Method, OptimizerSpec, ParamGroup, RunSpec
from .model import DRMM, STAT_NAMES
from .networks import DRMMConfig, DRMMNetwork
from .params import DRMMParams

PRIOR_PREFIX = "network.prior_"


def label_column(p: DRMMParams, factor_names: tuple[str, ...]) -> int:
    """The index of the classified label column (``drmm.label``; null: the first)."""
    if p.label is None:
        return 0
    if p.label not in factor_names:
        raise SemidisentError(
            f"drmm.label = {p.label!r} is not a label column of the dataset "
            f"({', '.join(factor_names)})"
        )
    return factor_names.index(p.label)


class DRMMMethod(Method):
    name = "drmm"
    params_section = "drmm"
    # Per-model weights of the unsupervised terms; networks, objective and priors are structural.
    varying = ("rc_weight", "kl_weight", "nn_weight")
    evaluations: ClassVar[tuple[str, ...]] = ("classification",)

    def stat_names(self) -> tuple[str, ...]:
        return STAT_NAMES

    def network_config(self, p: DRMMParams, ctx: BuildContext) -> DRMMConfig:
        c, h, w = ctx.observation_shape
        names = tuple(ctx.factor_names) or ("label",)
        index = label_column(p, names)
        config = DRMMConfig(
            in_channels=c,
            height=h,
            width=w,
            num_classes=int(ctx.label_sizes[index]),
            label=names[index],
            label_index=index,
            channels=p.channels,
            kernel_sizes=p.kernel_sizes,
            bias=p.bias,
            divisive_norm=p.divisive_norm,
            ema_priors=p.ema_priors,
            init=ctx.model.init,
        )
        if min(config.sizes()[-1]) < 1:
            raise SemidisentError(
                f"drmm.channels: {len(p.channels)} layers halve {h}x{w} images {len(p.channels)} "
                "times, below 1x1: use fewer layers"
            )
        return config

    def _network(self, p: DRMMParams, ctx: BuildContext, seed: int) -> DRMMNetwork:
        config = self.network_config(p, ctx)
        # Built on the CPU with the global torch RNG forked, as the other families.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return DRMMNetwork(config)

    def build(self, spec: RunSpec, ctx: BuildContext) -> nn.Module:
        p: DRMMParams = spec.method
        network = self._network(p, ctx, spec.train.seed)
        return DRMM(network, p.objective, p.cost_on, ctx.amp_dtype)

    def hyper(self, spec: RunSpec) -> dict[str, float]:
        p: DRMMParams = spec.method
        return {"rc_weight": p.rc_weight, "kl_weight": p.kl_weight, "nn_weight": p.nn_weight}

    def param_groups(self, spec: RunSpec) -> tuple[ParamGroup, ...]:
        p: DRMMParams = spec.method
        groups = [ParamGroup("model", ("",))]
        if p.ema_priors:
            ema = OptimizerSpec(kind="sgd", lr=1.0 - p.prior_momentum)
            groups.append(ParamGroup("priors", (PRIOR_PREFIX,), ema))
        return tuple(groups)

    def export(self, module: nn.Module) -> nn.Module:
        return module.network  # type: ignore[return-value]

    def network_from_config(self, config: dict[str, Any]) -> nn.Module:
        return DRMMNetwork(DRMMConfig(**config))

    # -- evaluation ---------------------------------------------------------------------------
    def predictor(self, network: nn.Module, params: Any, device: str) -> Any:
        return Predictor(network, device)  # type: ignore[arg-type]

    def random_network(self, params: Any, prepared: Any) -> nn.Module | None:
        ctx = BuildContext.for_prepared(params.model, prepared)
        return self._network(params.drmm, ctx, params.train.seed).eval()

    def write_pictures(
        self, network: nn.Module, dataset: Any, out_dir: Any, details: dict, seed: int
    ) -> list[Any]:
        from .pictures import write_pictures

        return write_pictures(network, dataset, out_dir, seed=seed)  # type: ignore[arg-type]


class Predictor:
    """``fn(x (n, C, H, W) uint8 or float in [0, 1]) -> {label: {"encoder": argmax gamma}}``, in
    chunks on a device (the "classification" evaluation's contract)."""

    def __init__(self, network: DRMMNetwork, device: str, batch_size: int = 512):
        self.network = network.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        out = []
        for start in range(0, len(x), self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + self.batch_size]))
            chunk = chunk.to(self.device)
            if chunk.dtype == torch.uint8:  # stored pixels: the values the sampler decodes
                chunk = chunk.float() * torch.tensor(1.0 / 255.0, dtype=torch.float32)
            out.append(self.network(chunk.float()).argmax(-1).cpu().numpy())
        labels = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
        return {self.network.config.label: {"encoder": labels}}
