"""The partially-specified semi-supervised VAE (``model.name = ps_vae``): its objectives against
hand-computed values on tiny tensors (Siddharth et al.'s labelled term = M2's labelled bound +
alpha log q(y|x) when q = q(y|x) q(z|x,y) and y is observed; M2's enumerated bound; non-uniform
importance weights when y depends on z), the Concrete relaxation's limit, the specification's
checks, the step's random numbers (K = 2 batched = 2 separate runs, for M2 here; Siddharth's
through tests/test_methods.py), the fixed labelled pool, the test split, the classification
evaluation, the procedural faces, and one end-to-end CLI run (prepare, train, evaluate, search,
pipeline compile) on the 8x8 digits."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from conftest import ROOT, compile_family, run_cli, search_two_trials
from semidisent.artifacts.prepared import load_prepared
from semidisent.config import load_params
from semidisent.errors import ParamsError
from semidisent.methods import get_method
from semidisent.methods.base import RunSpec
from semidisent.methods.psvae.inference import _nearest_label, predict
from semidisent.methods.psvae.model import Observed, m2_terms, siddharth_terms
from semidisent.methods.psvae.networks import PSNetwork, PSNetworkConfig
from semidisent.methods.psvae.spec import (
    CATEGORICAL,
    GAUSSIAN,
    Specification,
    Variable,
    mnist_spec,
)
from semidisent.objectives.relaxed import concrete_sample, standardised_label
from semidisent.training import train, train_many
from semidisent.training.trainer import build_run

LOG_2PI = math.log(2 * math.pi)
TINY = ["train.batch_size=8", "train.labelled_batch_size=4", "train.log_every=2"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _net(spec: Specification, label_sizes=(3,), seed: int = 0) -> PSNetwork:
    """A 2x2-pixel, 3-unit network: every term below is a handful of numbers."""
    torch.manual_seed(seed)
    config = PSNetworkConfig(1, 2, 2, spec.to_dict(), label_sizes, "mlp", 3, "torch", 0.66)
    return PSNetwork(config)


X = torch.tensor([[[[0.0, 1.0], [0.5, 0.2]]], [[[1.0, 0.0], [0.3, 0.9]]]])


def _bernoulli(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | logits) summed over the 4 pixels, written out."""
    ls = torch.nn.functional.logsigmoid
    return (x * ls(logits) + (1 - x) * ls(-logits)).sum(-1)


def _decoder(net: PSNetwork, code: torch.Tensor) -> torch.Tensor:
    d0, d2 = net.decoder[0], net.decoder[2]
    return torch.relu(code @ d0.weight.T + d0.bias) @ d2.weight.T + d2.bias


def _normal(u: torch.Tensor) -> torch.Tensor:
    return math.sqrt(2) * torch.erfinv(2 * u - 1)


# ------------------------------------------------------------------------------ known answers


