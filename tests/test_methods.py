"""Model families behind the method interface: the semi-supervised family's regularisers
against hand-computed values and the published formulas, gradient separation of the networks
with optimisers of their own, K batched configurations = K separate runs per family, and the
generalised step equal bit for bit to the plain semi-supervised step."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from semidisent.artifacts.prepared import load_prepared
from semidisent.config import load_params
from semidisent.config.schema import METHOD_SECTIONS
from semidisent.methods import METHOD_NAMES, get_method
from semidisent.methods.base import RunSpec
from semidisent.methods.s2.models import FactorVAE, MineVAE, SupervisedVAE
from semidisent.methods.s2.regularisers import (
    capacity,
    covariance_of_mean,
    dip_regulariser,
    shuffle_codes,
    total_correlation,
)
from semidisent.models import VAE, VAEConfig
from semidisent.objectives import ObjectiveConfig
from semidisent.objectives.schedule import gamma_at
from semidisent.training import train, train_many
from semidisent.training.optim import adam_step
from semidisent.training.trainer import build_run

TINY = ["train.batch_size=8", "train.labelled_batch_size=4", "train.log_every=2"]
# Small versions of the families' own networks (the tests check the algebra, not the sizes).
SMALL_NETS = ["s2_factor_vae.discriminator_units=32", "s2_factor_vae.discriminator_layers=2"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _params(small_prepared, *extra: str):
    path, overrides = small_prepared
    params = load_params(None, [*overrides, *TINY, *SMALL_NETS, *extra])
    return params, load_prepared(path, params)


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------ regularisers


def test_total_correlation_against_the_formula_written_out():
    """dlib's minibatch-weighted estimate, by explicit loops over j, i, l in float64."""
    g = torch.Generator().manual_seed(0)
    b, lat = 4, 3
    mean = torch.randn(b, lat, generator=g, dtype=torch.float64)
    log_var = 0.3 * torch.randn(b, lat, generator=g, dtype=torch.float64)
    z = mean + torch.exp(0.5 * log_var) * torch.randn(b, lat, generator=g, dtype=torch.float64)

    def log_n(x, m, v):
        return -0.5 * ((x - m) ** 2 / math.exp(v) + v + math.log(2 * math.pi))

    M, V, Z = mean.numpy(), log_var.numpy(), z.numpy()
    expected = 0.0
    for j in range(b):
        joint = [sum(log_n(Z[j, k], M[i, k], V[i, k]) for k in range(lat)) for i in range(b)]
        log_qz = np.logaddexp.reduce(joint)
        log_prod = sum(
            np.logaddexp.reduce([log_n(Z[j, k], M[i, k], V[i, k]) for i in range(b)])
            for k in range(lat)
        )
        expected += (log_qz - log_prod) / b
    assert total_correlation(z, mean, log_var).item() == pytest.approx(expected, rel=1e-12)
    # One sample: q(z) and the product of its marginals coincide.
    assert total_correlation(z[:1], mean[:1], log_var[:1]).item() == pytest.approx(0.0, abs=1e-12)


def test_dip_regulariser_and_covariance_by_hand():
    mean = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    cov = covariance_of_mean(mean)  # E[mu mu^T] = diag(0.5, 0.5), E[mu] = 0
    assert cov.tolist() == [[0.5, 0.0], [0.0, 0.5]]
    # off-diagonal 0; diagonal: lambda_d * 2 * (0.5 - 1)^2 = 3 * 0.5
    assert dip_regulariser(cov, 2.0, 3.0).item() == pytest.approx(1.5)
    skew = torch.tensor([[1.0, 0.3], [0.3, 2.0]])
    # lambda_od * 2 * 0.09 + lambda_d * (0 + 1)
    assert dip_regulariser(skew, 2.0, 3.0).item() == pytest.approx(2 * 2 * 0.09 + 3 * 1.0)


def test_capacity_schedule_is_burgess_linear_ramp():
    c_max, threshold = torch.tensor(10.0), torch.tensor(100)
    for step, expected in [(0, 0.0), (50, 5.0), (100, 10.0), (250, 10.0)]:
        assert capacity(c_max, torch.tensor(step), threshold).item() == pytest.approx(expected)


def test_shuffle_codes_permutes_each_dimension_on_its_own():
    z = torch.arange(12.0).reshape(6, 2)
    u = torch.rand(12, generator=torch.Generator().manual_seed(1))
    s = shuffle_codes(z, u)
    for j in range(2):
        assert sorted(s[:, j].tolist()) == z[:, j].tolist()
    assert torch.equal(shuffle_codes(z, u), s)  # a function of the uniforms only
    assert not torch.equal(s, z)


# ------------------------------------------------------------------------------ objectives


