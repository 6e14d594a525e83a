"""One training step for one model or K stacked models, as in-place updates of device tensors.

:class:`Stepper` owns every piece of mutable training state as a tensor on the device: the
parameters, Adam's moments and step counts, the step counter, the loss accumulators, the
first-non-finite-step record and the per-model active switch. :meth:`Stepper.step_body` draws the
batch (from the step counter: no host input), computes the K losses, their gradients and the
Adam update, and accumulates the statistics, all in place and without reading anything back to
the host. That makes the same body runnable eagerly (CPU, debugging), compiled, or captured once
and replayed as a CUDA graph (:mod:`.fast`). Statistics are read every ``log_every`` steps.

The K models are either one ordinary module (:class:`SingleModel`) or K modules stacked into
one vmapped model (:class:`semidisent.training.batched.BatchedModel`); the step is the same. The
modules come from a :class:`~semidisent.methods.base.Method` (the model family): the step only
knows its forward ``(batch, hyper, step) -> (loss, stats)``, its per-model hyper-parameters
(``hyper``: a dict of (K,) tensors) and its parameter groups, each updated by its own optimiser
(``training.optim``) from the one backward pass.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..config.schema import ModelParams, TrainParams
from ..methods.base import Method, RunSpec
from ..models.vae import VAEConfig
from ..objectives.s2vae import ModelBatch, ObjectiveConfig
from .cayley import cayley_adam_step, second_moment_shape
from .optim import adam_step, sgd_step
from .rng import make_key
from .sampler import Batch, DeviceData

# The parameter-group updates by ``OptimizerSpec.kind`` (same signature, in place).
UPDATES = {"adam": adam_step, "cayley_adam": cayley_adam_step, "sgd": sgd_step}

# Independent random streams derived from train.seed (model init uses the seed directly).
DATA_STREAM = 1
VARIANT_STREAM = 2


def objective_config(
    tp: TrainParams,
    label_sizes: Sequence[int],
    decode_labelled: bool,
    amp_dtype: torch.dtype | None,
) -> ObjectiveConfig:
    return ObjectiveConfig(
        label_sizes=tuple(int(k) for k in label_sizes),
        supervised_loss=tp.supervised_loss,
        sup_reduction=tp.sup_reduction,
        replacement_unit=tp.replacement_unit,
        replacement_target=tp.replacement_target,
        embed_sigma=tp.embed_sigma,
        embed_learn_sigma=tp.embed_learn_sigma,
        labelled_recon=tp.labelled_recon,
        labelled_weight=tp.labelled_weight,
        replacement_noise=tp.replacement_noise,
        decode_labelled=decode_labelled,
        amp_dtype=amp_dtype,
    )


def _hyper_dtype(value: float | int) -> torch.dtype:
    """int64 for integer hyper-parameters (schedule codes, thresholds), else float32."""
    return torch.int64 if isinstance(value, int) and not isinstance(value, bool) else torch.float32


def decodes_labelled(configs: Sequence[TrainParams]) -> bool:
    """Whether the labelled term can be non-zero for any model of one batched group (the
    structural keys labelled_recon and labelled_weight are equal across a group)."""
    first = configs[0]
    if first.labelled_weight == 0.0:
        return False
    return first.labelled_recon == "all" or any(c.replacement_rate > 0 for c in configs)


def vae_config(mp: ModelParams, in_channels: int) -> VAEConfig:
    return VAEConfig(
        in_channels=in_channels,
        image_size=64,
        num_latent=mp.num_latent,
        encoder_kernel=mp.encoder_kernel,
        init=mp.init,
    )


class ModelSet(Protocol):
    """K models behind one forward: losses (K,) and statistics (K, len(stat_names))."""

    batched: bool
    num_models: int
    params: dict[str, torch.Tensor]

    def forward(
        self,
        params: dict[str, torch.Tensor],
        batch: Batch,
        hyper: dict[str, torch.Tensor],
        step: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def modules(self) -> list[nn.Module]: ...


def model_batch(batch: Batch, k: int | None) -> ModelBatch:
    """Model ``k``'s slice of a batch (``k`` None: the batch of one vmapped model, whose K
    dimension vmap removes)."""
    x_l = batch.x_l if batch.x_l.dim() == 4 or k is None else batch.x_l[k]
    if k is None:
        return ModelBatch(batch.x_u, x_l, batch.y_l, batch.obs_l, batch.eps_u, batch.eps_l,
                          batch.u_rep, batch.u_extra)  # fmt: skip
    return ModelBatch(batch.x_u[k], x_l, batch.y_l, batch.obs_l, batch.eps_u[k], batch.eps_l[k],
                      batch.u_rep[k], batch.u_extra[k])  # fmt: skip


class SingleModel:
    """One model: the module's own parameters, no vmap (the plain path)."""

    batched = False
    num_models = 1

    def __init__(self, module: nn.Module, device: torch.device):
        self.module = module.to(device)
        self.params = dict(self.module.named_parameters())

    def forward(self, params, batch, hyper, step):
        loss, stats = self.module(model_batch(batch, 0), {k: v[0] for k, v in hyper.items()}, step)
        return loss[None], stats[None]

    def modules(self) -> list[nn.Module]:
        return [copy.deepcopy(self.module).cpu().eval()]


