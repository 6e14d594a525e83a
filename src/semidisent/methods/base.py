"""The interface every model family implements once, and that the trainer, the batched and
compiled paths, checkpoints, the stages, search, study, Kubeflow and MLflow serve
(docs/architecture.md).

A :class:`Method` is a factory and a description; the work happens in the module it builds,
whose ``forward(batch, hyper, step) -> (loss, stats)`` is a pure function of its parameters, the
batch, the random numbers in the batch, the per-model hyper-parameters and the step counter
(a tensor): that is what lets the trainer run it eagerly, compiled, captured as a CUDA graph and
vmapped over K stacked models without knowing which family it is. The method says:

- its params section (``params_section``, a frozen dataclass validated like every section) and
  which keys may differ between the models of one batched run (``varying``); the others are
  structural and group configurations into separate runs;
- the per-model hyper-parameters the loss reads (:meth:`hyper`), as floats per configuration;
- its parameter groups and their optimisers (:meth:`param_groups`): the trainer differentiates
  the returned loss once and gives each group the gradient of its parameters; a family with a
  network of its own (FactorVAE's discriminator) arranges its losses so that each group's
  gradient is its own loss's (detached inputs / parameters);
- how many extra uniforms its step consumes (:meth:`extra_uniforms`: shuffles, ...), drawn from
  the same counter-based stream as everything else;
- what is exported for evaluation (:meth:`export`: the network whose representation the metrics
  score), which evaluations apply (``evaluations``, per network: :meth:`evaluations_of`), and
  optional hooks: a graph-safe tensor update after each step (:meth:`after_step`), a host-side
  step after training (:meth:`after_training`), and for the evaluate stage the classifier of the
  "classification" evaluation (:meth:`predictor`), the random-encoder baseline
  (:meth:`random_network`) and the pictures (:meth:`write_pictures`).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..config.schema import ModelParams, TrainParams


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimiser of a parameter group: ``kind`` names an update of ``training.optim``."""

    kind: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    # None: the model's train.lr (may differ between batched models); a number: fixed.
    lr: float | None = None


@dataclass(frozen=True)
class ParamGroup:
    """The parameters whose names start with one of ``prefixes`` (``("",)``: all the others)."""

    name: str
    prefixes: tuple[str, ...]
    optimizer: OptimizerSpec = OptimizerSpec()

    def owns(self, parameter_name: str) -> bool:
        return any(parameter_name.startswith(p) for p in self.prefixes if p)


@dataclass(frozen=True)
class RunSpec:
    """One model to train: the train section and the family's own params (None when the family
    has no section)."""

    train: TrainParams
    method: Any = None


@dataclass(frozen=True)
class BuildContext:
    """What a method needs to build its module, the same for every model of a batched run."""

    model: ModelParams
    label_sizes: tuple[int, ...]
    in_channels: int
    amp_dtype: torch.dtype | None
    # False when no model of the run can have a non-zero labelled term (skips its decoder pass).
    decode_labelled: bool
    # Whether every label entry of the pool is observed (no partial labeller).
    all_labels_observed: bool = True
    # The dataset's observations (C, H, W): a family checks the sizes its networks take.
    observation_shape: tuple[int, int, int] = (1, 64, 64)
    # The label columns (factor names, the mask's order), the rows the unlabelled stream draws
    # from and the labelled pool's training rows (a family may scale its terms by them).
    factor_names: tuple[str, ...] = ()
    num_unlabelled: int = 0
    num_labelled: int = 0

    @classmethod
    def for_prepared(cls, model: ModelParams, prepared: Any) -> BuildContext:
        """The context of a network built outside training (the evaluate stage's random-encoder
        baseline): the prepared dataset's shapes and label columns, float32, no labelled pass."""
        dataset, mask = prepared.dataset, prepared.mask
        return cls(
            model=model,
            label_sizes=tuple(int(k) for k in mask.label_sizes),
            in_channels=int(dataset.observation_shape[0]),
            amp_dtype=None,
            decode_labelled=False,
            observation_shape=tuple(int(d) for d in dataset.observation_shape),  # type: ignore[arg-type]
            factor_names=tuple(mask.factor_names),
        )


