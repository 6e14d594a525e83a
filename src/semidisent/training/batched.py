"""K models trained as one: stacked parameters, ``torch.func.functional_call`` under ``vmap``.

The K configurations share the architecture and the structural choices of the objective
(supervised loss, reductions, replacement unit and target, batch sizes) and may differ in seed,
learning rate and the family's per-model hyper-parameters (beta, gamma_sup with its schedule,
replacement rate, ...), which enter the step as (K,) tensors. Parameters are stacked along a
new leading dimension; vmap turns each convolution into one grouped convolution over the K models
and each linear layer into a batched matmul, so K small models fill the device like one large
one.

Each model draws its own data and noise from its own seed (the counter-based generator keyed by
seed), so model k of a batched run sees exactly the batches, noise and initial weights of a
separate run with that configuration: results equal K separate runs up to floating-point
reassociation in the grouped kernels. The labelled batch is the same for every model (the pool
is cycled in order) and is passed once, unbatched.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..objectives.s2vae import ModelBatch
from .sampler import Batch
from .step import model_batch


class BatchedModel:
    batched = True

    def __init__(self, modules: Sequence[nn.Module], device: torch.device):
        if len(modules) < 2:
            raise ValueError("a batched model needs at least 2 models; use SingleModel")
        self.num_models = len(modules)
        params, _ = stack_module_state(list(modules))
        self.params = {n: p.detach().to(device).requires_grad_(True) for n, p in params.items()}
        # The template whose code (and non-trainable buffers: label sizes) functional_call runs.
        self.base = copy.deepcopy(modules[0]).to(device)

    def forward(
        self,
        params: dict[str, torch.Tensor],
        batch: Batch,
        hyper: dict[str, torch.Tensor],
        step: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        def one(p, mb, h):
            return functional_call(self.base, p, (mb, h, step))

        x_l_dim = 0 if batch.x_l.dim() == 5 else None
        # The K dimension of every per-model input; labels and observed flags are shared.
        dims = ModelBatch(0, x_l_dim, None, None, 0, 0, 0, 0)
        return vmap(one, in_dims=(0, dims, 0))(params, model_batch(batch, None), hyper)

    def modules(self) -> list[nn.Module]:
        """The K models as ordinary modules (CPU copies of the current parameters)."""
        out = []
        template = copy.deepcopy(self.base).cpu()
        for k in range(self.num_models):
            m = copy.deepcopy(template)
            # Buffers (constant during training: label sizes, St-RKM's fitted statistics) are
            # the template's.
            state = m.state_dict()
            state.update({n: p[k].detach().cpu() for n, p in self.params.items()})
            m.load_state_dict(state)
            out.append(m.eval())
        return out