def test_observed_y_gives_uniform_weights_and_m2s_labelled_bound_plus_alpha_log_q():
    """q = q(y|x) q(z|x,y), y observed: log w_s = log q(y|x) for every s, the weights are 1/S
    and L = mean_s [log p(x|y,z_s) + log p(y) + log p(z_s) - log q(z_s|x,y)] + alpha log q(y|x),
    M2's labelled bound (Monte Carlo over the same z_s) plus alpha log q(y|x)."""
    spec = mnist_spec(("digit",), (3,), style=2)
    net = _net(spec)
    y = torch.tensor([2, 0])
    s, alpha = 4, 0.1
    u = torch.rand(s, 2, 5, generator=torch.Generator().manual_seed(1))
    obs = Observed(spec, (3,), y[:, None], torch.ones(2, 1, dtype=torch.bool))
    with torch.no_grad():
        t = siddharth_terms(net, X, obs, u, 0.66, alpha)
        # By hand: the trunk, the digit head, the style head given one_hot(y), the decoder.
        flat = X.flatten(1)
        h = torch.relu(flat @ net.trunk[1].weight.T + net.trunk[1].bias)
        logits = h @ net.heads["digit"].weight.T + net.heads["digit"].bias
        log_qy = logits[torch.arange(2), y] - torch.logsumexp(logits, -1)
        e = torch.eye(3)[y]
        out = torch.cat([h, e], -1) @ net.heads["style"].weight.T + net.heads["style"].bias
        mean, log_std = out[:, :2], out[:, 2:]
        eps = _normal(u[..., 3:])  # the style's draws follow the digit's 3 Gumbel draws
        z = mean + log_std.exp() * eps  # (S, N, 2)
        log_px = _bernoulli(_decoder(net, torch.cat([e.expand(s, 2, 3), z], -1)), flat)
        log_pz = (-0.5 * z**2 - 0.5 * LOG_2PI).sum(-1)
        log_qz = (-0.5 * eps**2 - log_std - 0.5 * LOG_2PI).sum(-1)
        m2_labelled = (log_px + math.log(1 / 3) + log_pz - log_qz).mean(0)
    assert torch.equal(t["weights"], torch.full((s, 2), 1 / s))
    torch.testing.assert_close(t["ml"], log_qy)
    # float32: ~100 operations on values of order 10 (rounding ~1e-6 each).
    torch.testing.assert_close(t["bound"], m2_labelled + alpha * log_qy, rtol=1e-5, atol=2e-5)


def test_monte_carlo_kl_of_the_labelled_term_matches_m2s_analytic_kl():
    """The same labelled term with many samples: mean_s [log q(z_s) - log p(z_s)] estimates
    M2's analytic KL(q(z|x,y) || N(0, I)); within 5 standard errors of the estimate (a false
    failure once in ~1.7 million runs)."""
    spec = mnist_spec(("digit",), (3,), style=2)
    net = _net(spec)
    y = torch.tensor([1, 2])
    s = 20000
    u = torch.rand(s, 2, 5, generator=torch.Generator().manual_seed(2))
    obs = Observed(spec, (3,), y[:, None], torch.ones(2, 1, dtype=torch.bool))
    with torch.no_grad():
        t = siddharth_terms(net, X, obs, u, 0.66, 0.0)
        m2 = m2_terms(net, X, obs, torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(3)))
        h = net.features(X)
        out = net.heads["style"](torch.cat([h, torch.eye(3)[y]], -1))
        mean, log_std = out[:, :2], out[:, 2:]
        kl = 0.5 * (mean**2 + (2 * log_std).exp() - 1 - 2 * log_std).sum(-1)
        z = t["values"]["style"]
        per_sample = ((-0.5 * ((z - mean) / log_std.exp()) ** 2 - log_std).sum(-1)
                      + 0.5 * (z**2).sum(-1))  # fmt: skip
    se = per_sample.std(0) / math.sqrt(s)
    # The term's "kl" also carries -log p(y_obs) = log 3 (the uniform prior of the clamped y).
    assert torch.all((t["kl"] - math.log(3) - kl).abs() <= 5 * se), (t["kl"], kl, se)
    # M2's own labelled bound carries that analytic KL exactly.
    torch.testing.assert_close(-m2["bound"] - m2["recon"], kl + math.log(3), rtol=1e-5, atol=1e-5)