def _tiny(bl: int = 4, f: int = 2, lat: int = 4, extra: int = 0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x_u = (torch.rand(4, 1, 64, 64, generator=g) > 0.7).float()
    x_l = (torch.rand(bl, 1, 64, 64, generator=g) > 0.7).float()
    y = torch.randint(0, 3, (bl, f), generator=g)
    obs = torch.ones(bl, f, dtype=torch.bool)
    eps_u = torch.randn(4, lat, generator=g)
    eps_l = torch.randn(bl, lat, generator=g)
    u = torch.rand(bl, f, generator=g)
    u_extra = torch.rand(extra, generator=g)
    return x_u, x_l, y, obs, eps_u, eps_l, u, u_extra


def _grads(module, loss):
    names = [n for n, _ in module.named_parameters()]
    grads = torch.autograd.grad(
        loss, list(module.parameters()), allow_unused=True, retain_graph=True
    )
    return dict(zip(names, grads, strict=True))


def test_factor_vae_tc_and_discriminator_losses_and_their_gradients_are_separated():
    torch.manual_seed(0)
    cfg = ObjectiveConfig(label_sizes=(3, 3), decode_labelled=False)
    model = FactorVAE(VAE(VAEConfig(num_latent=4)), cfg, layers=2, units=16, init="xavier")
    x_u, x_l, y, obs, eps_u, eps_l, u, u_extra = _tiny(extra=4 * 4)
    hyper = {"beta": torch.tensor(1.0), "gamma": torch.tensor(7.0)}
    loss, stats = model.objective(
        x_u, x_l, y, obs, eps_u, eps_l, u, hyper, torch.tensor(0.0), torch.tensor(0.0),
        torch.tensor(0), u_extra,
    )  # fmt: skip
    names = model.stat_names
    vae = model.vae
    mean, log_var = vae.encode(x_u)
    z = mean + torch.exp(0.5 * log_var) * eps_u
    logits, probs = model.discriminator(z)
    _, probs_shuffled = model.discriminator(shuffle_codes(z, u_extra))
    tc = (logits[:, 0] - logits[:, 1]).mean()
    disc = -(0.5 * probs[:, 0].log().mean() + 0.5 * probs_shuffled[:, 1].log().mean())
    assert stats[names.index("tc")].item() == pytest.approx(tc.item(), rel=1e-5)
    assert stats[names.index("disc")].item() == pytest.approx(disc.item(), rel=1e-5)
    kl = stats[names.index("kl")]
    expected_model_loss = stats[names.index("recon")] + kl + 7.0 * tc
    assert stats[0].item() == pytest.approx(expected_model_loss.item(), rel=1e-5)
    # One backward pass: the discriminator gets d(disc)/dtheta only; the encoder gets the
    # model loss's gradient only (as dlib's two minimize calls with separate var_lists).
    g_total = _grads(model, loss)
    g_disc = _grads(model, disc)
    for n, g in g_total.items():
        if n.startswith("discriminator."):
            torch.testing.assert_close(g, g_disc[n], rtol=1e-5, atol=1e-7)
    recon = (
        torch.nn.functional.binary_cross_entropy_with_logits(vae.decode(z), x_u, reduction="none")
        .sum((1, 2, 3))
        .mean()
    )
    kl_t = (0.5 * (mean**2 + log_var.exp() - log_var - 1)).sum(1).mean()
    model_only = recon + kl_t + 7.0 * tc
    g_model = _grads(model, model_only)
    for n, g in g_total.items():
        if n.startswith("vae.encoder"):
            torch.testing.assert_close(g, g_model[n], rtol=1e-4, atol=1e-6)


def test_mine_with_a_constant_estimator_has_zero_information_and_separated_gradients():
    """With zero weights a statistics network is constant, T = b: the Donsker-Varadhan estimate
    mean T + log B - logsumexp T is exactly 0 for every pair, and so is the penalty; the
    estimators' loss is their negated sum and reaches only them."""
    torch.manual_seed(0)
    cfg = ObjectiveConfig(label_sizes=(3, 3), decode_labelled=False)
    model = MineVAE(VAE(VAEConfig(num_latent=4)), cfg, units=5, init="xavier")
    with torch.no_grad():
        for n, p in model.estimators.named_parameters():
            p.fill_(0.7 if n == "b_out" else 0.0)
    _, x_l, y, obs, *_, u_extra = _tiny(extra=2 * 4 * 4)
    mean_l, _ = model.vae.encode(x_l)
    penalty, aux, _ = model.supervised_term(mean_l, y, obs, u_extra)
    assert penalty.item() == pytest.approx(0.0, abs=1e-6)
    assert aux.item() == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():  # non-trivial estimators: gradients go where they belong
        for p in model.estimators.parameters():
            p.normal_(0.0, 0.5)
    mean_l, _ = model.vae.encode(x_l)
    penalty, aux, _ = model.supervised_term(mean_l, y, obs, u_extra)
    g_pen = _grads(model, penalty)
    g_aux = _grads(model, aux)
    assert all(g is None or not g.any() for n, g in g_pen.items() if n.startswith("estimators"))
    assert all(g is None or not g.any() for n, g in g_aux.items() if n.startswith("vae."))
    assert any(g is not None and g.abs().sum() > 0 for n, g in g_pen.items() if "encoder" in n)


def test_supervised_encoder_learns_from_the_regulariser_alone():
    """dlib's ``supervised``: the decoder reconstructs stop_gradient(z); with gamma_sup = 0 the
    encoder receives no gradient at all, the decoder does."""
    torch.manual_seed(0)
    model = SupervisedVAE(VAE(VAEConfig(num_latent=4)), ObjectiveConfig(label_sizes=(3, 3)))
    x_u, x_l, y, obs, eps_u, eps_l, u, _ = _tiny()
    hyper = {"beta": torch.tensor(4.0)}
    loss, _ = model.objective(x_u, x_l, y, obs, eps_u, eps_l, u, hyper, torch.tensor(0.0),
                              torch.tensor(1.0))  # fmt: skip
    grads = _grads(model, loss)
    assert all(g is None or not g.any() for n, g in grads.items() if "encoder" in n)
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "decoder" in n)


