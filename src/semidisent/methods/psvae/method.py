"""``ps_vae``: the partially-specified semi-supervised VAE (Siddharth et al., NeurIPS 2017) and
Kingma et al.'s M2 as its baseline (``ps_vae.objective``), on the method interface
(docs/architecture.md, docs/psvae.md)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ...config.validation import bad_value
from ...errors import SemidisentError
from ..base import BuildContext, Method, RunSpec
from .model import PartiallySpecifiedVAE
from .networks import PSNetwork, PSNetworkConfig
from .params import PSVAEParams, resolve_spec
from .spec import SpecError, Specification


def network_kind(p: PSVAEParams, shape: tuple[int, int, int]) -> str:
    if p.network != "auto":
        return p.network
    return "conv" if shape[1:] == (64, 64) else "mlp"


class PSVAEMethod(Method):
    name = "ps_vae"
    params_section = "ps_vae"
    # Per-model values of the loss (tensors in the step); the rest is structural.
    varying = ("alpha", "m2_alpha", "temperature")
    # What a specification may declare (each network says which apply: evaluations_of).
    evaluations: ClassVar[tuple[str, ...]] = ("classification", "factor_metrics")

    def specification(self, p: PSVAEParams, ctx: BuildContext) -> Specification:
        try:
            return resolve_spec(p, ctx.factor_names, ctx.label_sizes)
        except SpecError as e:
            raise bad_value("ps_vae.spec", p.spec, f"a specification that fits: {e}") from None

    def stat_names(self) -> tuple[str, ...]:
        return PartiallySpecifiedVAE.stat_names

    def network_config(self, p: PSVAEParams, ctx: BuildContext) -> PSNetworkConfig:
        c, h, w = ctx.observation_shape
        kind = network_kind(p, ctx.observation_shape)
        if kind == "conv" and (h, w) != (64, 64):
            raise SemidisentError(
                f"ps_vae.network = conv takes 64x64 images; the dataset has {h}x{w}: use mlp"
            )
        return PSNetworkConfig(
            in_channels=c,
            height=h,
            width=w,
            spec=self.specification(p, ctx).to_dict(),
            label_sizes=tuple(int(k) for k in ctx.label_sizes),
            network=kind,
            hidden=p.hidden,
            init=ctx.model.init,
            temperature=p.temperature,
        )

    def build(self, spec: RunSpec, ctx: BuildContext) -> nn.Module:
        p: PSVAEParams = spec.method
        config = self.network_config(p, ctx)
        # M2's classification weight: Kingma et al.'s alpha = 0.1 N of a summed objective, as a
        # weight of per-example means: m2_alpha * N / n_l.
        m2_scale = ctx.num_unlabelled / max(ctx.num_labelled, 1)
        # Built on the CPU with the global torch RNG forked (every device starts from the same
        # weights; the caller's RNG is left untouched), as the semi-supervised family does.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.train.seed)
            network = PSNetwork(config)
        return PartiallySpecifiedVAE(
            network,
            p.objective,
            p.samples,
            ctx.label_sizes,
            m2_scale=m2_scale,
            labelled_weight=p.labelled_weight,
            amp_dtype=ctx.amp_dtype,
        )

    def hyper(self, spec: RunSpec) -> dict[str, float]:
        p: PSVAEParams = spec.method
        return {"alpha": p.alpha, "m2_alpha": p.m2_alpha, "temperature": p.temperature}

    def extra_uniforms(
        self,
        ctx: BuildContext,
        batch_size: int,
        labelled_batch_size: int,
        spec: RunSpec | None = None,
    ) -> int:
        # Every draw of the step: the relaxed categoricals' Gumbel noise and the gaussians'
        # normals, per sample and example (m2: per enumerated class), from the batch's stream.
        # Samples, objective and specification are structural: the first configuration's hold.
        p: PSVAEParams = spec.method if spec is not None else PSVAEParams()
        shape = self.specification(p, ctx)
        if p.objective == "m2":
            per = shape.categoricals[0].size * sum(
                v.size for v in shape.variables if not v.categorical
            )
        else:
            per = p.samples * shape.uniforms_per_sample
        return (batch_size + labelled_batch_size) * per

    def export(self, module: nn.Module) -> nn.Module:
        return module.network  # type: ignore[return-value]

    def network_from_config(self, config: dict[str, Any]) -> nn.Module:
        return PSNetwork(PSNetworkConfig(**config))

    # -- evaluation ---------------------------------------------------------------------------
    def evaluations_of(self, network: nn.Module) -> tuple[str, ...]:
        return tuple(network.spec.evaluations)  # type: ignore[union-attr]

    def predictor(self, network: nn.Module, params: Any, device: str) -> Any:
        from .inference import Predictor

        own = params.ps_vae if params.model.name == self.name else PSVAEParams()
        return Predictor(network, device, own.inference_samples, params.eval.seed)  # type: ignore[arg-type]

    def random_network(self, params: Any, prepared: Any) -> nn.Module | None:
        ctx = BuildContext.for_prepared(params.model, prepared)
        config = self.network_config(params.ps_vae, ctx)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params.train.seed)
            return PSNetwork(config).eval()

    def write_pictures(
        self, network: nn.Module, dataset: Any, out_dir: Any, details: dict, seed: int
    ) -> list[Any]:
        from .pictures import write_pictures

        return write_pictures(network, dataset, out_dir, details, seed=seed)  # type: ignore[arg-type]
