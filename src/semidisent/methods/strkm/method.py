"""``st_rkm``: the Stiefel restricted kernel machine (Pandey et al., Neural Computation 2022) on the
method interface (docs/architecture.md, docs/strkm.md): encoder and decoder trained with Adam,
U^T with Cayley ADAM (``training/cayley.py``) from the same backward pass, the exact U fitted
after training, generation from the codes' Gaussian."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ...errors import SemidisentError
from ...training.cayley import BETAS, EPS
from ..base import BuildContext, Method, OptimizerSpec, ParamGroup, RunSpec
from .model import STAT_NAMES, StRKM, fit_final
from .networks import StRKMConfig, StRKMNetwork
from .params import StRKMParams

STIEFEL_PARAMETER = "network.u_t"


class StRKMMethod(Method):
    name = "st_rkm"
    params_section = "st_rkm"
    # Per-model values of the loss; variant, networks and U's learning rate are structural.
    varying = ("noise_level", "c_accu")
    evaluations: ClassVar[tuple[str, ...]] = ("factor_metrics", "generation")
    generation_default = True

    def stat_names(self) -> tuple[str, ...]:
        return STAT_NAMES

    def network_config(self, p: StRKMParams, ctx: BuildContext) -> StRKMConfig:
        c, h, w = ctx.observation_shape
        if ctx.model.num_latent > p.feature_dim:
            raise SemidisentError(
                f"st_rkm: model.num_latent ({ctx.model.num_latent}) must be at most "
                f"st_rkm.feature_dim ({p.feature_dim}): U has orthonormal columns in R^m"
            )
        if p.network == "dlib" and (h, w) != (64, 64):
            raise SemidisentError(
                f"st_rkm.network = dlib takes 64x64 images; the dataset has {h}x{w}: use paper "
                "(28x28 or 64x64)"
            )
        if p.network == "paper" and (h != w or h not in (28, 64)):
            raise SemidisentError(
                f"st_rkm.network = paper takes 28x28 or 64x64 images; the dataset has {h}x{w}"
            )
        return StRKMConfig(
            in_channels=c,
            height=h,
            width=w,
            num_latent=ctx.model.num_latent,
            feature_dim=p.feature_dim,
            hidden=p.hidden,
            network=p.network,
            capacity=p.capacity,
            init=ctx.model.init,
        )

    def _network(self, p: StRKMParams, ctx: BuildContext, seed: int) -> StRKMNetwork:
        config = self.network_config(p, ctx)
        # Built on the CPU with the global torch RNG forked, as the other families.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return StRKMNetwork(config)

    def build(self, spec: RunSpec, ctx: BuildContext) -> nn.Module:
        p: StRKMParams = spec.method
        module = StRKM(self._network(p, ctx, spec.train.seed), p.variant, ctx.amp_dtype)
        # What the host-side step after training reads (after_training gets the module only).
        module.final_rows = p.final_rows  # type: ignore[assignment]
        module.final_seed = spec.train.seed  # type: ignore[assignment]
        return module

    def hyper(self, spec: RunSpec) -> dict[str, float]:
        p: StRKMParams = spec.method
        return {"noise_level": p.noise_level, "c_accu": p.c_accu}

    def param_groups(self, spec: RunSpec) -> Sequence[ParamGroup]:
        p: StRKMParams = spec.method
        # The authors step Adam (networks) then Cayley ADAM (U) after one backward pass.
        return (
            ParamGroup("networks", ("",)),
            ParamGroup(
                "stiefel",
                (STIEFEL_PARAMETER,),
                OptimizerSpec(kind="cayley_adam", betas=BETAS, eps=EPS, lr=p.u_lr),
            ),
        )

    def after_training(self, module: nn.Module, prepared: Any) -> None:
        info = fit_final(
            module.network,  # type: ignore[arg-type]
            prepared.dataset,
            int(module.final_rows),  # type: ignore[arg-type]
            int(module.final_seed),  # type: ignore[arg-type]
        )
        module.final_info = info  # type: ignore[assignment]

    def export(self, module: nn.Module) -> nn.Module:
        return module.network  # type: ignore[return-value]

    def export_state(self, module: nn.Module) -> dict[str, Any]:
        return dict(getattr(module, "final_info", {}))

    def network_from_config(self, config: dict[str, Any]) -> nn.Module:
        return StRKMNetwork(StRKMConfig(**config))

    # -- evaluation ---------------------------------------------------------------------------
    def generate(self, network: nn.Module, n: int, seed: int) -> torch.Tensor:
        """Decoded samples of the codes' Gaussian (the authors' ``rkm_gen.py``)."""
        g = torch.Generator().manual_seed(seed)
        h = network.sample_codes(n, g)  # type: ignore[operator]
        return self.decode_images(network, h)

    def random_network(self, params: Any, prepared: Any) -> nn.Module | None:
        ctx = BuildContext.for_prepared(params.model, prepared)
        return self._network(params.st_rkm, ctx, params.train.seed).eval()

    def write_pictures(
        self, network: nn.Module, dataset: Any, out_dir: Any, details: dict, seed: int
    ) -> list[Any]:
        from .pictures import write_pictures

        return write_pictures(network, dataset, out_dir, details, seed=seed)  # type: ignore[arg-type]
