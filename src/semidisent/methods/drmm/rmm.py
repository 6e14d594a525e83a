"""The shallow Rendering Mixture Model (Patel, Nguyen, Baraniuk, NeurIPS 2016; seed_models.md
section 4.2) trained by closed-form hard EM: the one-layer sanity check of the DRMM family.

Generative model, per image I (an H x W canvas, flattened to D = H W pixels):

    c ~ Cat(pi_c),  t ~ Cat(pi_t),  a | c ~ Cat(pi_a[c]),  a in {0, 1}
    I = a mu_{c,t} + eps,  eps ~ N(0, sigma^2 I_D)

mu_{c,t} is the h x w template mu_c pasted into a zero canvas at offset t; every offset keeps the
whole template inside the canvas, so ||mu_{c,t}|| = ||mu_c|| for every t (constant-norm
templates). Max-sum (hard) inference is

    (c, t, a) = argmax  log pi_c + log pi_t + log pi_a[c, a] + log N(I; a mu_{c,t}, sigma^2 I).

Subtracting the per-image constant K(I) = -D/2 log(2 pi sigma^2) - ||I||^2 / (2 sigma^2) leaves

    log pi_c + log pi_t + log pi_a[c, 0] + a ((w_c * I)(t) + b_c),
    w_c = mu_c / sigma^2,  b_c = -||mu_c||^2 / (2 sigma^2) + log(pi_a[c, 1] / pi_a[c, 0]),

(* the valid cross-correlation), so the class score is

    log pi_c + log pi_a[c, 0] + max_t [ ReLU((w_c * I)(t) + b_c) + log pi_t ]:

a convolution, a ReLU (the max over a) and a global max-pool (the max over t). ``joint_scores``
enumerates the log-joint explicitly (the reference); ``conv_class_scores`` is the conv net; the
tests check that they agree. Hard EM alternates the MAP latents (labelled images keep their class)
with closed-form least-squares templates, the ML noise variance and floored count priors. It starts
from labelled data only: class means of centre crops, aligned by hard EM on the labelled images
alone (``fit_hard_em``); an unlabelled (k-means style) start is reported to collapse into one
class (a public third-party shallow RM, seed_models.md section 4.4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional

# Images per block of the explicit enumeration: bounds its (block, C T, D) residual array.
ENUMERATION_BLOCK = 128


@dataclass(frozen=True)
class RMM:
    """Parameters of a shallow RMM. Probabilities, not logs, so that a floor is easy to check."""

    templates: np.ndarray  # (C, h, w)
    sigma2: float
    pi_c: np.ndarray  # (C,)
    pi_t: np.ndarray  # (T,), offsets in ``offsets`` order (row-major)
    pi_a: np.ndarray  # (C, 2): [OFF, ON] per class
    canvas_shape: tuple[int, int]

    def __post_init__(self) -> None:
        C, h, w = self.templates.shape
        H, W = self.canvas_shape
        if h > H or w > W:
            raise ValueError(f"canvas {H}x{W} is smaller than the templates {h}x{w}")
        T = (H - h + 1) * (W - w + 1)
        if self.pi_c.shape != (C,) or self.pi_t.shape != (T,) or self.pi_a.shape != (C, 2):
            raise ValueError(
                f"prior shapes {self.pi_c.shape}, {self.pi_t.shape}, {self.pi_a.shape} do not "
                f"fit C={C}, T={T}"
            )
        if not self.sigma2 > 0:
            raise ValueError(f"sigma2 must be positive, got {self.sigma2}")

    @property
    def num_classes(self) -> int:
        return self.templates.shape[0]

    @property
    def template_shape(self) -> tuple[int, int]:
        return self.templates.shape[1], self.templates.shape[2]

    @property
    def num_offsets(self) -> int:
        return self.pi_t.shape[0]


@dataclass(frozen=True)
class Latents:
    """MAP latents per image: class, offset index (into ``offsets``), switch, and the log-joint."""

    classes: np.ndarray  # (N,) int
    offsets: np.ndarray  # (N,) int
    switches: np.ndarray  # (N,) int in {0, 1}
    log_joint: np.ndarray  # (N,) float


@dataclass(frozen=True)
class IterationRecord:
    iteration: int
    changed: int  # images whose (c, t, a) differ from the previous E-step (N at the first)
    log_joint: float  # sum over images of the MAP log-joint under the E-step's model
    class_counts: tuple[int, ...]
    sigma2: float  # of the model the E-step used


@dataclass(frozen=True)
class HardEMResult:
    model: RMM
    initial: RMM  # after the labelled-only alignment: where the semi-supervised phase starts
    centre: RMM  # the centre-crop initialisation the alignment starts from
    latents: Latents  # the MAP latents of ``model`` (labelled classes clamped)
    history: list[IterationRecord]  # of the semi-supervised phase, one per E-step
    iterations: int  # M-steps of the semi-supervised phase
    converged: bool  # it stopped because no assignment changed
    align_iterations: int  # M-steps of the labelled-only alignment


def offsets(canvas_shape: tuple[int, int], template_shape: tuple[int, int]) -> np.ndarray:
    """(T, 2) top-left corners (row, col), row-major: the order of conv2d's flattened output."""
    H, W = canvas_shape
    h, w = template_shape
    rows, cols = np.meshgrid(np.arange(H - h + 1), np.arange(W - w + 1), indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=1)