@pytest.mark.parametrize(
    ("name", "extra", "expected"),
    [  # the unsupervised regulariser of each member, from the batch's own KL / codes
        ("s2_beta_tc_vae", [], "kl + (beta - 1) * tc"),
        ("s2_dip_vae", ["s2_dip_vae.lambda_od=3", "s2_dip_vae.lambda_d_factor=2"], "kl + dip"),
        ("s2_dip_vae", ["s2_dip_vae.dip_type=ii"], "kl + dip"),
        (
            "s2_annealed_vae",
            ["s2_annealed_vae.c_max=4", "s2_annealed_vae.iteration_threshold=10"],
            "gamma * |kl - c|",
        ),
    ],
)
def test_each_member_adds_its_regulariser_to_the_elbo(small_prepared, name, extra, expected):
    params, prepared = _params(small_prepared, f"model.name={name}", "train.beta=3", *extra)
    method = get_method(name)
    run = build_run(prepared, [RunSpec(params.train, params.method_params())], params.model)
    module = run.stepper.model.module
    batch = run.stepper.data.draw(run.stepper.keys, torch.tensor(5))
    from semidisent.training.step import model_batch

    mb = model_batch(batch, 0)
    hyper = {k: v[0] for k, v in run.stepper.hyper.items()}
    step = torch.tensor(5)
    _, stats = module(mb, hyper, step)
    names = method.stat_names()
    s = dict(zip(names, stats.tolist(), strict=True))
    gamma = gamma_at(step, hyper["gamma_sup"], hyper["gamma_code"], hyper["gamma_threshold"])
    # loss = recon + regulariser + gamma_sup * R_s + lab: recover the regulariser
    reg = s["loss"] - s["recon"] - float(gamma) * s["sup"] - s["lab"]
    kl = s["kl"]
    if name == "s2_beta_tc_vae":
        want = kl + (3.0 - 1.0) * s["tc"]
    elif name == "s2_dip_vae":
        mean, log_var = module.vae.encode(mb.x_u)
        cov = covariance_of_mean(mean)
        if params.s2_dip_vae.dip_type == "ii":
            cov = cov + torch.diag(log_var.exp().mean(0))
        lod = params.s2_dip_vae.lambda_od
        dip = dip_regulariser(cov, lod, params.s2_dip_vae.lambda_d_factor * lod).item()
        assert s["dip"] == pytest.approx(dip, rel=1e-4)
        want = kl + dip
    else:
        c = min(4.0, 4.0 * 5 / 10)
        assert s["capacity"] == pytest.approx(c)
        want = params.s2_annealed_vae.gamma * abs(kl - c)
    assert reg == pytest.approx(want, rel=1e-4, abs=1e-3), expected


# ------------------------------------------------------------------------------ batching


def _varied(name: str, params, seeds=(0, 1)) -> list[RunSpec]:
    """Two configurations of one family that differ in a per-model key of train and, where the
    family has one, of its own section."""
    own = params.method_params()
    method = get_method(name)
    specs = []
    for i, seed in enumerate(seeds):
        tp = dataclasses.replace(params.train, seed=seed, beta=2.0 + 2 * i)
        mp = own
        if own is not None and method.varying:
            key = method.varying[0]
            mp = dataclasses.replace(own, **{key: getattr(own, key) * (1 + i)})
        specs.append(RunSpec(tp, mp))
    return specs