class Method(abc.ABC):
    """A model family (see the module docstring)."""

    name: ClassVar[str]
    # The params.yaml section of its own keys (None: the family has none).
    params_section: ClassVar[str | None] = None
    # Keys of that section that may differ between the models of one batched run.
    varying: ClassVar[tuple[str, ...]] = ()
    # Evaluations that apply to the exported network: "factor_metrics" (the disentanglement
    # suite and the few-label scores), "generation" (sample quality: metrics/generation.py),
    # "classification", "probes" (linear / MLP probes on the encoder mean: metrics/probes.py).
    evaluations: ClassVar[tuple[str, ...]] = ("factor_metrics", "generation")
    # Whether eval.generation = auto scores generation for this family (a generative model by
    # design); "always" scores it for every family that lists "generation".
    generation_default: ClassVar[bool] = False

    @abc.abstractmethod
    def stat_names(self) -> tuple[str, ...]:
        """The statistics its forward returns, in order ("loss" first)."""

    @abc.abstractmethod
    def build(self, spec: RunSpec, ctx: BuildContext) -> nn.Module:
        """The module of one model (initial weights from ``spec.train.seed``, built on the CPU)."""

    @abc.abstractmethod
    def hyper(self, spec: RunSpec) -> dict[str, float]:
        """The per-model values the loss reads (same keys for every spec of a run)."""

    def param_groups(self, spec: RunSpec) -> Sequence[ParamGroup]:
        """Parameter groups and optimisers; default: everything with Adam at train.lr."""
        return (ParamGroup("model", ("",)),)

    def extra_uniforms(
        self,
        ctx: BuildContext,
        batch_size: int,
        labelled_batch_size: int,
        spec: RunSpec | None = None,
    ) -> int:
        """Extra U(0, 1) draws per model and step (``batch.u_extra``); ``spec``: the run's first
        configuration (its structural keys are every model's)."""
        return 0

    def export(self, module: nn.Module) -> nn.Module:
        """The network evaluated and written to the model file."""
        return module

    def network_from_config(self, config: dict[str, Any]) -> nn.Module:
        """The exported network rebuilt from its config (what the model file stores); default:
        the disentanglement_lib VAE."""
        from ..models.vae import VAE, VAEConfig

        return VAE(VAEConfig(**config))

    def export_state(self, module: nn.Module) -> dict[str, Any]:
        """Learned values worth recording beside the model (plain lists)."""
        return {}

    def after_step(self, module_params: dict[str, torch.Tensor], step: torch.Tensor) -> None:
        """An in-place, graph-safe tensor update after each optimiser step (default: none)."""
        return None

    def after_training(self, module: nn.Module, prepared: Any) -> None:
        """A host-side step on the trained module, before it is exported (default: none)."""
        return None

    # -- evaluation (the evaluate stage) -------------------------------------------------------
    def evaluations_of(self, network: nn.Module) -> tuple[str, ...]:
        """The evaluations of one exported network (default: the family's ``evaluations``; a
        family whose networks differ in what they model may say per network)."""
        return self.evaluations

    def predictor(self, network: nn.Module, params: Any, device: str) -> Any:
        """For the "classification" evaluation: ``fn(x uint8 (n, C, H, W)) -> {factor name:
        {inference name: predicted labels (n,)}}`` (``metrics/classification.py``); None when
        the family does not classify."""
        return None

    @torch.no_grad()
    def decode_images(
        self, network: nn.Module, codes: torch.Tensor, batch: int = 1024
    ) -> torch.Tensor:
        """sigmoid(network.decode(codes)) as float32 images (n, C, H, W) on the CPU."""
        device = next(network.parameters()).device
        out = [
            torch.sigmoid(network.decode(codes[i : i + batch].to(device)).float()).cpu()  # type: ignore[operator]
            for i in range(0, len(codes), batch)
        ]
        return torch.cat(out)

    def generate(self, network: nn.Module, n: int, seed: int) -> torch.Tensor:
        """``n`` images (n, C, H, W) float32 in [0, 1] from the family's generative model, for the
        "generation" evaluation; default: decoder means at z ~ N(0, I) (a VAE's prior)."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, network.num_latent, generator=g)  # type: ignore[arg-type]
        return self.decode_images(network, z)

    def probe_options(self, params: Any) -> dict[str, Any]:
        """Keyword options of the "probes" evaluation (``metrics/probes.py probe_scores``: the
        linear classifier) from the params; default: none."""
        return {}

    def random_network(self, params: Any, prepared: Any) -> nn.Module | None:
        """The family's exported network freshly initialised from the params (seed
        ``train.seed``) for the prepared dataset: the random-encoder baseline. None: the
        evaluate stage's disentanglement_lib VAE from the model params."""
        return None

    def write_pictures(
        self, network: nn.Module, dataset: Any, out_dir: Any, details: dict, seed: int
    ) -> list[Any]:
        """The evaluate stage's pictures (default: reconstructions, prior samples, traversals
        and the factor heat maps of ``stages/pictures.py``)."""
        from ..stages.pictures import write_pictures

        return write_pictures(network, dataset, out_dir, details, seed=seed)