def render(model: RMM) -> np.ndarray:
    """(C, T, H, W): every template pasted at every offset, the mu_{c,t} of the model."""
    h, w = model.template_shape
    corners = offsets(model.canvas_shape, model.template_shape)
    out = np.zeros((model.num_classes, len(corners), *model.canvas_shape))
    for k, (r, s) in enumerate(corners):
        out[:, k, r : r + h, s : s + w] = model.templates
    return out


def crops(images: np.ndarray, template_shape: tuple[int, int]) -> np.ndarray:
    """(N, T, h, w): the template-sized window of every image at every offset."""
    h, w = template_shape
    windows = np.lib.stride_tricks.sliding_window_view(images, (h, w), axis=(1, 2))
    return windows.reshape(images.shape[0], -1, h, w)


def image_constant(model: RMM, images: np.ndarray) -> np.ndarray:
    """K(I) = log N(I; 0, sigma^2 I): the a = 0 likelihood, the same for every (c, t)."""
    x = images.reshape(images.shape[0], -1)
    D = x.shape[1]
    return -0.5 * D * math.log(2 * math.pi * model.sigma2) - (x**2).sum(1) / (2 * model.sigma2)


def _log_prior(model: RMM) -> np.ndarray:
    """(C, T, 2) log pi_c + log pi_t + log pi_a[c, a]."""
    return (
        np.log(model.pi_c)[:, None, None]
        + np.log(model.pi_t)[None, :, None]
        + np.log(model.pi_a)[:, None, :]
    )


def joint_scores(model: RMM, images: np.ndarray) -> np.ndarray:
    """(N, C, T, 2) log p(I, c, t, a), by explicit enumeration: each mu_{c,t} is rendered on the
    canvas and ||I - a mu_{c,t}||^2 is computed directly, with no use of the constant-norm
    algebra, so that it can serve as the reference for ``conv_class_scores``."""
    _check_images(model, images)
    N = images.shape[0]
    C, T = model.num_classes, model.num_offsets
    canvases = render(model).reshape(C * T, -1)
    x = images.reshape(N, -1)
    D = x.shape[1]
    gauss = -0.5 * D * math.log(2 * math.pi * model.sigma2)
    out = np.empty((N, C, T, 2))
    for start in range(0, N, ENUMERATION_BLOCK):
        xb = x[start : start + ENUMERATION_BLOCK]
        on = ((xb[:, None, :] - canvases[None]) ** 2).sum(-1)
        out[start : start + len(xb), :, :, 1] = -on.reshape(len(xb), C, T) / (2 * model.sigma2)
        off = (xb**2).sum(-1) / (2 * model.sigma2)
        out[start : start + len(xb), :, :, 0] = -off[:, None, None]
    return out + gauss + _log_prior(model)[None]


def map_latents(
    model: RMM,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    labelled_mask: np.ndarray | None = None,
) -> Latents:
    """Max-sum inference by enumeration; a labelled image's class is clamped to its label, so
    only its (t, a) are inferred. Ties go to the first (c, t, a) in C-order, deterministically."""
    scores = joint_scores(model, images)
    N, C, T, _ = scores.shape
    if labelled_mask is not None and labelled_mask.any():
        if labels is None:
            raise ValueError("labelled_mask given without labels")
        rows = np.flatnonzero(labelled_mask)
        keep = np.arange(C)[None, :] == np.asarray(labels)[rows, None]
        scores[rows] = np.where(keep[:, :, None, None], scores[rows], -np.inf)
    flat = scores.reshape(N, -1)
    best = flat.argmax(1)
    c, t, a = np.unravel_index(best, (C, T, 2))
    return Latents(c, t, a, flat[np.arange(N), best])


def classify(model: RMM, images: np.ndarray) -> np.ndarray:
    """(N,) max-sum classes by enumeration."""
    return joint_scores(model, images).max(axis=(2, 3)).argmax(1)


