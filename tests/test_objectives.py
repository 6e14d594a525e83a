"""Objectives against hand-computed values on tiny tensors, and the exactness of p = 0.

Known answers come from the formulas in the docstrings (worked out by hand below) and from
disentanglement_lib's own tests (``semi_supervised_vae_test.py``: xent 221.807 and 840.48,
cov 0.125, the annealer tables).
"""

from __future__ import annotations

import copy
import math
import typing

import pytest
import torch
from torch.nn.functional import binary_cross_entropy_with_logits

from semidisent.config.schema import TrainParams
from semidisent.models import VAE, VAEConfig
from semidisent.objectives import (
    SCHEDULES,
    SUPERVISED_LOSSES,
    TARGETS,
    ObjectiveConfig,
    SemiSupervisedVAE,
    bernoulli_reconstruction,
    beta_vae_loss,
    build_supervised,
    gamma_at,
    gaussian_kl,
    replace_latents,
    replacement_mask,
    replacement_term,
    replacement_values,
    resolve_target,
)
from semidisent.objectives.schedule import SCHEDULE_CODES

LOG2 = math.log(2.0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny batches gain nothing from intra-op threads, and on a shared 2-core machine an OpenMP
    barrier waiting for a descheduled thread can stall a step for seconds."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def sigmoid_xent(logit: float, target: float) -> float:
    return max(logit, 0.0) - logit * target + math.log1p(math.exp(-abs(logit)))


# ------------------------------------------------------------------------------ ELBO


def test_bernoulli_reconstruction_and_kl_by_hand():
    logits = torch.tensor([0.0, 2.0, -1.0, 3.0]).view(1, 1, 2, 2)
    x = torch.tensor([1.0, 0.0, 0.5, 1.0]).view(1, 1, 2, 2)
    expected = sum(sigmoid_xent(lg, t) for lg, t in [(0, 1), (2, 0), (-1, 0.5), (3, 1)])
    # log 2 + (2 + log(1 + e^-2)) + (0.5 + log(1 + e^-1)) + log(1 + e^-3)
    assert expected == pytest.approx(LOG2 + 2.126928 + 0.813262 + 0.048587, abs=1e-5)
    assert bernoulli_reconstruction(logits, x).item() == pytest.approx(expected, rel=1e-6)

    mean = torch.tensor([[1.0, 0.0]])
    log_var = torch.tensor([[0.0, math.log(2.0)]])
    # 0.5 (1 + 1 - 0 - 1) = 0.5 and 0.5 (0 + 2 - log 2 - 1) = 0.153426
    kl = gaussian_kl(mean, log_var)
    assert kl[0, 0].item() == pytest.approx(0.5)
    assert kl[0, 1].item() == pytest.approx(0.5 * (1.0 - LOG2), rel=1e-6)


def test_beta_vae_loss_is_batch_mean_of_pixel_sums_plus_beta_kl():
    logits = torch.tensor([[0.0, 2.0], [0.0, 0.0]]).view(2, 1, 1, 2)
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).view(2, 1, 1, 2)
    mean = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    log_var = torch.zeros(2, 2)
    loss, recon, kl = beta_vae_loss(logits, x, mean, log_var, beta=2.0)
    r0 = LOG2 + sigmoid_xent(2.0, 0.0)  # 2.820075
    r1 = 2 * LOG2
    assert recon.item() == pytest.approx((r0 + r1) / 2, rel=1e-6)
    assert kl.item() == pytest.approx((0.5 + 0.0) / 2)
    assert loss.item() == pytest.approx((r0 + r1) / 2 + 2.0 * 0.25, rel=1e-6)


# ------------------------------------------------------------------------------ supervised


