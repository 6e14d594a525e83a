"""``local_vae``: the local-decoder VAE of Zhang, Xiao, Paige & Barber (2022) on the method
interface (docs/architecture.md, docs/localvae.md): a VAE whose decoder is h(z) followed by a
PixelCNN of a small causal window (or the full PixelCNN / the plain decoder as controls),
evaluated by probes on the encoder mean; and (``local_vae.objective: m2``) Kingma et al.'s M2 with
the same decoder, which is ``methods/psvae``'s M2 (its objective, classifier and pictures) on a
``PSNetwork`` whose decoder ends in the pixel decoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ...errors import SemidisentError
from ...models.pixelcnn import PixelDecoderConfig
from ..base import BuildContext, Method, RunSpec
from ..psvae.model import PartiallySpecifiedVAE
from ..psvae.networks import PSNetwork, PSNetworkConfig
from ..psvae.spec import CATEGORICAL, GAUSSIAN, Specification, Variable
from .model import STAT_NAMES, LocalM2, LocalVAE
from .networks import LocalVAEConfig, LocalVAENetwork
from .params import LocalVAEParams


def network_kind(p: LocalVAEParams, shape: Sequence[int]) -> str:
    if p.network != "auto":
        return p.network
    return "conv" if tuple(shape[1:]) == (64, 64) else "mlp"


def pixel_config(p: LocalVAEParams, shape: Sequence[int]) -> PixelDecoderConfig:
    c, h, w = (int(d) for d in shape)
    return PixelDecoderConfig(
        in_channels=c,
        height=h,
        width=w,
        decoder=p.decoder,
        local_size=int(p.local_size),
        likelihood=p.likelihood,
        channel_mode=p.channel_mode,
        mixtures=p.mixtures,
        feature_channels=p.feature_channels,
        pixel_channels=p.pixel_channels,
        res_blocks=p.res_blocks,
    )


def m2_spec(factor_names: Sequence[str], label_sizes: Sequence[int], style: int) -> Specification:
    """M2's variables: the class y (the dataset's one label column, enumerated) and the style z
    (model.num_latent), q(y | x) q(z | x, y)."""
    if len(factor_names) != 1:
        raise SemidisentError(
            "local_vae.objective = m2 classifies a dataset's one label column (MNIST, mnist5k, "
            f"SVHN, CIFAR-10, digits); this dataset has {len(factor_names)}: "
            f"{', '.join(factor_names)}"
        )
    column, k = factor_names[0], int(label_sizes[0])
    return Specification(
        "m2",
        (Variable("y", CATEGORICAL, k, label=column),
         Variable("style", GAUSSIAN, style, q_parents=("y",))),
        evaluations=("classification",),
        factor_names=tuple(factor_names),
    )  # fmt: skip


class LocalVAEMethod(Method):
    name = "local_vae"
    params_section = "local_vae"
    # Per-model values of the losses; decoder, likelihood and networks are structural.
    varying = ("beta", "m2_alpha")
    evaluations: ClassVar[tuple[str, ...]] = (
        "probes", "factor_metrics", "generation", "classification",
    )  # fmt: skip

    def stat_names(self) -> tuple[str, ...]:
        return STAT_NAMES

    def _check(self, p: LocalVAEParams, ctx: BuildContext) -> str:
        kind = network_kind(p, ctx.observation_shape)
        _, h, w = ctx.observation_shape
        if kind == "conv" and (h, w) != (64, 64):
            raise SemidisentError(
                f"local_vae.network = conv takes 64x64 images; the dataset has {h}x{w}: use mlp"
            )
        return kind

    def network_config(
        self, p: LocalVAEParams, ctx: BuildContext
    ) -> LocalVAEConfig | PSNetworkConfig:
        kind = self._check(p, ctx)
        c, h, w = ctx.observation_shape
        pixel = pixel_config(p, ctx.observation_shape).to_dict()
        if p.objective == "m2":
            spec = m2_spec(ctx.factor_names, ctx.label_sizes, ctx.model.num_latent)
            return PSNetworkConfig(
                in_channels=c, height=h, width=w, spec=spec.to_dict(),
                label_sizes=tuple(int(k) for k in ctx.label_sizes), network=kind,
                hidden=p.hidden, init=ctx.model.init, pixel=pixel,
            )  # fmt: skip
        # The disentanglement suite where the labels are several factors of a grid (dSprites).
        # Generation only with eval.generation = always (sampling 10,000 images pixel by pixel).
        grid = ("factor_metrics",) if len(ctx.factor_names) > 1 else ()
        evaluations = ("probes", *grid, "generation")
        return LocalVAEConfig(
            in_channels=c, height=h, width=w, num_latent=ctx.model.num_latent, network=kind,
            hidden=p.hidden, pixel=pixel, init=ctx.model.init, evaluations=evaluations,
        )  # fmt: skip

    def _network(self, p: LocalVAEParams, ctx: BuildContext, seed: int) -> nn.Module:
        config = self.network_config(p, ctx)
        # Built on the CPU with the global torch RNG forked, as the other families.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.network_from_config(config.to_dict())

    def build(self, spec: RunSpec, ctx: BuildContext) -> nn.Module:
        p: LocalVAEParams = spec.method
        network = self._network(p, ctx, spec.train.seed)
        if p.objective == "m2":
            # The reference's alpha = alpha_coef (N_u + N_l) / N_l on per-example means.
            m2_scale = ctx.num_unlabelled / max(ctx.num_labelled, 1)
            m2 = PartiallySpecifiedVAE(
                network,  # type: ignore[arg-type]
                "m2",
                1,
                ctx.label_sizes,
                m2_scale=m2_scale,
                labelled_weight=p.labelled_weight,
                amp_dtype=ctx.amp_dtype,
            )
            return LocalM2(m2)
        return LocalVAE(network, ctx.amp_dtype)  # type: ignore[arg-type]

    def hyper(self, spec: RunSpec) -> dict[str, float]:
        p: LocalVAEParams = spec.method
        # M2's module reads m2_alpha (and, unused by m2, alpha / temperature).
        return {"beta": p.beta, "m2_alpha": p.m2_alpha, "alpha": 0.0, "temperature": 1.0}

    def extra_uniforms(
        self,
        ctx: BuildContext,
        batch_size: int,
        labelled_batch_size: int,
        spec: RunSpec | None = None,
    ) -> int:
        p: LocalVAEParams = spec.method if spec is not None else LocalVAEParams()
        if p.objective != "m2":
            return 0  # the VAE's noise is the batch's eps_u
        # M2's normals: one style draw per enumerated class and example (methods/psvae).
        k = int(ctx.label_sizes[0])
        return (batch_size + labelled_batch_size) * k * ctx.model.num_latent

    def export(self, module: nn.Module) -> nn.Module:
        return module.network  # type: ignore[return-value]

    def network_from_config(self, config: dict[str, Any]) -> nn.Module:
        if "spec" in config:  # M2's network
            return PSNetwork(PSNetworkConfig(**config))
        return LocalVAENetwork(LocalVAEConfig(**config))

    # -- evaluation ---------------------------------------------------------------------------
    def evaluations_of(self, network: nn.Module) -> tuple[str, ...]:
        if isinstance(network, PSNetwork):
            return ("classification",)
        return tuple(network.config.evaluations)  # type: ignore[union-attr]

    def predictor(self, network: nn.Module, params: Any, device: str) -> Any:
        from ..psvae.inference import Predictor

        return Predictor(network, device, 8, params.eval.seed)  # type: ignore[arg-type]

    def probe_options(self, params: Any) -> dict[str, Any]:
        own = params.local_vae if params.model.name == self.name else LocalVAEParams()
        return {"linear": own.linear_probe}

    def random_network(self, params: Any, prepared: Any) -> nn.Module | None:
        ctx = BuildContext.for_prepared(params.model, prepared)
        return self._network(params.local_vae, ctx, params.train.seed).eval()

    def write_pictures(
        self, network: nn.Module, dataset: Any, out_dir: Any, details: dict, seed: int
    ) -> list[Any]:
        if isinstance(network, PSNetwork):
            from ..psvae.pictures import write_pictures as ps_pictures

            return ps_pictures(network, dataset, out_dir, details, seed=seed)
        from .pictures import write_pictures

        return write_pictures(network, dataset, out_dir, details, seed=seed)  # type: ignore[arg-type]
