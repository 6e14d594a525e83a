"""disentanglement_lib's semi-supervised family as methods (``model.name``): the beta-VAE
(``s2vae``, the project's original model), FactorVAE, beta-TCVAE, DIP-VAE (i / ii), MINE, the
AnnealedVAE capacity schedule and the supervised baseline, each with every supervised
regulariser, the gamma_sup schedules and label replacement (``train.*``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ...errors import ParamsError, SemidisentError
from ...models.vae import VAE
from ...objectives.s2vae import SemiSupervisedVAE
from ...objectives.schedule import SCHEDULE_CODES
from ..base import BuildContext, Method, OptimizerSpec, ParamGroup, RunSpec
from .models import DIPVAE, AnnealedVAE, BetaTCVAE, FactorVAE, MineVAE, SupervisedVAE
from .params import AnnealedVAEParams, DIPVAEParams, FactorVAEParams, MineVAEParams


class S2Method(Method):
    """``s2vae``: the semi-supervised beta-VAE; the base of the family's other members."""

    name = "s2vae"
    model_cls: ClassVar[type[SemiSupervisedVAE]] = SemiSupervisedVAE

    def stat_names(self) -> tuple[str, ...]:
        return self.model_cls.stat_names

    def build(self, spec: RunSpec, ctx: BuildContext) -> nn.Module:
        from ...training.step import objective_config, vae_config

        if ctx.observation_shape[1:] != (64, 64):
            h, w = ctx.observation_shape[1:]
            raise SemidisentError(
                f"the disentanglement_lib VAE takes 64x64 images; the dataset has {h}x{w}: "
                "choose a 64x64 dataset (data.dataset)"
            )
        objective = objective_config(
            spec.train, ctx.label_sizes, ctx.decode_labelled, ctx.amp_dtype
        )
        # Built on the CPU with the global torch RNG forked: every device starts from the same
        # weights, and the caller's RNG is left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.train.seed)
            vae = VAE(vae_config(ctx.model, ctx.in_channels))
            return self.make(vae, objective, spec, ctx)

    def make(self, vae: VAE, objective: Any, spec: RunSpec, ctx: BuildContext) -> SemiSupervisedVAE:
        return self.model_cls(vae, objective)

    def hyper(self, spec: RunSpec) -> dict[str, float]:
        t = spec.train
        return {
            "beta": t.beta,
            "gamma_sup": t.gamma_sup,
            "gamma_code": SCHEDULE_CODES[t.gamma_schedule],
            "gamma_threshold": t.gamma_threshold,
            "rate": t.replacement_rate,
        }

    def export(self, module: nn.Module) -> nn.Module:
        return module.vae  # type: ignore[return-value]

    def export_state(self, module: nn.Module) -> dict[str, Any]:
        return module.objective_state()  # type: ignore[operator]


class BetaTCMethod(S2Method):
    name = "s2_beta_tc_vae"
    model_cls = BetaTCVAE


class SupervisedMethod(S2Method):
    name = "supervised"
    model_cls = SupervisedVAE


class DIPMethod(S2Method):
    name = "s2_dip_vae"
    model_cls = DIPVAE
    params_section = "s2_dip_vae"
    varying = ("lambda_od", "lambda_d_factor")

    def make(self, vae, objective, spec, ctx):
        return DIPVAE(vae, objective, spec.method.dip_type)

    def hyper(self, spec: RunSpec) -> dict[str, float]:
        p: DIPVAEParams = spec.method
        return {
            **super().hyper(spec),
            "lambda_od": p.lambda_od,
            "lambda_d_factor": p.lambda_d_factor,
        }


class AnnealedMethod(S2Method):
    name = "s2_annealed_vae"
    model_cls = AnnealedVAE
    params_section = "s2_annealed_vae"
    varying = ("gamma", "c_max", "iteration_threshold")

    def hyper(self, spec: RunSpec) -> dict[str, float]:
        p: AnnealedVAEParams = spec.method
        return {
            **super().hyper(spec),
            "annealed_gamma": p.gamma,
            "c_max": p.c_max,
            "iteration_threshold": p.iteration_threshold,
        }


class FactorMethod(S2Method):
    name = "s2_factor_vae"
    model_cls = FactorVAE
    params_section = "s2_factor_vae"
    varying = ("gamma",)

    def make(self, vae, objective, spec, ctx):
        p: FactorVAEParams = spec.method
        return FactorVAE(
            vae, objective, p.discriminator_layers, p.discriminator_units, ctx.model.init
        )

    def hyper(self, spec: RunSpec) -> dict[str, float]:
        return {**super().hyper(spec), "gamma": spec.method.gamma}

    def param_groups(self, spec: RunSpec) -> Sequence[ParamGroup]:
        p: FactorVAEParams = spec.method
        adam = OptimizerSpec(
            betas=(p.discriminator_beta1, p.discriminator_beta2), lr=p.discriminator_lr
        )
        return (ParamGroup("model", ("",)), ParamGroup("discriminator", ("discriminator.",), adam))

    def extra_uniforms(self, ctx, batch_size, labelled_batch_size, spec=None) -> int:
        return batch_size * ctx.model.num_latent  # one shuffle per latent dimension


class MineMethod(S2Method):
    name = "s2_mine_vae"
    model_cls = MineVAE
    params_section = "s2_mine_vae"

    def make(self, vae, objective, spec, ctx):
        if not ctx.all_labels_observed:
            raise ParamsError(
                "model.name = s2_mine_vae needs every label entry observed (its MINE estimates "
                "pair each latent with whole label columns): use a perfect, binned or noisy "
                "supervision.labeller"
            )
        return MineVAE(vae, objective, spec.method.estimator_units, ctx.model.init)

    def param_groups(self, spec: RunSpec) -> Sequence[ParamGroup]:
        adam = OptimizerSpec(lr=spec.method.estimator_lr)  # TF's Adam defaults otherwise
        return (ParamGroup("model", ("",)), ParamGroup("estimators", ("estimators.",), adam))

    def extra_uniforms(self, ctx, batch_size, labelled_batch_size, spec=None) -> int:
        pairs = len(ctx.label_sizes) * ctx.model.num_latent
        return pairs * labelled_batch_size  # one label shuffle per (factor, latent) pair


S2_METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        S2Method(),
        FactorMethod(),
        BetaTCMethod(),
        DIPMethod(),
        MineMethod(),
        AnnealedMethod(),
        SupervisedMethod(),
    )
}
# The params dataclass of each section (the params schema builds its sections from these).
S2_SECTIONS = {
    "s2_factor_vae": FactorVAEParams,
    "s2_dip_vae": DIPVAEParams,
    "s2_annealed_vae": AnnealedVAEParams,
    "s2_mine_vae": MineVAEParams,
}