def test_xent_by_hand_masked_and_mean_reduction():
    sup = build_supervised("xent", (2, 4))
    mu = torch.tensor([[0.0, 1.0, 5.0]])  # the third latent is not supervised
    labels = torch.tensor([[1, 2]])  # y / k = 0.5, 0.5
    full = sigmoid_xent(0.0, 0.5) + sigmoid_xent(1.0, 0.5)  # 0.693147 + 0.813262
    assert full == pytest.approx(1.506409, abs=1e-6)
    assert sup(mu, labels, torch.ones(1, 2, dtype=torch.bool)).item() == pytest.approx(full)
    observed = torch.tensor([[True, False]])
    assert sup(mu, torch.tensor([[1, -1]]), observed).item() == pytest.approx(LOG2)
    # Batch sum (reference) vs. mean over the batch.
    mu2, y2, o2 = mu.repeat(2, 1), labels.repeat(2, 1), torch.ones(2, 2, dtype=torch.bool)
    assert sup(mu2, y2, o2).item() == pytest.approx(2 * full)
    mean_sup = build_supervised("xent", (2, 4), reduction="mean")
    assert mean_sup(mu2, y2, o2).item() == pytest.approx(full)


@pytest.mark.parametrize(
    ("mu", "labels", "expected"),
    [  # disentanglement_lib's test_xent (factor sizes 1): 64 * 5 * log 2 and 640 (1 + log(1+1/e))
        (torch.zeros(64, 10), torch.zeros(64, 5, dtype=torch.long), 221.807),
        (torch.ones(64, 10), torch.zeros(64, 10, dtype=torch.long), 840.48),
    ],
)
def test_xent_matches_disentanglement_lib_tests(mu, labels, expected):
    sup = build_supervised("xent", [1] * labels.shape[1])
    value = sup(mu, labels, torch.ones_like(labels, dtype=torch.bool)).item()
    assert value == pytest.approx(expected, abs=0.01)


def test_l2_by_hand_with_learned_scale():
    sup = build_supervised("l2", (4, 4))
    mu = torch.tensor([[1.0, 2.0]])
    labels = torch.tensor([[2, 1]])
    obs = torch.ones(1, 2, dtype=torch.bool)
    assert sup.scale.item() == 1.0  # dlib initialises b to 1
    assert sup(mu, labels, obs).item() == pytest.approx(2.0)  # (1-2)^2 + (2-1)^2
    with torch.no_grad():
        sup.scale.fill_(2.0)
    loss = sup(mu, labels, obs)
    assert loss.item() == pytest.approx(9.0)  # (2-2)^2 + (4-1)^2
    loss.backward()
    assert sup.scale.grad.item() == pytest.approx(12.0)  # 2 sum (b mu - y) mu = 2 (0 + 3*2)
    # Raw integer labels: the label size does not enter.
    assert build_supervised("l2", (40, 40))(mu, labels, obs).item() == pytest.approx(2.0)


def test_cov_matches_disentanglement_lib_and_hand_values():
    sup = build_supervised("cov", (2, 2))
    obs = torch.ones(2, 2, dtype=torch.bool)
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([[0, 1], [1, 0]])
    # dlib's test_cov_det: off-diagonal covariances are +-0.25 -> 2 * 0.0625
    assert sup(mu, labels, obs).item() == pytest.approx(0.125)
    # A third (unsupervised) latent [1, -1] also counts: covariances -0.5 and 0.5 with the
    # two factors -> 0.125 + 0.25 + 0.25.
    mu3 = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]])
    assert sup(mu3, labels, obs).item() == pytest.approx(0.625)
    # An unobserved row changes nothing, whatever its values.
    mu_x = torch.cat([mu, torch.tensor([[7.0, -3.0]])])
    labels_x = torch.cat([labels, torch.tensor([[-1, -1]])])
    obs_x = torch.cat([obs, torch.zeros(1, 2, dtype=torch.bool)])
    assert sup(mu_x, labels_x, obs_x).item() == pytest.approx(0.125)
    # Independent codes and labels: about 0 (dlib's test_cov_rand with samples vs. samples
    # penalises only the off-diagonal, which vanishes for independent dimensions).
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 4, generator=g)
    y = (z[:, :2] > 0).long()
    assert sup(z, y, torch.ones(20000, 2, dtype=torch.bool)).item() < 1e-3
    # sup_reduction does not apply: the covariance is a batch mean.
    assert build_supervised("cov", (2, 2), "mean")(mu, labels, obs).item() == pytest.approx(0.125)