@pytest.mark.parametrize("name", [n for n in METHOD_NAMES if n != "s2vae"])
def test_k_batched_configurations_equal_k_separate_runs(small_prepared, name):
    from test_training import _assert_same_training

    params, prepared = _params(small_prepared, f"model.name={name}", "train.steps=3",
                               "train.replacement_rate=0.5")  # fmt: skip
    specs = _varied(name, params)
    batched = train_many(prepared, specs, params.model, progress=False)
    assert batched[0].stats["batched_models"] == 2
    for spec, res in zip(specs, batched, strict=True):
        alone = train(prepared, spec, params.model, progress=False)
        assert alone.stats["batched_models"] == 1
        _assert_same_training(_state(alone.model), _state(res.model), 3, spec.train.lr)
        assert set(res.curves[-1]) == {"step", *get_method(name).stat_names()}


def test_every_family_has_its_section_and_its_params_validate():
    for name in METHOD_NAMES:
        method = get_method(name)
        assert method.name == name
        if method.params_section is not None:
            assert METHOD_SECTIONS[method.params_section] is not None
            section = METHOD_SECTIONS[method.params_section]()
            assert set(method.varying) <= {f.name for f in dataclasses.fields(section)}
    assert set(METHOD_SECTIONS) <= set(METHOD_NAMES)


def test_mine_refuses_partial_labels_on_load():
    from semidisent.errors import ParamsError

    with pytest.raises(ParamsError, match="s2_mine_vae"):
        load_params(None, ["model.name=s2_mine_vae", "supervision.labeller=partial"])


# ------------------------------------------------------------------------------ the step


def test_the_generalised_step_equals_the_plain_semi_supervised_step_bit_for_bit(small_prepared):
    """The method interface adds nothing to the arithmetic of the original model: three steps of
    the Stepper equal three steps written out as the pre-interface code did them (draw, gamma
    schedule outside the model, the objective, one gradient, Adam), bit for bit."""
    params, prepared = _params(small_prepared, "train.replacement_rate=0.5",
                               "train.gamma_schedule=ramp", "train.gamma_threshold=2")  # fmt: skip
    run = build_run(prepared, [params.train], params.model)
    stepper = run.stepper
    module = copy.deepcopy(stepper.model.module)
    names = [n for n, _ in module.named_parameters()]
    ps = [p for _, p in module.named_parameters()]
    m = [torch.zeros_like(p) for p in ps]
    v = [torch.zeros_like(p) for p in ps]
    count = torch.zeros(1)
    lr = torch.tensor([params.train.lr])
    active = torch.ones(1, dtype=torch.bool)
    t = params.train
    for s in range(3):
        step = torch.tensor(s)
        batch = stepper.data.draw(stepper.keys, step)
        gamma = gamma_at(
            step, torch.tensor([t.gamma_sup]), torch.tensor([1]), torch.tensor([t.gamma_threshold])
        )[0]
        loss, _ = module.objective(
            batch.x_u[0], batch.x_l, batch.y_l, batch.obs_l, batch.eps_u[0], batch.eps_l[0],
            batch.u_rep[0], {"beta": torch.tensor(t.beta)}, gamma,
            torch.tensor(t.replacement_rate),
        )  # fmt: skip
        grads = torch.autograd.grad(loss[None].sum(), ps, allow_unused=True)
        adam_step(ps, list(grads), m, v, count, lr, active, False)
        stepper.step_body()
    for n, p in zip(names, ps, strict=True):
        assert torch.equal(p, stepper.params[n]), n


@pytest.mark.slow
def test_factor_vae_two_optimisers_batched_run_through_the_compiled_path(small_prepared):
    """FactorVAE's model and discriminator optimisers, K = 2 stacked models, compiled step
    (inductor on the CPU; the code a CUDA graph captures): equal to the eager run."""
    from test_training import _assert_same_training

    params, prepared = _params(small_prepared, "model.name=s2_factor_vae", "train.steps=3")
    specs = _varied("s2_factor_vae", params)
    fast_specs = [RunSpec(dataclasses.replace(s.train, fast="on"), s.method) for s in specs]
    fast = train_many(prepared, fast_specs, params.model, progress=False)
    assert fast[0].stats["fast_path"] and fast[0].stats["batched_models"] == 2
    eager = train_many(prepared, specs, params.model, progress=False)
    for spec, a, b in zip(specs, eager, fast, strict=True):
        _assert_same_training(_state(a.model), _state(b.model), 3, spec.train.lr)
        assert a.curves[-1]["disc"] == pytest.approx(b.curves[-1]["disc"], rel=1e-3)
