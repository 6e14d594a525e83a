"""One training step for one model or K stacked models, as in-place updates of device tensors.

:class:`Stepper` owns every piece of mutable training state as a tensor on the device: the
parameters, Adam's moments and step counts, the step counter, the loss accumulators, the
first-non-finite-step record and the per-model active switch. :meth:`Stepper.step_body` draws the
batch (from the step counter: no host input), computes the K losses, their gradients and the
Adam update, and accumulates the statistics, all in place and without reading anything back to
the host. That makes the same body runnable eagerly (CPU, debugging), compiled, or captured once
and replayed as a CUDA graph (:mod:`.fast`). Statistics are read every ``log_every`` steps.

The K models are either one ordinary module (:class:`SingleModel`) or K modules stacked into
one vmapped model (:class:`semidisent.training.batched.BatchedModel`); the step is the same.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from ..config.schema import ModelParams, TrainParams
from ..models.vae import VAE, VAEConfig
from ..objectives.s2vae import STAT_NAMES, ObjectiveConfig, SemiSupervisedVAE
from ..objectives.schedule import SCHEDULE_CODES, gamma_at
from .optim import adam_step
from .rng import make_key
from .sampler import Batch, DeviceData

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


def build_model(config: VAEConfig, objective: ObjectiveConfig, seed: int) -> SemiSupervisedVAE:
    """The initial model of seed ``seed``, built on the CPU so that every device starts from the
    same weights; the global torch RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SemiSupervisedVAE(VAE(config), objective)


class ModelSet(Protocol):
    """K models behind one forward: losses (K,) and statistics (K, len(STAT_NAMES))."""

    batched: bool
    num_models: int
    params: dict[str, torch.Tensor]

    def forward(
        self,
        params: dict[str, torch.Tensor],
        batch: Batch,
        beta: torch.Tensor,
        gamma: torch.Tensor,
        rate: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def modules(self) -> list[SemiSupervisedVAE]: ...


class SingleModel:
    """One model: the module's own parameters, no vmap (the plain path)."""

    batched = False
    num_models = 1

    def __init__(self, module: SemiSupervisedVAE, device: torch.device):
        self.module = module.to(device)
        self.params = dict(self.module.named_parameters())

    def forward(self, params, batch, beta, gamma, rate):
        x_l = batch.x_l if batch.x_l.dim() == 4 else batch.x_l[0]
        loss, stats = self.module(
            batch.x_u[0],
            x_l,
            batch.y_l,
            batch.obs_l,
            batch.eps_u[0],
            batch.eps_l[0],
            batch.u_rep[0],
            beta[0],
            gamma[0],
            rate[0],
        )
        return loss[None], stats[None]

    def modules(self) -> list[SemiSupervisedVAE]:
        return [copy.deepcopy(self.module).cpu().eval()]


class Stepper:
    def __init__(
        self,
        model: ModelSet,
        data: DeviceData,
        configs: Sequence[TrainParams],
        device: torch.device,
    ):
        if len(configs) != model.num_models:
            raise ValueError(f"{len(configs)} configurations for {model.num_models} models")
        k = model.num_models
        self.model = model
        self.data = data
        self.device = device
        self.num_models = k
        self.params = model.params
        self.exp_avg = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in self.params.items()}

        def vec(values, dtype=torch.float32) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        self.adam_count = vec([0.0] * k)
        self.step = torch.zeros((), dtype=torch.int64, device=device)
        self.acc = torch.zeros(k, len(STAT_NAMES), dtype=torch.float32, device=device)
        self.bad_step = torch.full((k,), -1, dtype=torch.int64, device=device)
        self.active = torch.ones(k, dtype=torch.bool, device=device)
        self.keys = vec([make_key(c.seed, DATA_STREAM) for c in configs], torch.int64)
        self.beta = vec([c.beta for c in configs])
        self.gamma = vec([c.gamma_sup for c in configs])
        self.gamma_code = vec([SCHEDULE_CODES[c.gamma_schedule] for c in configs], torch.int64)
        self.gamma_threshold = vec([c.gamma_threshold for c in configs], torch.int64)
        self.rate = vec([c.replacement_rate for c in configs])
        self.lr = vec([c.lr for c in configs])
        self.variant_keys = vec([make_key(c.seed, VARIANT_STREAM) for c in configs], torch.int64)
        # Replaced by compiled versions on the fast path (see .fast).
        self.draw = data.draw
        self.forward = model.forward
        self.update = adam_step
        self.graph: torch.cuda.CUDAGraph | None = None

    # -- the step ---------------------------------------------------------------------------
    def step_body(self) -> None:
        """One training step of every model, in place, with no host synchronisation."""
        batch = self.draw(self.keys, self.step)
        batch = self.data.apply_variant(batch, self.variant_keys, self.step)
        gamma = gamma_at(self.step, self.gamma, self.gamma_code, self.gamma_threshold)
        losses, stats = self.forward(self.params, batch, self.beta, gamma, self.rate)
        names = list(self.params)
        grads = torch.autograd.grad(
            losses.sum(), [self.params[n] for n in names], allow_unused=True
        )
        self.update(
            [self.params[n] for n in names],
            list(grads),
            [self.exp_avg[n] for n in names],
            [self.exp_avg_sq[n] for n in names],
            self.adam_count,
            self.lr,
            self.active,
            self.model.batched,
        )
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

    def models(self) -> list[SemiSupervisedVAE]:
        return self.model.modules()

    # -- state ------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every mutable tensor of the run (what a checkpoint and a graph warm-up must restore)."""
        out: dict[str, torch.Tensor] = {}
        for n, p in self.params.items():
            out[f"params/{n}"] = p
            out[f"exp_avg/{n}"] = self.exp_avg[n]
            out[f"exp_avg_sq/{n}"] = self.exp_avg_sq[n]
        out["adam_count"] = self.adam_count
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