def test_embed_by_hand():
    sup = build_supervised("embed", (2, 3), embed_sigma=1.0)
    with torch.no_grad():
        sup.embeddings.copy_(torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 2.0]]))
    mu = torch.tensor([[0.0, 2.0]])
    labels = torch.tensor([[1, 0]])
    obs = torch.ones(1, 2, dtype=torch.bool)
    # factor 0 (k=2): logits [0, -1], label 1 -> 1 + log(1 + e^-1)
    f0 = 1.0 + math.log1p(math.exp(-1.0))
    # factor 1 (k=3): logits -(2 - e)^2 = [-4, -1, 0], label 0 -> 4 + log(e^-4 + e^-1 + 1)
    f1 = 4.0 + math.log(math.exp(-4.0) + math.exp(-1.0) + 1.0)
    assert sup(mu, labels, obs).item() == pytest.approx(f0 + f1, rel=1e-6)
    # Mean over the (observed) batch, sum over factors; sigma scales the distances.
    assert sup(mu.repeat(3, 1), labels.repeat(3, 1), obs.repeat(3, 1)).item() == pytest.approx(
        f0 + f1, rel=1e-6
    )
    assert sup(mu, labels, torch.tensor([[True, False]])).item() == pytest.approx(f0, rel=1e-6)
    sharp = build_supervised("embed", (2, 3), embed_sigma=2.0)
    with torch.no_grad():
        sharp.embeddings.copy_(sup.embeddings)
    # factor 0 logits -(2 d)^2 = [0, -4] -> 4 + log(1 + e^-4)
    observed0 = torch.tensor([[True, False]])
    assert sharp(mu, labels, observed0).item() == pytest.approx(4 + math.log1p(math.exp(-4)))
    # Glorot-uniform initialisation bound sqrt(3 / k), padding never used.
    fresh = build_supervised("embed", (2, 40))
    assert fresh.embeddings[1].abs().max() <= math.sqrt(3 / 40)
    learned = build_supervised("embed", (2, 3), embed_learn_sigma=True, embed_sigma=0.5)
    assert dict(learned.named_parameters())["sigma"].item() == 0.5


def test_none_is_zero_but_keeps_the_graph():
    sup = build_supervised("none", (3,))
    mu = torch.ones(2, 4, requires_grad=True)
    out = sup(mu, torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.bool))
    assert out.item() == 0.0 and out.requires_grad


# ------------------------------------------------------------------------------ targets


def test_targets_by_hand():
    labels = torch.tensor([[0, 3]])
    xent = build_supervised("xent", (2, 4))
    # y = 0: logit(1 / (2k)) = logit(0.25) = -log 3; y = 3: logit(3 / 4) = log 3
    t = TARGETS["logit"](labels, xent)
    assert t[0].tolist() == pytest.approx([-math.log(3.0), math.log(3.0)], rel=1e-5)
    # Phi^-1(0.25) = -0.6744898, Phi^-1(0.875) = 1.1503494
    g = TARGETS["gaussian"](labels, xent)
    assert g[0].tolist() == pytest.approx([-0.6744898, 1.1503494], rel=1e-5)
    l2 = build_supervised("l2", (2, 4))
    with torch.no_grad():
        l2.scale.fill_(2.0)
    assert TARGETS["scaled"](labels, l2).tolist() == [[0.0, 1.5]]
    emb = build_supervised("embed", (2, 4))
    with torch.no_grad():
        emb.embeddings.copy_(torch.tensor([[5.0, 6.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]]))
    # Extremes (5 of {5, 6}; 4 of {1, 2, 3, 4}): no finite minimiser, the embedding itself.
    e = TARGETS["embedding"](labels, emb)
    assert e.tolist() == [[5.0, 4.0]] and not e.requires_grad
    # Equally spaced embeddings: by symmetry the middle value's minimiser is its embedding.
    with torch.no_grad():
        emb.embeddings.copy_(torch.tensor([[5.0, 6.0, 0.0, 0.0], [1.0, 2.0, 3.0, 0.0]]))
    emb3 = build_supervised("embed", (2, 3))
    with torch.no_grad():
        emb3.embeddings.copy_(torch.tensor([[5.0, 6.0, 0.0], [1.0, 2.0, 3.0]]))
    mid = TARGETS["embedding"](torch.tensor([[0, 1]]), emb3)
    assert mid[0, 1].item() == pytest.approx(2.0, abs=1e-5)
    with pytest.raises(ValueError, match="needs the l2"):
        TARGETS["scaled"](labels, xent)


