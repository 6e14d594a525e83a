"""The Deep Rendering Mixture Model (``model.name = drmm``): its bottom-up pass is exactly the
equivalent plain conv net's forward pass; with the switches fixed its top-down pass is the adjoint
of the bottom-up pass's linear part (inner-product test) and that linear part reproduces the
network's logits; the objective written out term by term; the EMA priors' update; divisive
normalisation's known answer; the params' one-line errors; a short training that learns; one
end-to-end CLI run (prepare, train, evaluate with pictures, search, compile). The shallow RMM's
max-sum = conv-net classification and its hard EM: tests/test_rmm.py. K batched = K separate
runs: tests/test_methods.py, which runs it for every family."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import ROOT, compile_family, run_cli, search_two_trials
from semidisent.config import load_params
from semidisent.errors import ParamsError
from semidisent.methods import get_method
from semidisent.methods.drmm.model import DRMM, entropy_term
from semidisent.methods.drmm.networks import (
    DivisiveNorm,
    DRMMConfig,
    DRMMNetwork,
    pool_2x2,
    unpool_2x2,
)
from semidisent.objectives.s2vae import ModelBatch
from semidisent.training.optim import sgd_step


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _network(seed: int = 0, **kw) -> DRMMNetwork:
    torch.manual_seed(seed)
    config = DRMMConfig(**{"in_channels": 1, "height": 28, "width": 28, "num_classes": 10, **kw})
    net = DRMMNetwork(config)
    # Random biases: xavier leaves them at zero, which would hide a bias handled wrongly.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.uniform_(-0.1, 0.1)
    return net


def _plain_cnn(net: DRMMNetwork) -> nn.Sequential:
    """conv -> ReLU -> max-pool per layer, flatten, linear: the textbook CNN, same weights."""
    layers: list[nn.Module] = []
    for conv in net.convs:
        copy = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                         padding=conv.padding, bias=conv.bias is not None)  # fmt: skip
        copy.load_state_dict(conv.state_dict())
        layers += [copy, nn.ReLU(), nn.MaxPool2d(2)]
    head = nn.Linear(net.classifier.in_features, net.classifier.out_features)
    head.load_state_dict(net.classifier.state_dict())
    return nn.Sequential(*layers, nn.Flatten(), head)


# ------------------------------------------------------------------------------ the theory


@pytest.mark.parametrize(
    ("size", "channels", "kernels", "bias"),
    [(28, (8, 16, 32), (5, 3, 3), True), (13, (4, 6), (3, 5), False),
     (8, (6, 8, 10), (3, 3, 3), True)],
)  # fmt: skip
def test_bottom_up_pass_equals_the_plain_conv_net_exactly(size, channels, kernels, bias):
    """Max-sum inference (conv, max over a = ReLU, max over t = max-pool) is the CNN's forward
    pass bit for bit (odd sizes included: the pools drop a last row / column alike)."""
    net = _network(height=size, width=size, channels=channels, kernel_sizes=kernels, bias=bias)
    cnn = _plain_cnn(net)
    x = torch.rand(16, 1, size, size, generator=torch.Generator().manual_seed(1))
    assert torch.equal(net(x), cnn(x))
    # The gradients too: the position switch routes the gradient to the argmax, like max-pool.
    g1 = torch.autograd.grad(net(x).square().sum(), net.convs[0].weight)[0]
    g2 = torch.autograd.grad(cnn(x).square().sum(), cnn[0].weight)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)


def _linear_part(net: DRMMNetwork, x: torch.Tensor, switches) -> torch.Tensor:
    """The bottom-up pass at fixed switches without biases: per layer conv, times a, the value
    at t; then W."""
    h = x
    for conv, s in zip(net.convs, switches, strict=True):
        z = nn.functional.conv2d(h, conv.weight, padding=conv.padding) * s.a
        n, c, hh, ww = z.shape
        h2, w2 = hh // 2, ww // 2
        windows = (z[:, :, : 2 * h2, : 2 * w2].reshape(n, c, h2, 2, w2, 2)
                   .permute(0, 1, 2, 4, 3, 5).reshape(n, c, h2, w2, 4))  # fmt: skip
        h = (windows * s.t).sum(-1)
    return h.flatten(1) @ net.classifier.weight.T


@pytest.mark.parametrize("size", [28, 13])
def test_top_down_pass_is_the_adjoint_of_the_bottom_up_linear_part(size):
    """<A x, y> = <x, A^T y> with A the bottom-up pass at fixed switches (biases out) and A^T
    the top-down rendering through the same switches, in float64 for random x and y."""
    net = _network(height=size, width=size, channels=(4, 6, 8), kernel_sizes=(5, 3, 3),
                   bias=False).double()  # fmt: skip
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(3, 1, size, size, generator=g, dtype=torch.float64)
    logits, switches = net.bottom_up(x0)
    # The linear part is the network itself at its own switches, less the softmax layer's bias
    # (conv biases off: no other affine offset).
    want = logits - net.classifier.bias
    torch.testing.assert_close(_linear_part(net, x0, switches), want, rtol=1e-12, atol=1e-12)
    x = torch.randn(3, 1, size, size, generator=g, dtype=torch.float64)
    y = torch.randn(3, 10, generator=g, dtype=torch.float64)
    ax = _linear_part(net, x, switches)
    aty, _ = net.top_down(net.top(y), switches)
    lhs, rhs = (ax * y).sum(), (x * aty).sum()
    # float64 sums of ~10^4 products: agreement to ~1e-12 relative.
    lhs, rhs, ax = lhs.detach(), rhs.detach(), ax.detach()
    assert float(abs(lhs - rhs)) <= 1e-10 * float(ax.abs().sum() * y.abs().max() + 1.0)


def test_pool_and_unpool_are_adjoint_and_pool_is_max_pool():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64)
    pooled, onehot = pool_2x2(x)
    assert torch.equal(pooled, nn.functional.max_pool2d(x, 2))
    assert torch.equal(onehot.sum(-1), torch.ones_like(pooled))
    z = torch.randn_like(pooled)
    up = unpool_2x2(z, onehot, 7, 9)
    assert up.shape == x.shape and torch.equal(up[:, :, 6], torch.zeros_like(up[:, :, 6]))
    u = torch.randn_like(x)
    windows = (u[:, :, :6, :8].reshape(2, 3, 3, 2, 4, 2).permute(0, 1, 2, 4, 3, 5)
               .reshape(2, 3, 3, 4, 4))  # fmt: skip
    assert float((windows * onehot).sum(-1).mul(z).sum()) == pytest.approx(float((u * up).sum()))


def test_divisive_normalisation_known_answers():
    dn = DivisiveNorm(3)
    with torch.no_grad():
        dn.b.fill_(0.7)
    # A map constant over channels and space: nothing is left after the local mean but b.
    x = torch.full((1, 4, 6, 6), 2.5)
    out = dn(x)
    torch.testing.assert_close(out[:, :, 1:-1, 1:-1], torch.full((1, 4, 4, 4), 0.7))
    # Zero local variance: the scale is sqrt(alpha / 2) exactly (alpha = 1).
    y = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    centred = y - nn.functional.avg_pool2d(y.mean(1, keepdim=True), 3, 1, 1)
    var = nn.functional.avg_pool2d(centred.square().mean(1, keepdim=True), 3, 1, 1)
    want = centred / torch.sqrt((1.0 + var / (0.5 + 1e-5) ** 2) / 2.0) + 0.7
    torch.testing.assert_close(dn(y), want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ the objective


def _batch(n_u: int = 6, n_l: int = 5, size: int = 8, seed: int = 0) -> ModelBatch:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n_l, 1), generator=g)
    obs = torch.ones(n_l, 1, dtype=torch.bool)
    obs[1] = False  # one labelled row with its label unobserved (partial labeller)
    y[1] = -1
    return ModelBatch(torch.rand(n_u, 1, size, size, generator=g),
                      torch.rand(n_l, 1, size, size, generator=g), y, obs,
                      torch.zeros(n_u, 1), torch.zeros(n_l, 1), torch.zeros(n_l, 1),
                      torch.zeros(0))  # fmt: skip


HYPER = {"rc_weight": torch.tensor(1.7), "kl_weight": torch.tensor(0.4),
         "nn_weight": torch.tensor(0.9)}  # fmt: skip


@pytest.mark.parametrize("cost_on", ["unlabelled", "labelled", "both"])
def test_objective_is_the_reference_cost_written_out(cost_on):
    net = _network(height=8, width=8, channels=(4, 6), kernel_sizes=(3, 3)).double()
    model = DRMM(net, "drmm", cost_on).double()
    b = _batch()
    b = b._replace(x_u=b.x_u.double(), x_l=b.x_l.double())
    loss, stats = model(b, {k: v.double() for k, v in HYPER.items()}, torch.tensor(0))
    s = dict(zip(model.stat_names, stats.tolist(), strict=True))

    def terms(x):
        logits, sw = net.bottom_up(x)
        gamma = torch.softmax(logits, -1)
        onehot = torch.eye(10, dtype=x.dtype)[logits.argmax(-1)]
        # The rendering written out layer by layer (unpool through t, times a, conv^T).
        z = (onehot @ net.classifier.weight).view(-1, *net.top_shape)
        nn_pen = 0.0
        for i in (1, 0):
            nn_pen += float(torch.relu(-z).square().mean())
            hh = net.config.sizes()[i]
            z = unpool_2x2(z, sw[i].t, *hh) * sw[i].a
            z = nn.functional.conv_transpose2d(z, net.convs[i].weight, padding=1)
        recon = float((x - z).square().mean())
        kl = float(-(gamma * torch.log(10 * gamma + 1e-8)).sum(-1).mean())
        return recon, kl, nn_pen

    logits_l = net(b.x_l)
    keep = [0, 2, 3, 4]
    xent = float(nn.functional.cross_entropy(logits_l[keep], b.y_l[keep, 0]))
    parts = {"unlabelled": [b.x_u], "labelled": [b.x_l], "both": [b.x_u, b.x_l]}[cost_on]
    recon, kl, nn_pen = (float(np.mean(v)) for v in zip(*(terms(x) for x in parts), strict=True))
    w = {k: float(v) for k, v in HYPER.items()}  # float32 values, as the stepper's tensors
    want = xent + w["rc_weight"] * recon + w["kl_weight"] * kl + w["nn_weight"] * nn_pen
    assert s["xent"] == pytest.approx(xent, rel=1e-9)
    assert s["recon"] == pytest.approx(recon, rel=1e-9)
    assert s["nonneg"] == pytest.approx(nn_pen, rel=1e-9, abs=1e-15)
    assert s["entropy"] == pytest.approx((kl + math.log(10)) / math.log(10), rel=1e-9)
    assert s["loss"] == pytest.approx(want, rel=1e-9)
    wrong = float((logits_l[keep].argmax(-1) != b.y_l[keep, 0]).double().mean())
    assert s["train_error"] == pytest.approx(wrong)
    # The priors' quadratic is added to the differentiated loss only.
    assert float(loss) > s["loss"]


def test_cnn_objective_is_the_labelled_cross_entropy_alone():
    net = _network(height=8, width=8, channels=(4, 6), kernel_sizes=(3, 3), ema_priors=False)
    model = DRMM(net, "cnn")
    b = _batch()
    loss, _ = model(b, HYPER, torch.tensor(0))
    keep = [0, 2, 3, 4]
    want = nn.functional.cross_entropy(net(b.x_l)[keep], b.y_l[keep, 0])
    assert float(loss) == pytest.approx(float(want), rel=1e-6)
    # The unlabelled batch does not enter.
    loss2, _ = model(b._replace(x_u=torch.rand_like(b.x_u)), HYPER, torch.tensor(0))
    assert torch.equal(loss, loss2)


def test_entropy_term_is_entropy_minus_log_classes():
    logits = torch.randn(7, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    p = torch.softmax(logits, -1)
    h = -(p * p.log()).sum(-1).mean()
    assert float(entropy_term(logits)) == pytest.approx(float(h - math.log(5)), abs=1e-7)


def test_ema_priors_update_is_the_moving_average():
    """One gradient step at lr 1 - momentum on the priors' quadratic = the reference's EMA
    pi <- m pi + (1 - m) batch mean of the switches (of the unlabelled batch)."""
    net = _network(height=8, width=8, channels=(4, 6), kernel_sizes=(3, 3))
    with torch.no_grad():
        for p in net.prior_a:
            p.uniform_(0, 1)
    model = DRMM(net, "drmm")
    b = _batch()
    before = [p.detach().clone() for p in net.prior_a]
    _, switches = net.bottom_up(b.x_u)
    loss, _ = model(b, HYPER, torch.tensor(0))
    priors = list(net.prior_a) + list(net.prior_t)
    grads = torch.autograd.grad(loss, priors)
    m = 0.99
    sgd_step(priors, grads, [], [], torch.zeros(()), torch.tensor(1 - m), torch.tensor(True),
             False)  # fmt: skip
    for p, old, s in zip(net.prior_a, before, switches, strict=True):
        torch.testing.assert_close(p.detach(), m * old + (1 - m) * s.a.mean(0))
    for p, s in zip(net.prior_t, switches, strict=True):
        torch.testing.assert_close(p.detach(), m * 0.25 + (1 - m) * s.t.mean(0))


# ------------------------------------------------------------------------------ params


def test_params_are_checked_with_one_line_each():
    base = ["model.name=drmm", "data.dataset=digits"]
    with pytest.raises(ParamsError, match=r"drmm\.kernel_sizes = \[3\]: expected one kernel"):
        load_params(None, [*base, "drmm.kernel_sizes=[3]"])
    with pytest.raises(ParamsError, match=r"drmm\.kernel_sizes = \[4, 3, 3\]: expected odd"):
        load_params(None, [*base, "drmm.kernel_sizes=[4,3,3]"])
    with pytest.raises(ParamsError, match=r"drmm\.label = 'shape': expected a label column"):
        load_params(None, [*base, "drmm.label=shape"])
    with pytest.raises(ParamsError, match=r"drmm\.channels = \[8, 8, 8, 8\]: expected at most 3"):
        load_params(None, [*base, "drmm.channels=[8,8,8,8]", "drmm.kernel_sizes=[3,3,3,3]"])
    with pytest.raises(ParamsError, match=r"drmm\.prior_momentum"):
        load_params(None, [*base, "drmm.prior_momentum=1.0"])
    with pytest.raises(ParamsError, match=r"drmm\.channels"):
        load_params(None, [*base, "drmm.channels=[0,4,4]"])
    # dSprites: the first column (shape) by default, any factor by name.
    p = load_params(None, ["model.name=drmm", "drmm.label=scale"])
    assert p.drmm.label == "scale"
    method = get_method("drmm")
    fields = {f.name for f in dataclasses.fields(type(load_params(None).drmm))}
    assert method.params_section == "drmm" and set(method.varying) <= fields


# ------------------------------------------------------------------------------ the product

ONE = {"OMP_NUM_THREADS": "1"}


def test_cli_prepare_train_evaluate_search_and_compile_on_digits(tmp_path):
    """200 steps on the 8x8 digits with 100 labels learn: the test error is far below chance
    (0.9); measured ~0.1-0.2, the bound 0.5 leaves room for any seed and machine."""
    common = ["--params", str(ROOT / "params.yaml"), "-q",
              "-S", "data.dataset=digits", "-S", "supervision.n_labels=100",
              "-S", "model.name=drmm", "-S", "tracking.enabled=false",
              "-S", "train.steps=200", "-S", "train.log_every=50", "-S", "train.batch_size=64",
              "-S", "train.labelled_batch_size=32", "-S", "train.lr=0.001",
              "-S", "drmm.channels=[16,32]", "-S", "drmm.kernel_sizes=[3,3]"]  # fmt: skip
    prep, model, ev = tmp_path / "prep", tmp_path / "model", tmp_path / "eval"
    run_cli("prepare", *common, "--out", str(prep), cwd=tmp_path, env=ONE, check=True)
    run_cli("train", *common, "--prepared", str(prep), "--out", str(model), cwd=tmp_path,
            env=ONE, check=True)  # fmt: skip
    run_cli("evaluate", *common, "--prepared", str(prep), "--model", str(model / "model.pt"),
            "--out", str(ev), cwd=tmp_path, env=ONE, check=True)  # fmt: skip
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["summary"]["classification_error"] < 0.5
    meta = json.loads((ev / "metrics_meta.json").read_text())
    assert meta["evaluations"] == ["classification"]
    assert meta["classification"]["split"] == "holdout"
    assert {"plots/reconstructions.png", "plots/renderings.png", "plots/templates.png"} <= set(
        meta["pictures"]
    )
    stats = json.loads((model / "train_stats.json").read_text())
    assert set(stats["final_losses"]) == set(get_method("drmm").stat_names())
    summary = search_two_trials(
        common, prep, tmp_path, "{drmm.rc_weight: {low: 0.1, high: 2.0}}", steps=2, env=ONE
    )
    assert "classification_error" in summary["best"]["gt"]
    compile_family(common[:2], "drmm", "objective", "cnn", tmp_path, env=ONE)


def test_study_ci_preset_pairs_drmm_with_the_cnn_on_test_accuracy(tmp_path):
    """studies/drmm.yaml's ci preset end to end: both arms on the same pools and seeds, scored
    on the classification evaluation's test accuracy (a study metric beside the suite's)."""
    run_cli("study", "run", "--params", str(ROOT / "params.yaml"), "-q",
            "--definition", str(ROOT / "studies" / "drmm.yaml"), "--preset", "ci",
            "--out", str(tmp_path / "study"), "-S", "tracking.enabled=false",
            cwd=tmp_path, env=ONE, check=True)  # fmt: skip
    results = json.loads((tmp_path / "study" / "results.json").read_text())
    assert results["counts"]["completed"] == 4
    (pair,) = results["paired"]
    assert (pair["arm"], pair["reference"], pair["metric"]) == (
        "drmm", "cnn", "classification_accuracy")  # fmt: skip
    assert pair["n"] == 2
    accuracies = [m["classification_accuracy"] for m in results["models"]]
    assert all(0.0 <= a <= 1.0 for a in accuracies)


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@gpu
def test_fast_path_matches_eager_on_cuda(small_prepared, ieee_training):
    """The compiled DRMM step (two optimiser groups: Adam and the priors' sgd), captured as a
    CUDA graph, against the eager step, both in IEEE float32: same loss curve, same priors."""
    from semidisent.artifacts.prepared import load_prepared
    from semidisent.methods.base import RunSpec
    from semidisent.training import train

    path, overrides = small_prepared
    params = load_params(None, [*overrides, "model.name=drmm", "train.steps=20",
                                "train.batch_size=8", "train.labelled_batch_size=8",
                                "train.device=cuda", "train.amp=off", "train.log_every=5",
                                "drmm.channels=[8,16,16]"])  # fmt: skip
    prepared = load_prepared(path, params)
    runs = {
        fast: train(prepared, RunSpec(dataclasses.replace(params.train, fast=fast), params.drmm),
                    params.model, progress=False)
        for fast in ("off", "on")
    }  # fmt: skip
    assert runs["on"].stats["cuda_graph"] and runs["on"].stats["fast_path"]
    for a, b in zip(runs["off"].curves, runs["on"].curves, strict=True):
        assert a["xent"] == pytest.approx(b["xent"], rel=1e-3)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3, abs=1e-3)
    eager, fast = (dict(runs[k].model.named_parameters()) for k in ("off", "on"))
    for name in (n for n in eager if n.startswith("prior_")):
        torch.testing.assert_close(eager[name].cpu(), fast[name].cpu(), rtol=0, atol=1e-3)