def test_m2_enumerates_y_weighs_by_q_and_adds_the_entropy():
    """Unlabelled: U(x) = sum_y q(y|x) [log p(x|y,z_y) - log k - KL(q(z|x,y) || N(0,I))]
    + H(q(y|x)), z_y = mean_y + sigma_y * eps_y from the class's own draws."""
    spec = mnist_spec(("digit",), (3,), style=2)
    net = _net(spec, seed=4)
    u = torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(5))
    none = Observed(spec, (3,), torch.full((2, 1), -1), torch.zeros(2, 1, dtype=torch.bool))
    with torch.no_grad():
        t = m2_terms(net, X, none, u)
        h = net.features(X)
        q = torch.softmax(net.heads["digit"](h), -1)
        bound = -(q * q.log()).sum(-1)
        for c in range(3):
            e = torch.eye(3)[c].expand(2, 3)
            out = net.heads["style"](torch.cat([h, e], -1))
            mean, log_std = out[:, :2], out[:, 2:]
            z = mean + log_std.exp() * _normal(u[c])
            kl = 0.5 * (mean**2 + (2 * log_std).exp() - 1 - 2 * log_std).sum(-1)
            lx = _bernoulli(_decoder(net, torch.cat([e, z], -1)), X.flatten(1))
            bound = bound + q[:, c] * (lx - math.log(3) - kl)
    torch.testing.assert_close(t["bound"], bound, rtol=1e-5, atol=2e-5)
    assert torch.equal(t["ml"], torch.zeros(2))  # nothing observed: no classification term


def test_importance_weights_follow_q_of_y_given_z_when_y_depends_on_z():
    """q = q(z|x) q(y|x,z) with y observed: log w_s = log q(y|x,z_s) differs by sample, and the
    weights are its softmax over samples (Siddharth et al.'s importance sampling)."""
    spec = Specification(
        "z_first",
        (
            Variable("style", GAUSSIAN, 2),
            Variable("digit", CATEGORICAL, 3, label="digit", q_parents=("style",)),
        ),
        factor_names=("digit",),
    )
    spec.check((3,))
    net = _net(spec, seed=6)
    y = torch.tensor([0, 1])
    u = torch.rand(5, 2, 5, generator=torch.Generator().manual_seed(7))
    obs = Observed(spec, (3,), y[:, None], torch.ones(2, 1, dtype=torch.bool))
    with torch.no_grad():
        t = siddharth_terms(net, X, obs, u, 0.66, 0.1)
        h = net.features(X)
        out = net.heads["style"](h)
        z = out[:, :2] + out[:, 2:].exp() * _normal(u[..., :2])
        logits = net.heads["digit"](torch.cat([h.expand(5, 2, 3), z], -1))
    log_w = torch.stack([torch.log_softmax(logits, -1)[:, n, y[n]] for n in range(2)], 1)
    torch.testing.assert_close(t["weights"], torch.softmax(log_w, 0))
    assert t["weights"].std(0).min() > 1e-3  # not uniform
    torch.testing.assert_close(t["ml"], log_w.mean(0))


def test_relaxed_samples_converge_to_one_hot_as_the_temperature_goes_to_zero():
    """softmax((a + g) / tau): its largest entry is at argmax (a + g) for every tau and
    1 - max <= (k - 1) exp(-gap / tau), gap = the distance between the two largest a + g."""
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(1000, 5, generator=g)
    u = torch.rand(1000, 5, generator=g).clamp(1e-6, 1 - 1e-6)
    scores = logits - torch.log(-torch.log(u))
    top2 = scores.topk(2, -1).values
    gap = top2[:, 0] - top2[:, 1]
    hard = torch.eye(5)[scores.argmax(-1)]
    previous = None
    for tau in (1.0, 0.3, 0.1, 0.03, 0.01):
        y = concrete_sample(logits, u, tau)
        assert torch.equal(y.argmax(-1), scores.argmax(-1))
        distance = (y - hard).abs().amax(-1)
        bound = torch.clamp(4 * torch.exp(-gap / tau), max=1.0)
        assert torch.all(distance <= bound + 1e-6)
        mean = float(distance.mean())
        assert previous is None or mean < previous
        previous = mean
    assert previous < 0.02


def test_supervised_gaussians_take_the_priors_quantiles_and_decode_back():
    labels = torch.arange(5)
    values = standardised_label(labels, 5)
    expected = torch.tensor([-1.2816, -0.5244, 0.0, 0.5244, 1.2816])  # Phi^-1(0.1 .. 0.9)
    torch.testing.assert_close(values, expected, atol=1e-4, rtol=0)
    assert torch.equal(_nearest_label(values + 0.1, 5), labels)