def test_auto_target_is_consistent_with_the_regulariser():
    assert resolve_target("auto", "xent") == "logit"
    assert resolve_target("auto", "l2") == "scaled"
    assert resolve_target("auto", "cov") == "gaussian"
    assert resolve_target("auto", "embed") == "embedding"
    assert resolve_target("auto", "none") == "gaussian"
    assert resolve_target("gaussian", "xent") == "gaussian"


def _entry_slope(sup, mu: float, y: int) -> float:
    """d R_s / d mu for one labelled entry (one factor), by autograd through the module (pass
    a float64 copy: its parameters then promote the arithmetic to float64)."""
    m = torch.tensor([[mu]], dtype=torch.float64, requires_grad=True)
    loss = sup(m, torch.tensor([[y]]), torch.ones(1, 1, dtype=torch.bool))
    (grad,) = torch.autograd.grad(loss, m)
    return float(grad)


def _numerical_argmin(sup, y: int, start: float) -> float | None:
    """The minimiser of the per-entry loss as the root of its slope (brentq on a bracket grown
    from ``start``), or None when the slope keeps one sign out to |mu| = 1e4 (no finite
    minimiser). Each R_s here is convex in mu, so a sign change brackets the minimum. Where the
    loss saturates (softmax or sigmoid at 0 / 1 in float64) the slope is zero up to float64
    rounding (~1e-16): a slope within 1e-9 of zero is no evidence of a sign change."""
    from scipy.optimize import brentq

    floor = 1e-9
    width = 1.0
    while width <= 1e4:
        lo, hi = start - width, start + width
        if _entry_slope(sup, lo, y) < -floor and _entry_slope(sup, hi, y) > floor:
            return brentq(lambda m: _entry_slope(sup, m, y), lo, hi, xtol=1e-7)
        width *= 2.0
    return None


@pytest.mark.parametrize("k", [3, 5, 6, 40])
@pytest.mark.parametrize("loss_name", ["xent", "l2", "embed"])
def test_consistent_targets_are_the_minimisers_of_their_regulariser(loss_name, k):
    """t(y) = argmin_mu R_s(mu, y) within 1e-3 wherever that minimiser is finite, and the
    documented finite value where it is not (xent at y = 0, embed at its extreme embeddings).
    cov and none have no per-label minimiser (cov penalises only cross-covariances, none is 0):
    their gaussian target is a convention, checked by hand above."""
    torch.manual_seed(k)
    sup = build_supervised(loss_name, (k,))
    if loss_name == "l2":
        with torch.no_grad():
            sup.scale.fill_(-0.6 if k % 2 else 1.7)
    if loss_name == "embed":
        with torch.no_grad():
            sup.sigma.fill_(3.0 if k == 40 else 1.0)
    target = TARGETS[resolve_target("auto", loss_name)]
    labels = torch.arange(k)[:, None]
    t = target(labels, sup)[:, 0].tolist()
    sup64 = copy.deepcopy(sup).double()
    for y in range(k):
        found = _numerical_argmin(sup64, y, t[y])
        if found is not None:
            assert t[y] == pytest.approx(found, abs=1e-3), (y, t[y], found)
            continue
        # No finite minimiser: the loss still decreases beyond the target.
        slope = _entry_slope(sup64, t[y], y)
        if loss_name == "xent":
            assert y == 0 and t[y] == pytest.approx(math.log(1.0 / (2 * k - 1)), rel=1e-5)
            assert slope > 0  # decreasing towards -inf
        else:
            assert loss_name == "embed"
            e = sup.embeddings.detach()[0, :k]
            assert float(e[y]) in (float(e.min()), float(e.max()))
            assert t[y] == pytest.approx(float(e[y]))
            assert slope != 0.0