class Stepper:
    def __init__(
        self,
        model: ModelSet,
        data: DeviceData,
        configs: Sequence[RunSpec],
        device: torch.device,
        method: Method,
    ):
        if len(configs) != model.num_models:
            raise ValueError(f"{len(configs)} configurations for {model.num_models} models")
        k = model.num_models
        self.model = model
        self.data = data
        self.device = device
        self.num_models = k
        self.method = method
        self.stat_names = method.stat_names()
        self.params = model.params
        self.groups = list(method.param_groups(configs[0]))
        unknown = {g.optimizer.kind for g in self.groups} - set(UPDATES)
        if unknown:
            raise ValueError(f"{method.name}: unknown optimiser kind {sorted(unknown)}")

        def vec(values, dtype=torch.float32) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        # Parameter groups: each parameter belongs to the first group with a matching prefix,
        # else to the group whose prefixes are ("",); each group has its optimiser, its
        # learning rate per model and its own step counts.
        fallback = [g for g in self.groups if "" in g.prefixes]
        if len(fallback) != 1:
            raise ValueError(f"{method.name}: exactly one parameter group must own the rest")
        self.group_of = {
            n: next((g.name for g in self.groups if g.owns(n)), fallback[0].name)
            for n in self.params
        }
        kind = {g.name: g.optimizer.kind for g in self.groups}
        self.exp_avg = {n: torch.zeros_like(p) for n, p in self.params.items()}
        # Cayley ADAM's second moment is one number per model (training/cayley.py).
        self.exp_avg_sq = {
            n: torch.zeros(second_moment_shape(p, model.batched), dtype=p.dtype, device=p.device)
            if kind[self.group_of[n]] == "cayley_adam"
            else torch.zeros_like(p)
            for n, p in self.params.items()
        }
        self.lr = {
            g.name: vec([c.train.lr if g.optimizer.lr is None else g.optimizer.lr for c in configs])
            for g in self.groups
        }
        self.adam_count = {g.name: vec([0.0] * k) for g in self.groups}
        self.step = torch.zeros((), dtype=torch.int64, device=device)
        self.acc = torch.zeros(k, len(self.stat_names), dtype=torch.float32, device=device)
        self.bad_step = torch.full((k,), -1, dtype=torch.int64, device=device)
        self.active = torch.ones(k, dtype=torch.bool, device=device)
        self.keys = vec([make_key(c.train.seed, DATA_STREAM) for c in configs], torch.int64)
        self.variant_keys = vec(
            [make_key(c.train.seed, VARIANT_STREAM) for c in configs], torch.int64
        )
        values = [method.hyper(c) for c in configs]
        self.hyper = {
            name: vec([v[name] for v in values], _hyper_dtype(values[0][name]))
            for name in values[0]
        }
        # Replaced by compiled versions on the fast path (see .fast).
        self.draw = data.draw
        self.forward = model.forward
        self.updates = dict(UPDATES)
        self.graph: torch.cuda.CUDAGraph | None = None

    # -- the step ---------------------------------------------------------------------------
    def step_body(self) -> None:
        """One training step of every model, in place, with no host synchronisation."""
        batch = self.draw(self.keys, self.step)
        batch = self.data.apply_variant(batch, self.variant_keys, self.step)
        losses, stats = self.forward(self.params, batch, self.hyper, self.step)
        names = list(self.params)
        grads = dict(
            zip(
                names,
                torch.autograd.grad(
                    losses.sum(), [self.params[n] for n in names], allow_unused=True
                ),
                strict=True,
            )
        )
        for g in self.groups:
            members = [n for n in names if self.group_of[n] == g.name]
            opt = g.optimizer
            self.updates[opt.kind](
                [self.params[n] for n in members],
                [grads[n] for n in members],
                [self.exp_avg[n] for n in members],
                [self.exp_avg_sq[n] for n in members],
                self.adam_count[g.name],
                self.lr[g.name],
                self.active,
                self.model.batched,
                opt.betas,
                opt.eps,
            )
        self.method.after_step(self.params, self.step)
        with torch.no_grad():
            self.acc.add_(torch.where(self.active[:, None], stats, 0.0))
            newly_bad = ~torch.isfinite(losses) & self.active & (self.bad_step < 0)
            self.bad_step.copy_(torch.where(newly_bad, self.step, self.bad_step))
            self.step.add_(1)

    def run(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.step_body()

    # -- reading and controlling ------------------------------------------------------------
    def read_window(self, steps_in_window: int) -> np.ndarray:
        """Mean statistics (K, len(STAT_NAMES)) since the last read; resets the accumulator.
        This is the one host synchronisation of the loop."""
        values = (self.acc / max(steps_in_window, 1)).cpu().numpy()
        self.acc.zero_()
        return values

    def read_bad_steps(self) -> np.ndarray:
        return self.bad_step.cpu().numpy()

    def deactivate(self, index: int) -> None:
        self.active[index] = False

    def models(self) -> list[nn.Module]:
        return self.model.modules()

    # -- state ------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every mutable tensor of the run (what a checkpoint and a graph warm-up must restore)."""
        out: dict[str, torch.Tensor] = {}
        for n, p in self.params.items():
            out[f"params/{n}"] = p
            out[f"exp_avg/{n}"] = self.exp_avg[n]
            out[f"exp_avg_sq/{n}"] = self.exp_avg_sq[n]
        for g, count in self.adam_count.items():
            # The first group keeps the name single-optimiser checkpoints used.
            out["adam_count" if g == self.groups[0].name else f"adam_count/{g}"] = count
        out["step"] = self.step
        out["acc"] = self.acc
        out["bad_step"] = self.bad_step
        out["active"] = self.active
        return out

    def state_dict(self) -> dict:
        # Every random number of the step comes from the counter-based stream (the step
        # counter is one of these tensors): no generator state to save.
        return {"tensors": {k: v.detach().cpu().clone() for k, v in self.state_tensors().items()}}

    def load_state_dict(self, state: dict) -> None:
        """Copy a saved state into the existing tensors (in place: a captured graph stays valid)."""
        tensors = self.state_tensors()
        missing = set(tensors) ^ set(state["tensors"])
        if missing:
            raise ValueError(f"checkpoint state does not match the model: {sorted(missing)[:5]}")
        with torch.no_grad():
            for k, v in tensors.items():
                v.copy_(state["tensors"][k].to(v.device))

    @property
    def step_count(self) -> int:
        return int(self.step.item())