def test_predictions_encoder_argmax_and_weighted_inference():
    spec = mnist_spec(("digit",), (3,), style=2)
    net = _net(spec, seed=9)
    out = predict(net, X, 1, torch.Generator().manual_seed(0))["digit"]
    assert torch.equal(out["encoder"], net.heads["digit"](net.features(X)).argmax(-1))
    assert out["inferred"].shape == (2,)  # one sample: its weight is 1, its argmax is the label


# ------------------------------------------------------------------------------ specification


def test_specifications_are_checked_with_one_line_each():
    with pytest.raises(ParamsError, match=r"ps_vae\.variables\[0\]\.kind = 'gaussians'"):
        load_params(None, ["model.name=ps_vae", "ps_vae.spec=custom",
                           "ps_vae.variables=[{name: a, kind: gaussians, size: 2}]"])  # fmt: skip
    with pytest.raises(ParamsError, match="categorical\\(4\\) but label column 'shape' takes 3"):
        load_params(None, ["model.name=ps_vae", "ps_vae.spec=custom",
                           "ps_vae.variables=[{name: a, kind: categorical, size: 4, "
                           "label: shape}]"])  # fmt: skip
    with pytest.raises(ParamsError, match="objective m2 enumerates one categorical"):
        load_params(None, ["model.name=ps_vae", "ps_vae.objective=m2", "ps_vae.spec=custom",
                           "ps_vae.variables=[{name: a, kind: gaussian, size: 2}]"])  # fmt: skip
    with pytest.raises(ParamsError, match="no built-in specification fits"):
        load_params(None, ["model.name=ps_vae", "data.dataset=shapes3d", "data.path=x"])
    with pytest.raises(ParamsError, match=r"ps_vae\.temperature = 0\.0"):
        load_params(None, ["ps_vae.temperature=0"])
    p = load_params(None, ["model.name=ps_vae", "data.dataset=mnist5k", "supervision.n_labels=100"])
    assert p.ps_vae.spec == "auto" and p.method_params() is p.ps_vae


def test_pipeline_arguments_carry_a_custom_specification():
    from semidisent.kfp_pipeline.parameters import arguments, params_from_arguments

    run = load_params(
        ROOT / "params.yaml",
        ["model.name=ps_vae", "ps_vae.objective=m2", "ps_vae.spec=custom",
         "ps_vae.variables=[{name: y, kind: categorical, size: 3, label: shape},"
         " {name: z, kind: gaussian, size: 4, q_parents: [y]}]"],
    )  # fmt: skip
    assert params_from_arguments(arguments(run)) == run


# ------------------------------------------------------------------------------ the step


def _params(small_prepared, *extra: str):
    path, overrides = small_prepared
    params = load_params(None, [*overrides, *TINY, "model.name=ps_vae", *extra])
    return params, load_prepared(path, params)


def test_m2_k_batched_configurations_equal_k_separate_runs(small_prepared):
    """Every draw of the step (the gaussians' normals per enumerated class) comes from the
    batch: two stacked models equal two separate runs (Siddharth's objective: test_methods)."""
    from test_training import _assert_same_training

    params, prepared = _params(small_prepared, "ps_vae.objective=m2", "train.steps=3")
    specs = [
        RunSpec(dataclasses.replace(params.train, seed=s),
                dataclasses.replace(params.ps_vae, m2_alpha=0.1 * (1 + s)))
        for s in (0, 1)
    ]  # fmt: skip
    batched = train_many(prepared, specs, params.model, progress=False)
    assert batched[0].stats["batched_models"] == 2
    for spec, res in zip(specs, batched, strict=True):
        alone = train(prepared, spec, params.model, progress=False)
        a = {k: v.detach() for k, v in alone.model.state_dict().items()}
        b = {k: v.detach() for k, v in res.model.state_dict().items()}
        _assert_same_training(a, b, 3, spec.train.lr)