def test_targets_order_the_labels_and_the_middle_shape_is_not_on_a_boundary():
    """The regression the xent target fixed: for shape (k = 3) the old target put the middle
    shape at logit(1/2) = 0, the boundary between the clusters R_s makes (logit(1/3) = -0.69 and
    logit(2/3) = 0.69 for labels 1 and 2)."""
    xent = build_supervised("xent", (3,))
    t = TARGETS["logit"](torch.tensor([[0], [1], [2]]), xent)[:, 0].tolist()
    assert t == pytest.approx([math.log(1 / 5), math.log(1 / 2), math.log(2.0)], rel=1e-5)
    assert t[0] < t[1] < t[2]


def test_registries_are_keyed_by_the_params_yaml_names():
    hints = typing.get_type_hints(TrainParams)
    assert set(SUPERVISED_LOSSES) == set(typing.get_args(hints["supervised_loss"]))
    assert set(TARGETS) | {"auto"} == set(typing.get_args(hints["replacement_target"]))
    assert set(SCHEDULES) == set(typing.get_args(hints["gamma_schedule"]))


# ------------------------------------------------------------------------------ schedule


@pytest.mark.parametrize(
    ("name", "table"),
    [  # disentanglement_lib's annealer tests: gamma 100, threshold 100
        ("fixed", {0: 100, 10: 100, 100: 100, 101: 100}),
        ("ramp", {0: 0, 10: 10, 100: 100, 101: 100}),
        ("switch", {0: 0, 10: 0, 100: 0, 101: 100}),
        ("anneal", {0: 0, 10: 10, 100: 100, 101: 100}),  # dlib's names of ramp and switch
        ("fine_tune", {0: 0, 10: 0, 100: 0, 101: 100}),
    ],
)
def test_schedules_match_disentanglement_lib_and_tensor_form(name, table):
    for step, expected in table.items():
        assert SCHEDULES[name](100.0, step, 100) == pytest.approx(expected)
        tensor = gamma_at(
            torch.tensor(step),
            torch.tensor([100.0]),
            torch.tensor([SCHEDULE_CODES[name]]),
            torch.tensor([100]),
        )
        assert tensor.item() == pytest.approx(expected)


# ------------------------------------------------------------------------------ replacement


def test_replacement_mask_units_and_observed_entries():
    u = torch.tensor([[0.1, 0.9], [0.6, 0.2]])
    observed = torch.tensor([[True, True], [True, False]])
    # example: decided by the example's first draw, covers its observed entries
    ex = replacement_mask(u, observed, 0.5, "example")
    assert ex.tolist() == [[True, True], [False, False]]
    # entry: each observed entry on its own
    en = replacement_mask(u, observed, 0.5, "entry")
    assert en.tolist() == [[True, False], [False, False]]
    assert not replacement_mask(u, observed, 0.0, "entry").any()
    assert replacement_mask(u, observed, 1.0, "example").tolist() == observed.tolist()


