"""The model-specification API of the partially-specified VAE (Siddharth et al., NeurIPS 2017).

A specification declares the latent variables and how q and p factorise; the networks are built
from it (:mod:`.networks`) and the objective reads it (:mod:`.model`). Torch-free: params
validation resolves and checks a specification before anything is built.

    Variable(name, kind, size, label=None, q_parents=(), p_parents=())

- ``kind``: ``categorical`` (``size`` = k classes; relaxed by Concrete during training, uniform
  prior) or ``gaussian`` (``size`` = d dimensions; prior N(0, I), or a conditional Gaussian
  N(mu(parents), sigma(parents)) with ``p_parents``);
- ``label``: the label column (factor name) that supervises it, None for a "style" variable that
  is never observed. A supervised Gaussian has size 1 and takes the standardised label
  Phi^-1((y + 0.5) / k) when observed;
- ``q_parents``: q(v | x, q_parents); the declared order is q's sampling order, so parents come
  first. ``p_parents``: p(v | p_parents), parents earlier in ``p_order`` (default: the declared
  order). The decoder p(x | all variables) reads every variable.

Built-in specifications (``ps_vae.spec``):

- ``mnist``: digit categorical(10) supervised by ``digit``, style gaussian(50),
  q(digit | x) q(style | x, digit) (the reference notebook's model); digits, mnist5k, MNIST, SVHN;
  (``ps_vae.style_size`` resizes the style, or adds one to the other built-ins);
- ``dsprites``: shape categorical(3) supervised by ``shape``; scale, orientation, pos_x, pos_y
  each gaussian(1) supervised by its factor; q(shape | x) q(continuous | x, shape). It has factor
  columns, so the disentanglement metrics apply (evaluations: classification, factor_metrics);
- ``faces``: identity categorical(k) supervised by ``identity``; light_azimuth and
  light_elevation gaussian(1) supervised; q(identity | x) q(lighting | x) (the procedural
  Lambertian faces, data/faces.py).

``auto`` picks the built-in whose label columns the dataset has. A variable number of latent
groups (multi-digit canvases whose count decides how many digit variables exist) is outside this
API on purpose: the training step is one fixed-shape graph (vmapped, captured as a CUDA graph),
so every specification declares a fixed set of variables (docs/psvae.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

CATEGORICAL = "categorical"
GAUSSIAN = "gaussian"
EVALUATIONS = ("classification", "factor_metrics")


class SpecError(ValueError):
    """A specification that cannot be built; the message is one line naming the variable."""


@dataclass(frozen=True)
class Variable:
    name: str
    kind: Literal["categorical", "gaussian"]
    size: int
    label: str | None = None
    q_parents: tuple[str, ...] = ()
    p_parents: tuple[str, ...] = ()

    @property
    def supervised(self) -> bool:
        return self.label is not None

    @property
    def categorical(self) -> bool:
        return self.kind == CATEGORICAL

    @property
    def uniforms(self) -> int:
        """U(0, 1) draws per sample: k Gumbel draws, or d normals."""
        return self.size

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "size": self.size,
            "label": self.label,
            "q_parents": list(self.q_parents),
            "p_parents": list(self.p_parents),
        }

    @staticmethod
    def from_dict(d: dict) -> Variable:
        return Variable(
            name=str(d["name"]),
            kind=d["kind"],
            size=int(d["size"]),
            label=d.get("label"),
            q_parents=tuple(d.get("q_parents") or ()),
            p_parents=tuple(d.get("p_parents") or ()),
        )


@dataclass(frozen=True)
class Specification:
    name: str
    variables: tuple[Variable, ...]
    # The order p generates the variables in (None: the declared order).
    p_order: tuple[str, ...] | None = None
    # Evaluations of the trained model: "classification" (supervised variables on the test
    # split) and / or "factor_metrics" (the disentanglement suite on the representation).
    evaluations: tuple[str, ...] = ("classification",)
    # Label columns of the dataset, in order (label column index of a variable = position).
    factor_names: tuple[str, ...] = field(default=())

    def variable(self, name: str) -> Variable:
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)

    @property
    def generation_order(self) -> tuple[Variable, ...]:
        order = self.p_order or self.names
        return tuple(self.variable(n) for n in order)

    @property
    def code_size(self) -> int:
        """Width of every variable's value side by side (the decoder's input)."""
        return sum(v.size for v in self.variables)

    @property
    def uniforms_per_sample(self) -> int:
        return sum(v.uniforms for v in self.variables)

    @property
    def categoricals(self) -> tuple[Variable, ...]:
        return tuple(v for v in self.variables if v.categorical)

    def label_index(self, v: Variable) -> int:
        """The label column of a supervised variable."""
        assert v.label is not None
        return self.factor_names.index(v.label)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "variables": [v.to_dict() for v in self.variables],
            "p_order": list(self.p_order) if self.p_order else None,
            "evaluations": list(self.evaluations),
            "factor_names": list(self.factor_names),
        }

    @staticmethod
    def from_dict(d: dict) -> Specification:
        return Specification(
            name=d["name"],
            variables=tuple(Variable.from_dict(v) for v in d["variables"]),
            p_order=tuple(d["p_order"]) if d.get("p_order") else None,
            evaluations=tuple(d.get("evaluations") or ("classification",)),
            factor_names=tuple(d.get("factor_names") or ()),
        )

    # -- checks ------------------------------------------------------------------------------
    def check(self, label_sizes: Sequence[int], objective: str = "siddharth") -> None:
        """Raise :class:`SpecError` (one line) unless the networks and the objective can be built
        for a dataset with these label columns (``factor_names``) and sizes."""
        if not self.variables:
            raise SpecError(f"specification {self.name} declares no variable")
        seen: list[str] = []
        labels: dict[str, str] = {}
        for v in self.variables:
            where = f"variable {v.name!r} of specification {self.name}"
            if not v.name or v.name in seen:
                raise SpecError(f"{where}: names must be non-empty and distinct")
            if v.kind not in (CATEGORICAL, GAUSSIAN):
                raise SpecError(f"{where}: kind must be categorical or gaussian, got {v.kind!r}")
            if v.size < (2 if v.categorical else 1):
                raise SpecError(
                    f"{where}: size {v.size}; a categorical needs >= 2 classes, a gaussian >= 1"
                )
            for p in v.q_parents:
                if p not in seen:
                    raise SpecError(
                        f"{where}: q parent {p!r} must be declared before it (the declared "
                        "order is q's sampling order)"
                    )
            if v.categorical and v.p_parents:
                raise SpecError(f"{where}: a categorical has the uniform prior (no p parents)")
            if v.label is not None:
                if v.label not in self.factor_names:
                    raise SpecError(
                        f"{where}: label {v.label!r} is not a label column of the dataset "
                        f"({', '.join(self.factor_names)})"
                    )
                if v.label in labels:
                    raise SpecError(
                        f"{where}: label {v.label!r} already supervises {labels[v.label]!r}"
                    )
                labels[v.label] = v.name
                k = int(label_sizes[self.factor_names.index(v.label)])
                if v.categorical and v.size != k:
                    raise SpecError(
                        f"{where}: categorical({v.size}) but label column {v.label!r} takes "
                        f"{k} values"
                    )
                if not v.categorical and v.size != 1:
                    raise SpecError(
                        f"{where}: a supervised gaussian has size 1 (it takes the standardised "
                        f"label), got {v.size}"
                    )
            seen.append(v.name)
        order = list(self.p_order) if self.p_order else seen
        if sorted(order) != sorted(seen):
            raise SpecError(
                f"specification {self.name}: p_order {order} must list every variable once"
            )
        for v in self.variables:
            for p in v.p_parents:
                if p not in order[: order.index(v.name)]:
                    raise SpecError(
                        f"variable {v.name!r} of specification {self.name}: p parent {p!r} must "
                        "come before it in p_order"
                    )
        for e in self.evaluations:
            if e not in EVALUATIONS:
                raise SpecError(
                    f"specification {self.name}: evaluation {e!r} is not one of "
                    f"{', '.join(EVALUATIONS)}"
                )
        if "classification" in self.evaluations and not labels:
            raise SpecError(
                f"specification {self.name}: the classification evaluation needs a supervised "
                "variable"
            )
        if objective == "m2":
            cats = self.categoricals
            if len(cats) != 1 or cats[0].q_parents:
                raise SpecError(
                    f"objective m2 enumerates one categorical variable at the root of q "
                    f"(q(y|x) q(rest|x, y)); specification {self.name} declares "
                    f"{len(cats)} categorical variable(s)"
                    + (f", {cats[0].name!r} with q parents" if cats and cats[0].q_parents else "")
                )


# -- built-in specifications -----------------------------------------------------------------
DSPRITES_CONTINUOUS = ("scale", "orientation", "pos_x", "pos_y")
FACES_FACTORS = ("identity", "light_azimuth", "light_elevation")


def _style(style: int, parent: str) -> tuple[Variable, ...]:
    """The unsupervised style variable q(style | x, parent), when it has a size."""
    return (Variable("style", GAUSSIAN, style, q_parents=(parent,)),) if style > 0 else ()


def mnist_spec(
    factor_names: Sequence[str], label_sizes: Sequence[int], style: int
) -> Specification:
    k = int(label_sizes[list(factor_names).index("digit")]) if "digit" in factor_names else 10
    return Specification(
        "mnist",
        (Variable("digit", CATEGORICAL, k, label="digit"), *_style(style, "digit")),
        evaluations=("classification",),
        factor_names=tuple(factor_names),
    )


def dsprites_spec(
    factor_names: Sequence[str], label_sizes: Sequence[int], style: int
) -> Specification:
    names = list(factor_names)
    k = int(label_sizes[names.index("shape")]) if "shape" in names else 3
    variables = [Variable("shape", CATEGORICAL, k, label="shape")]
    variables += [
        Variable(f, GAUSSIAN, 1, label=f, q_parents=("shape",)) for f in DSPRITES_CONTINUOUS
    ]
    return Specification(
        "dsprites",
        (*variables, *_style(style, "shape")),
        evaluations=("classification", "factor_metrics"),
        factor_names=tuple(factor_names),
    )


def faces_spec(
    factor_names: Sequence[str], label_sizes: Sequence[int], style: int
) -> Specification:
    names = list(factor_names)
    k = int(label_sizes[names.index("identity")]) if "identity" in names else 2
    return Specification(
        "faces",
        (
            Variable("identity", CATEGORICAL, k, label="identity"),
            Variable("light_azimuth", GAUSSIAN, 1, label="light_azimuth"),
            Variable("light_elevation", GAUSSIAN, 1, label="light_elevation"),
            *_style(style, "identity"),
        ),
        evaluations=("classification", "factor_metrics"),
        factor_names=tuple(factor_names),
    )


BUILT_IN = {"mnist": mnist_spec, "dsprites": dsprites_spec, "faces": faces_spec}
# The style size of each built-in when ps_vae.style_size is null: the reference notebook's 50 for
# MNIST; none for dSprites and the faces, whose declared factors are all their variation.
DEFAULT_STYLE = {"mnist": 50, "dsprites": 0, "faces": 0}
# The label columns each built-in needs (what ``auto`` looks for, in this order).
BUILT_IN_COLUMNS = {
    "mnist": ("digit",),
    "dsprites": ("shape", *DSPRITES_CONTINUOUS),
    "faces": FACES_FACTORS,
}


def auto_spec_name(factor_names: Sequence[str]) -> str | None:
    """The built-in whose label columns the dataset has (None: none fits)."""
    for name, columns in BUILT_IN_COLUMNS.items():
        if all(c in factor_names for c in columns):
            return name
    return None