def test_the_step_draws_exactly_what_the_model_consumes_and_the_pool_is_fixed(small_prepared):
    for objective, per in (("siddharth", 8 * (3 + 4)), ("m2", 3 * 4)):
        params, prepared = _params(small_prepared, f"ps_vae.objective={objective}")
        run = build_run(prepared, [RunSpec(params.train, params.ps_vae)], params.model)
        assert run.stepper.data._split[-1] == (8 + 4) * per
        module = run.stepper.model.module
        assert module.draws_per_example()[0] * module.draws_per_example()[1] == per
    # The labelled batches cycle the mask's training rows in order, never re-drawn (the
    # reference notebooks' flaw, probtorch issue 54): positions (step * B_l + i) mod n_train.
    data, mask = run.stepper.data, prepared.mask
    n_train = len(mask.train)
    for step in (0, 1, 7, 100):
        batch = data.draw(run.stepper.keys, torch.tensor(step))
        pos = (step * 4 + np.arange(4)) % n_train
        assert np.array_equal(batch.y_l.numpy(), mask.labels[mask.train[pos]])


# ------------------------------------------------------------------------------ data


def test_digits_and_mnist5k_hold_out_a_fifth_of_every_class():
    from semidisent.data.registry import build_dataset

    ds = build_dataset("mnist5k")
    counts = np.bincount(ds.labels[ds.holdout], minlength=10)
    assert len(ds.holdout) == 1000 and np.all(counts == 100)
    per_class = np.bincount(ds.labels, minlength=10)
    # the tail of each class in file order: the last held-out row of class c is its last row
    for c in range(10):
        assert ds.holdout[ds.labels[ds.holdout] == c].max() == np.nonzero(ds.labels == c)[0].max()
    assert per_class.sum() == 5000


def test_faces_are_lambertian_albedo_times_clamped_cosine():
    from semidisent.data import faces

    # Flat: n = (0, 0, 1), so I = A * l_z = A cos(az) cos(el).
    flat = np.zeros((8, 8))
    albedo = np.full((8, 8), 0.8)
    img = faces.render(flat, albedo, faces.light(30.0, 20.0))
    np.testing.assert_allclose(img, 0.8 * math.cos(math.radians(30)) * math.cos(math.radians(20)))
    # A plane rising to the right, H = c u: n = (-c, 0, 1) / sqrt(1 + c^2).
    size, c = 8, 0.5
    u, _ = faces._grid(size)
    lit = faces.light(-40.0, 0.0)
    expected = max(0.0, (-c * lit[0] + lit[2]) / math.sqrt(1 + c * c))
    np.testing.assert_allclose(faces.render(c * u, np.ones((size, size)), lit), expected)
    assert np.allclose(np.linalg.norm(faces.light(17.0, -33.0)), 1.0)
    np.testing.assert_allclose(faces.light(90.0, 0.0), [1.0, 0.0, 0.0], atol=1e-12)
    # Light from behind the surface: fully dark (the clamp).
    assert faces.render(flat, albedo, faces.light(180.0, 0.0)).max() == 0.0
    ds = build_dataset_faces()
    assert ds.num_rows == 38 * 9 * 5 and ds.observation_shape == (1, 32, 32)
    rows = ds.rows_of(np.array([[0, 0, 2], [0, 8, 2], [1, 0, 2]]))
    a, b, c2 = ds.images(rows).astype(float)
    assert np.abs(a - b).mean() > 5 and np.abs(a - c2).mean() > 2  # lighting and identity show
    left = a[0, :, :16].mean() - a[0, :, 16:].mean()  # azimuth -60: lit from the viewer's left
    assert left > 10


def build_dataset_faces():
    from semidisent.data.registry import build_dataset

    return build_dataset("faces")