def test_replaced_values_pass_no_gradient_to_the_encoder():
    z = torch.tensor([[0.3, -0.2, 1.0]], requires_grad=True)
    targets = torch.tensor([[2.0, 5.0]], requires_grad=True)
    mask = torch.tensor([[True, False]])
    out = replace_latents(z, targets, mask)
    assert out[0].tolist() == pytest.approx([2.0, -0.2, 1.0])
    (out * torch.tensor([[1.0, 2.0, 3.0]])).sum().backward()
    assert z.grad.tolist() == [[0.0, 2.0, 3.0]]
    assert targets.grad is None  # targets are detached


def test_replacement_term_by_hand():
    recon = torch.tensor([10.0, 20.0, 30.0])
    kl = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[True, False], [False, False], [True, True]])
    # example 0: 10 + 2 (2 + 3); example 1 not replaced; example 2: 30 + 2 * 9; / B = 3
    expected = ((10 + 2 * 5) + (30 + 2 * 9)) / 3
    assert replacement_term(recon, kl, mask, 2.0).item() == pytest.approx(expected)
    assert replacement_term(recon, kl, torch.zeros(3, 2, dtype=torch.bool), 2.0).item() == 0.0
    # "all": example 1 is decoded too, from its own code, with the KL of every dim.
    every = ((10 + 2 * 5) + (20 + 2 * 15) + (30 + 2 * 9)) / 3
    assert replacement_term(recon, kl, mask, 2.0, "all").item() == pytest.approx(every)
    with pytest.raises(ValueError, match="labelled_recon"):
        replacement_term(recon, kl, mask, 2.0, "some")


def test_replacement_values_with_posterior_noise_by_hand():
    targets = torch.tensor([[1.0, -1.0]], requires_grad=True)
    mean = torch.tensor([[0.5, 0.2, 9.0]], requires_grad=True)
    z = mean + torch.tensor([[0.25, -0.5, 1.0]])  # z - mu: the posterior noise
    assert replacement_values(targets, mean, z, "none").tolist() == [[1.0, -1.0]]
    noisy = replacement_values(targets, mean, z, "posterior")
    assert noisy[0].tolist() == pytest.approx([1.25, -1.5]) and not noisy.requires_grad
    with pytest.raises(ValueError, match="replacement noise"):
        replacement_values(targets, mean, z, "prior")


# ------------------------------------------------------------------------------ the objective


def _tiny_batch(seed: int = 0, bl: int = 3, f: int = 2, lat: int = 4):
    g = torch.Generator().manual_seed(seed)
    x_u = (torch.rand(2, 1, 64, 64, generator=g) > 0.7).float()
    x_l = (torch.rand(bl, 1, 64, 64, generator=g) > 0.7).float()
    y = torch.randint(0, 3, (bl, f), generator=g)
    obs = torch.ones(bl, f, dtype=torch.bool)
    obs[0, 1] = False
    y = torch.where(obs, y, -1)
    eps_u = torch.randn(2, lat, generator=g)
    eps_l = torch.randn(bl, lat, generator=g)
    u = torch.rand(bl, f, generator=g)
    return x_u, x_l, y, obs, eps_u, eps_l, u


def _model(
    loss: str = "xent",
    decode_labelled: bool = True,
    unit: str = "example",
    labelled_recon: str = "replaced",
    labelled_weight: float = 1.0,
    noise: str = "none",
):
    torch.manual_seed(0)
    cfg = ObjectiveConfig(
        label_sizes=(3, 3),
        supervised_loss=loss,
        replacement_unit=unit,
        labelled_recon=labelled_recon,
        labelled_weight=labelled_weight,
        replacement_noise=noise,
        decode_labelled=decode_labelled,
    )
    return SemiSupervisedVAE(VAE(VAEConfig(num_latent=4)), cfg)


def _run(model, x_u, x_l, y, obs, eps_u, eps_l, u, beta, gamma, rate):
    """The objective with gamma_sup(s) given (the trainer's forward evaluates the schedule)."""
    hyper = {"beta": torch.as_tensor(beta)}
    return model.objective(x_u, x_l, y, obs, eps_u, eps_l, u, hyper, gamma, rate)


