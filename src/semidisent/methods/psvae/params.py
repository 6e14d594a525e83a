"""The ``ps_vae`` params.yaml section: the specification, the objective (Siddharth et al.'s
importance-sampled one, or Kingma et al.'s M2 with y enumerated) and their constants.

Defaults are the reference notebook's (probtorch ``examples/mnist-semisupervised.ipynb``):
Concrete temperature 0.66, 8 samples, alpha 0.1, hidden layer 256, style 50. Train keys that
apply: seed, steps, batch_size, labelled_batch_size, lr, device, fast, amp and the log /
checkpoint intervals; the semi-supervised family's objective keys (beta, gamma_sup, the
supervised regulariser, replacement) do not (docs/psvae.md). Torch-free: the params schema
imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ...config.validation import check, non_negative, positive
from .spec import (
    BUILT_IN,
    DEFAULT_STYLE,
    EVALUATIONS,
    SpecError,
    Specification,
    Variable,
    auto_spec_name,
)


@dataclass(frozen=True)
class VariableParams:
    """One declared variable of a custom specification (``ps_vae.spec: custom``)."""

    name: str
    kind: Literal["categorical", "gaussian"]
    size: int = field(metadata=check(positive))
    # The label column (factor name) that supervises it; null: an unsupervised style variable.
    label: str | None = None
    q_parents: tuple[str, ...] = ()
    p_parents: tuple[str, ...] = ()


@dataclass(frozen=True)
class PSVAEParams:
    """ps_vae: the partially-specified semi-supervised VAE (Siddharth et al., NeurIPS 2017)."""

    # siddharth: unlabelled ELBO with relaxed discrete variables, labelled term by importance
    # sampling + alpha log q(y|x); m2: Kingma et al.'s M2 (y enumerated; same networks).
    objective: Literal["siddharth", "m2"] = "siddharth"
    # auto: the built-in whose label columns the dataset has (mnist, dsprites, faces);
    # custom: the variables declared below.
    spec: Literal["auto", "mnist", "dsprites", "faces", "custom"] = "auto"
    variables: tuple[VariableParams, ...] = ()
    # p's generation order of a custom specification ([]: the declared order).
    p_order: tuple[str, ...] = ()
    # The unsupervised style gaussian's size: null = the built-in's (mnist 50, others none).
    style_size: int | None = field(default=None, metadata=check(non_negative))
    # Evaluations of the trained model ([]: the specification's own).
    evaluations: tuple[Literal["classification", "factor_metrics"], ...] = ()
    # Concrete temperature of the relaxed categorical variables (q and p), training only.
    temperature: float = field(default=0.66, metadata=check(positive))
    # Importance samples per example (siddharth: S; m2 draws one z per enumerated class).
    samples: int = field(default=8, metadata=check(positive))
    # Weight of log q(y_observed | x) in the labelled term (Siddharth et al.'s alpha).
    alpha: float = field(default=0.1, metadata=check(non_negative))
    # M2's classification weight is m2_alpha * N / n_l (Kingma et al.'s alpha = 0.1 N for a
    # summed objective; per-example means here: N unlabelled rows, n_l labelled training rows).
    m2_alpha: float = field(default=0.1, metadata=check(non_negative))
    # Networks: mlp (the notebook's one hidden layer) for any image size; conv (the
    # disentanglement_lib encoder / decoder) for 64x64; auto: conv at 64x64, else mlp.
    network: Literal["auto", "mlp", "conv"] = "auto"
    hidden: int = field(default=256, metadata=check(positive))
    # Importance samples of the classification at test time (probtorch's test(infer=True)).
    inference_samples: int = field(default=8, metadata=check(positive))
    # Weight of the labelled term against the unlabelled ELBO, both per-example means over
    # their batch (1: a labelled batch counts as much as an unlabelled one).
    labelled_weight: float = field(default=1.0, metadata=check(non_negative))

    def validate(self, prefix: str) -> None:
        from ...config.validation import bad_value

        if self.spec == "custom" and not self.variables:
            raise bad_value(
                f"{prefix}.variables",
                self.variables,
                "a list of variables ({name, kind, size, label, q_parents, p_parents}) with "
                f"{prefix}.spec = custom",
            )
        if self.spec != "custom" and (self.variables or self.p_order):
            raise bad_value(
                f"{prefix}.spec",
                self.spec,
                f"custom when {prefix}.variables or {prefix}.p_order is given",
            )


def binned_sizes(factor_sizes: Sequence[int], labeller: str, num_bins: int) -> tuple[int, ...]:
    """The values each label column takes (supervision/labellers.py: binned cuts factors with
    more than num_bins values into num_bins bins)."""
    if labeller != "binned":
        return tuple(int(k) for k in factor_sizes)
    return tuple(min(int(k), num_bins) if k > num_bins else int(k) for k in factor_sizes)


def resolve_spec(
    p: PSVAEParams, factor_names: Sequence[str], label_sizes: Sequence[int]
) -> Specification:
    """The specification these params declare for a dataset with these label columns, checked
    (:class:`SpecError` with one line)."""
    name = p.spec
    if name == "auto":
        found = auto_spec_name(factor_names)
        if found is None:
            raise SpecError(
                f"spec auto: no built-in specification fits the label columns "
                f"{', '.join(factor_names)} (mnist needs digit; dsprites shape, scale, "
                "orientation, pos_x, pos_y; faces identity, light_azimuth, light_elevation): "
                "declare the variables with spec: custom"
            )
        name = found
    if name == "custom":
        assert p.variables
        spec = Specification(
            "custom",
            tuple(
                Variable(v.name, v.kind, v.size, v.label, v.q_parents, v.p_parents)
                for v in p.variables
            ),
            p_order=p.p_order or None,
            evaluations=("classification",)
            if any(v.label is not None for v in p.variables)
            else ("factor_metrics",),
            factor_names=tuple(factor_names),
        )
    else:
        style = DEFAULT_STYLE[name] if p.style_size is None else p.style_size
        spec = BUILT_IN[name](factor_names, label_sizes, style)
    if p.evaluations:
        from dataclasses import replace

        spec = replace(spec, evaluations=tuple(p.evaluations))
    spec.check(label_sizes, p.objective)
    return spec


__all__ = ["EVALUATIONS", "PSVAEParams", "VariableParams", "binned_sizes", "resolve_spec"]