def conv_class_scores(model: RMM, images: np.ndarray) -> np.ndarray:
    """(N, C) max_{t,a} log p(I, c, t, a) - K(I), computed as a conv net: conv2d with w_c, bias
    b_c, ReLU, + log pi_t, global max over offsets. The term log pi_a[c, 0] (what an OFF image of
    class c scores) is added to the class score too: it is a per-class constant only when pi_a
    does not depend on c, and dropping it would then change the argmax."""
    _check_images(model, images)
    x = torch.as_tensor(images, dtype=torch.float64)[:, None]
    weight = torch.as_tensor(model.templates / model.sigma2, dtype=torch.float64)[:, None]
    log_pi_a = np.log(model.pi_a)
    norms = (model.templates**2).sum(axis=(1, 2))
    bias = -norms / (2 * model.sigma2) + log_pi_a[:, 1] - log_pi_a[:, 0]
    z = functional.conv2d(x, weight, bias=torch.as_tensor(bias, dtype=torch.float64))
    pooled = (torch.relu(z).flatten(2) + torch.as_tensor(np.log(model.pi_t))).amax(-1)
    per_class = torch.as_tensor(np.log(model.pi_c) + log_pi_a[:, 0])
    return (pooled + per_class).numpy()


def conv_classify(model: RMM, images: np.ndarray) -> np.ndarray:
    """(N,) max-sum classes by the conv net: equal to ``classify`` up to ties."""
    return conv_class_scores(model, images).argmax(1)


def floor_probabilities(p: np.ndarray, floor: float) -> np.ndarray:
    """Normalise the last axis, then mix with the uniform so that every entry is >= floor:
    floor + (1 - K floor) p stays a distribution, unlike clip-then-renormalise, which can push
    the clipped entries back below the floor."""
    K = p.shape[-1]
    if not 0 <= floor * K < 1:
        raise ValueError(f"prior floor {floor} is impossible for {K} outcomes")
    p = p / p.sum(-1, keepdims=True)
    return floor + (1 - K * floor) * p


def init_model(
    images: np.ndarray,
    labels: np.ndarray,
    labelled_mask: np.ndarray,
    num_classes: int,
    template_shape: tuple[int, int],
    sigma2_floor: float = 1e-6,
) -> RMM:
    """Templates from the labelled images only (the canvas-centre crop's class mean), sigma^2
    their mean squared residual there, uniform priors. Initialising from unlabelled data (k-means
    style) lets hard EM collapse into one class, as a public third-party shallow RM reports."""
    H, W = images.shape[1:]
    h, w = template_shape
    r, s = (H - h) // 2, (W - w) // 2
    x = images[labelled_mask]
    y = np.asarray(labels)[labelled_mask]
    templates = np.empty((num_classes, h, w))
    for c in range(num_classes):
        if not (y == c).any():
            raise ValueError(f"class {c} has no labelled image to initialise its template from")
        templates[c] = x[y == c, r : r + h, s : s + w].mean(0)
    residual = x.copy()
    residual[:, r : r + h, s : s + w] -= templates[y]
    T = (H - h + 1) * (W - w + 1)
    return RMM(
        templates=templates,
        sigma2=max(float((residual**2).mean()), sigma2_floor),
        pi_c=np.full(num_classes, 1.0 / num_classes),
        pi_t=np.full(T, 1.0 / T),
        pi_a=np.full((num_classes, 2), 0.5),
        canvas_shape=(H, W),
    )


def m_step(
    model: RMM,
    images: np.ndarray,
    latents: Latents,
    prior_floor: float = 1e-3,
    sigma2_floor: float = 1e-6,
) -> RMM:
    """Closed-form updates given hard latents.

    mu_c[p] is the least-squares solution, the mean of I[t + p] over the images with (c, a=1):
    every template pixel is observed by each of them, since the template lies inside the canvas.
    A class with no ON image keeps its template (nothing constrains it) and a class with no image
    keeps its pi_a row. sigma^2 is the mean squared residual over all images and pixels, with the
    new templates. pi_t counts only the ON images: an OFF image's t is unidentified (its MAP t is
    just argmax pi_t), and counting it would feed the current prior back into itself.
    """
    _check_images(model, images)
    C, T = model.num_classes, model.num_offsets
    c, t, a = latents.classes, latents.offsets, latents.switches
    on = a == 1
    windows = crops(images, model.template_shape)[np.arange(len(images)), t]  # (N, h, w)
    templates = model.templates.copy()
    for k in range(C):
        chosen = on & (c == k)
        if chosen.any():
            templates[k] = windows[chosen].mean(0)
    residual = windows - on[:, None, None] * templates[c]
    inside = (residual**2).sum()
    outside = (images**2).sum() - (windows**2).sum()  # pixels no template covers
    sigma2 = max(float((inside + outside) / images.size), sigma2_floor)

    pi_c = floor_probabilities(np.bincount(c, minlength=C).astype(float), prior_floor)
    pi_t = model.pi_t
    if on.any():
        pi_t = floor_probabilities(np.bincount(t[on], minlength=T).astype(float), prior_floor)
    counts_a = np.zeros((C, 2))
    np.add.at(counts_a, (c, a), 1.0)
    seen = counts_a.sum(1) > 0
    pi_a = model.pi_a.copy()
    pi_a[seen] = floor_probabilities(counts_a[seen], prior_floor)
    return RMM(templates, sigma2, pi_c, pi_t, pi_a, model.canvas_shape)