def _grads(model, loss):
    return torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)


@pytest.mark.parametrize("loss_name", ["xent", "l2", "cov", "embed"])
@pytest.mark.parametrize("decode_labelled", [True, False])
def test_rate_zero_is_exactly_the_semi_supervised_objective(loss_name, decode_labelled):
    """Section 4 written out independently: recon + beta KL on x_u, gamma R_s(mu(x_l))."""
    model = _model(loss_name, decode_labelled)
    x_u, x_l, y, obs, eps_u, eps_l, u = _tiny_batch()
    beta, gamma = torch.tensor(4.0), torch.tensor(0.7)
    loss, stats = _run(model, x_u, x_l, y, obs, eps_u, eps_l, u, beta, gamma, torch.tensor(0.0))

    vae = model.vae
    mean, log_var = vae.encode(x_u)
    logits = vae.decode(mean + torch.exp(0.5 * log_var) * eps_u)
    recon = binary_cross_entropy_with_logits(logits, x_u, reduction="none").sum((1, 2, 3))
    kl = 0.5 * (mean**2 + log_var.exp() - log_var - 1).sum(1)
    mean_l, _ = vae.encode(x_l)
    reference = recon.mean() + beta * kl.mean() + gamma * model.supervised(mean_l, y, obs)

    assert torch.equal(loss, reference)
    assert stats[4].item() == 0.0  # the replacement term
    for g_obj, g_ref in zip(_grads(model, loss), _grads(model, reference), strict=True):
        if g_ref is None:
            assert g_obj is None or not g_obj.any()
        else:
            assert torch.equal(g_obj, g_ref)


def test_rate_one_adds_the_reconstruction_of_replaced_labelled_points():
    model = _model("xent", unit="entry")
    x_u, x_l, y, obs, eps_u, eps_l, u = _tiny_batch(seed=1)
    beta, gamma = torch.tensor(2.0), torch.tensor(1.0)
    zero = torch.tensor(0.0)
    base, _ = _run(model, x_u, x_l, y, obs, eps_u, eps_l, u, beta, gamma, zero)
    loss, stats = _run(model, x_u, x_l, y, obs, eps_u, eps_l, u, beta, gamma, torch.tensor(1.0))

    vae = model.vae
    mean_l, log_var_l = vae.encode(x_l)
    z = mean_l + torch.exp(0.5 * log_var_l) * eps_l
    yc = y.clamp(min=0).float()
    t = torch.logit(torch.where(yc > 0, yc, 0.5) / 3.0)  # xent's minimiser; y = 0: 1 / (2k)
    z = torch.cat([torch.where(obs, t, z[:, :2]), z[:, 2:]], 1)  # p = 1: every observed entry
    recon = binary_cross_entropy_with_logits(vae.decode(z), x_l, reduction="none").sum((1, 2, 3))
    kl = 0.5 * (mean_l**2 + log_var_l.exp() - log_var_l - 1)
    kept = torch.cat([~obs, torch.ones(3, 2, dtype=torch.bool)], 1)
    term = (recon + beta * (kl * kept).sum(1)).sum() / 3  # every example has a replacement
    assert loss.item() == pytest.approx((base + term).item(), rel=1e-5)
    assert stats[4].item() == pytest.approx(term.item(), rel=1e-5)
    assert stats[5].item() == pytest.approx(1.0)  # all observed entries replaced