def test_classification_truth_is_in_the_labellers_space_and_the_test_split_is_held_out():
    from semidisent.metrics.classification import label_values, test_rows
    from semidisent.supervision.labellers import binned

    factors = np.random.RandomState(0).randint(0, 40, size=(200, 2))
    factors[:, 0] %= 3
    mine = label_values(factors, (3, 40), (3, 5))
    theirs, sizes = binned(factors, (3, 40), np.random.RandomState(0), num_bins=5)
    assert np.array_equal(mine, theirs) and tuple(sizes) == (3, 5)

    class Pool:
        rows = np.array([1, 5, 9])

    class Grid:
        holdout, num_rows = None, 50

    rows, what = test_rows(Grid(), Pool(), seed=0)
    assert what.startswith("rows outside") and not set(rows) & {1, 5, 9} and len(rows) == 47
    Grid.holdout = np.array([40, 41])
    assert test_rows(Grid(), Pool(), seed=0)[0].tolist() == [40, 41]


# ------------------------------------------------------------------------------ end to end


def test_cli_prepare_train_evaluate_search_and_compile_on_digits(tmp_path):
    """The whole product with model.name = ps_vae on the 8x8 digits, tiny budgets: the stages
    the Kubeflow components call, and the pipeline compiled with this family's parameters."""
    common = ["--params", str(ROOT / "params.yaml"), "-q",
              "-S", "data.dataset=digits", "-S", "supervision.n_labels=60",
              "-S", "model.name=ps_vae", "-S", "tracking.enabled=false",
              "-S", "train.steps=6", "-S", "train.log_every=3", "-S", "train.batch_size=16",
              "-S", "train.labelled_batch_size=8", "-S", "ps_vae.samples=2"]  # fmt: skip
    prep, model, ev = tmp_path / "prep", tmp_path / "model", tmp_path / "eval"
    run_cli("prepare", *common, "--out", str(prep), cwd=tmp_path, check=True)
    run_cli("train", *common, "--prepared", str(prep), "--out", str(model), cwd=tmp_path,
            check=True)  # fmt: skip
    run_cli("evaluate", *common, "--prepared", str(prep), "--model", str(model / "model.pt"),
            "--out", str(ev), cwd=tmp_path, check=True)  # fmt: skip
    metrics = json.loads((ev / "metrics.json").read_text())
    assert 0.0 <= metrics["summary"]["classification_error"] <= 1.0
    assert metrics["classification"]["num_test"] == 359  # the held-out fifth of each class
    meta = json.loads((ev / "metrics_meta.json").read_text())
    assert (
        meta["evaluations"] == ["classification"] and meta["classification"]["split"] == "holdout"
    )
    assert {"plots/conditional_samples.png", "plots/analogies_digit.png"} <= set(meta["pictures"])
    summary = search_two_trials(
        common, prep, tmp_path, "{ps_vae.alpha: {low: 0.05, high: 0.5, log: true}}", steps=4
    )
    # Beside each trial, the family's evaluation (classification here, never selected on).
    assert "classification_error" in summary["best"]["gt"]
    compile_family(common[:2], "ps_vae", "objective", "m2", tmp_path)


def test_the_family_is_registered_and_builds_per_specification(small_prepared):
    method = get_method("ps_vae")
    assert method.params_section == "ps_vae" and set(method.varying) <= {
        f.name for f in dataclasses.fields(type(load_params(None).ps_vae))
    }
    params, prepared = _params(small_prepared)
    run = build_run(prepared, [RunSpec(params.train, params.ps_vae)], params.model)
    net = method.export(run.stepper.model.module)
    assert net.config.network == "conv" and net.spec.name == "dsprites"
    assert method.evaluations_of(net) == ("classification", "factor_metrics")
    assert net.num_latent == 3 + 4  # shape probabilities + four continuous factors
    rebuilt = method.network_from_config(net.config.to_dict())
    assert rebuilt.spec == net.spec
    # The random-encoder baseline is this network as training starts it (seed train.seed).
    fresh = method.random_network(params, prepared)
    for k, v in net.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