def run_hard_em(
    model: RMM,
    images: np.ndarray,
    labels: np.ndarray,
    labelled_mask: np.ndarray,
    iterations: int,
    prior_floor: float = 1e-3,
    sigma2_floor: float = 1e-6,
) -> tuple[RMM, Latents, list[IterationRecord], bool]:
    """Hard (classification) EM from ``model``: (model, its MAP latents, history, converged).
    Stops when an E-step changes no (c, t, a): the M-step would then return the same model, a
    fixed point."""
    previous: Latents | None = None
    history: list[IterationRecord] = []
    for iteration in range(iterations + 1):
        latents = map_latents(model, images, labels, labelled_mask)
        changed = len(images) if previous is None else _changed(previous, latents)
        counts = np.bincount(latents.classes, minlength=model.num_classes)
        history.append(
            IterationRecord(
                iteration=iteration,
                changed=changed,
                log_joint=float(latents.log_joint.sum()),
                class_counts=tuple(int(n) for n in counts),
                sigma2=model.sigma2,
            )
        )
        if previous is not None and changed == 0:
            return model, latents, history, True
        if iteration == iterations:
            break
        model = m_step(model, images, latents, prior_floor, sigma2_floor)
        previous = latents
    return model, latents, history, False


def fit_hard_em(
    images: np.ndarray,
    labels: np.ndarray,
    labelled_mask: np.ndarray,
    num_classes: int,
    template_shape: tuple[int, int],
    iterations: int = 100,
    prior_floor: float = 1e-3,
    sigma2_floor: float = 1e-6,
) -> HardEMResult:
    """Semi-supervised hard EM, in two phases, both started from labelled data only:

    1. alignment: hard EM on the labelled images alone, from ``init_model``'s centre crops. The
       class is known, so this only infers each labelled digit's offset and re-averages the
       aligned crops; the centre crops of translated digits are blurred mixtures of shifts, and
       starting the unlabelled phase from them lets a few blurry templates absorb most images.
    2. hard EM on all the images, labelled classes clamped.

    Unlabelled images' ``labels`` entries are ignored. ``iterations`` bounds each phase."""
    images = np.asarray(images, dtype=np.float64)
    labels = np.asarray(labels)
    labelled_mask = np.asarray(labelled_mask, dtype=bool)
    floors = {"prior_floor": prior_floor, "sigma2_floor": sigma2_floor}
    centre = init_model(
        images, labels, labelled_mask, num_classes, template_shape, sigma2_floor=sigma2_floor
    )
    lab = images[labelled_mask]
    initial, _, align_history, _ = run_hard_em(
        centre, lab, labels[labelled_mask], np.ones(len(lab), bool), iterations, **floors
    )
    model, latents, history, converged = run_hard_em(
        initial, images, labels, labelled_mask, iterations, **floors
    )
    return HardEMResult(
        model=model,
        initial=initial,
        centre=centre,
        latents=latents,
        history=history,
        iterations=len(history) - 1,
        converged=converged,
        align_iterations=len(align_history) - 1,
    )


def translated_digits(
    images_8x8: np.ndarray, canvas: int = 12, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Each digit pasted at a uniformly random offset in a zero canvas x canvas: the translation
    nuisance the RMM's t models. Returns the canvases (N, canvas, canvas) and the (N, 2) offsets."""
    images_8x8 = np.asarray(images_8x8, dtype=np.float64)
    N, h, w = images_8x8.shape
    if canvas < max(h, w):
        raise ValueError(f"canvas {canvas} is smaller than the {h}x{w} images")
    rng = np.random.default_rng(seed)
    where = np.stack(
        [rng.integers(0, canvas - h + 1, size=N), rng.integers(0, canvas - w + 1, size=N)], axis=1
    )
    out = np.zeros((N, canvas, canvas))
    for n, (r, s) in enumerate(where):
        out[n, r : r + h, s : s + w] = images_8x8[n]
    return out, where


def _changed(before: Latents, after: Latents) -> int:
    return int(
        (
            (before.classes != after.classes)
            | (before.offsets != after.offsets)
            | (before.switches != after.switches)
        ).sum()
    )


def _check_images(model: RMM, images: np.ndarray) -> None:
    if images.ndim != 3 or tuple(images.shape[1:]) != tuple(model.canvas_shape):
        raise ValueError(
            f"images must be (N, {model.canvas_shape[0]}, {model.canvas_shape[1]}), "
            f"got {images.shape}"
        )