@pytest.mark.parametrize("loss_name", ["xent", "embed"])
def test_labelled_recon_all_at_rate_zero_adds_the_plain_elbo_of_the_labelled_batch(loss_name):
    """(all, p = 0): section 4 plus lambda * (recon + beta KL of every dim) of each x_l, from its
    own sampled code, written out independently."""
    weight = 0.3
    model = _model(loss_name, labelled_recon="all", labelled_weight=weight)
    x_u, x_l, y, obs, eps_u, eps_l, u = _tiny_batch(seed=3)
    beta, gamma, zero = torch.tensor(4.0), torch.tensor(0.7), torch.tensor(0.0)
    loss, stats = _run(model, x_u, x_l, y, obs, eps_u, eps_l, u, beta, gamma, zero)
    base, _ = _run(_model(loss_name), x_u, x_l, y, obs, eps_u, eps_l, u, beta, gamma, zero)

    vae = model.vae
    mean_l, log_var_l = vae.encode(x_l)
    logits = vae.decode(mean_l + torch.exp(0.5 * log_var_l) * eps_l)
    recon = binary_cross_entropy_with_logits(logits, x_l, reduction="none").sum((1, 2, 3))
    kl = 0.5 * (mean_l**2 + log_var_l.exp() - log_var_l - 1).sum(1)
    elbo = weight * (recon + beta * kl).mean()
    assert stats[4].item() == pytest.approx(elbo.item(), rel=1e-5)
    assert loss.item() == pytest.approx((base + elbo).item(), rel=1e-5)
    assert stats[5].item() == 0.0  # nothing replaced


def test_labelled_recon_modes_agree_when_every_example_is_replaced():
    """At p = 1 with unit example every example with an observed label is replaced, so
    "replaced" and "all" decode the same examples; labelled_weight scales the term."""
    batch = _tiny_batch(seed=4)
    args = (*batch, torch.tensor(2.0), torch.tensor(1.0), torch.tensor(1.0))
    replaced = _run(_model("xent"), *args)[1]
    every = _run(_model("xent", labelled_recon="all"), *args)[1]
    half = _run(_model("xent", labelled_recon="all", labelled_weight=0.5), *args)[1]
    assert every[4].item() == pytest.approx(replaced[4].item(), rel=1e-6)
    assert half[4].item() == pytest.approx(0.5 * every[4].item(), rel=1e-6)


@pytest.mark.parametrize("noise", ["none", "posterior"])
@pytest.mark.parametrize("labelled_recon", ["replaced", "all"])
@pytest.mark.parametrize(("unit", "rate"), [("example", 1.0), ("entry", 0.5)])
def test_no_encoder_gradient_through_a_replaced_entry(noise, labelled_recon, unit, rate):
    """With gamma = 0 (no R_s), the labelled mean / log-variance of every replaced entry get
    exactly zero gradient in every mode; the unsupervised dims of decoded examples do get one."""
    model = _model("xent", unit=unit, labelled_recon=labelled_recon, noise=noise)
    x_u, x_l, y, obs, eps_u, eps_l, u = _tiny_batch(seed=2, bl=6)
    obs = torch.ones_like(obs)
    y = y.clamp(min=0)
    mask = replacement_mask(u, obs, rate, unit)
    assert mask.any() and (unit == "example" or not mask.all())
    captured = {}

    def hook(module, inputs, output):
        if output[0].shape[0] == x_l.shape[0]:
            for name, t in zip(("mean", "log_var"), output, strict=True):
                t.retain_grad()
                captured[name] = t

    handle = model.vae.encoder.register_forward_hook(hook)
    loss, _ = _run(
        model, x_u, x_l, y, obs, eps_u, eps_l, u, 4.0, torch.tensor(0.0), torch.tensor(rate)
    )
    handle.remove()
    loss.backward()
    decoded = mask.any(1) if labelled_recon == "replaced" else torch.ones(6, dtype=torch.bool)
    for name in ("mean", "log_var"):
        grad = captured[name].grad
        assert not grad[:, :2][mask].any(), name
        assert grad[decoded, 2:].abs().sum() > 0, name
        if labelled_recon == "all":  # a non-replaced supervised entry is inferred and decoded
            assert (grad[:, :2][~mask] != 0).all(), name
