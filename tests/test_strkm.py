"""St-RKM (``model.name = st_rkm``): its terms against their explicit forms, the exact U after
training against numpy's eigenvectors, the step's random numbers (K = 2 batched = 2 separate
runs, Cayley ADAM included), the params' checks, the generation scores' known answers, and one
end-to-end CLI run (prepare, train, evaluate with generation, search, pipeline compile)."""

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
from semidisent.methods.strkm.model import StRKM, dataset_features, exact_projection, pca_error
from semidisent.methods.strkm.networks import StRKMConfig, StRKMNetwork
from semidisent.metrics.generation import (
    frechet_distance,
    frechet_from_moments,
    sliced_wasserstein,
)
from semidisent.objectives.s2vae import ModelBatch
from semidisent.training import train, train_many

TINY = ["train.batch_size=8", "train.labelled_batch_size=4", "train.log_every=2"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _params(small_prepared, *extra: str):
    path, overrides = small_prepared
    params = load_params(None, [*overrides, *TINY, "model.name=st_rkm", *extra])
    return params, load_prepared(path, params)


def _network(seed: int = 0, **kw) -> StRKMNetwork:
    torch.manual_seed(seed)
    return StRKMNetwork(StRKMConfig(num_latent=3, feature_dim=6, hidden=8, **kw))


# ------------------------------------------------------------------------------ known answers


def test_pca_term_is_the_sum_of_squared_residuals_of_the_projection():
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(7, 6, generator=g, dtype=torch.float64)
    phi = phi - phi.mean(0)
    u = torch.linalg.qr(torch.randn(6, 3, generator=g, dtype=torch.float64))[0]
    explicit = sum(float(((torch.eye(6, dtype=torch.float64) - u @ u.T) @ p).square().sum())
                   for p in phi) / 7  # fmt: skip
    assert float(pca_error(phi, u.T)) == pytest.approx(explicit, rel=1e-12)
    # The authors' expression: trace(C - U U^T C) / n with C = Phi^T Phi.
    c = phi.T @ phi
    assert float(pca_error(phi, u.T)) == pytest.approx(float(torch.trace(c - u @ u.T @ c)) / 7,
                                                       rel=1e-12)  # fmt: skip


def test_each_variant_is_the_authors_objective_written_out():
    net = _network()
    x = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    batch = ModelBatch(x, x[:0], None, None, eps, None, None, None)
    sigma, c = 0.3, 2.0
    hyper = {"noise_level": torch.tensor(sigma), "c_accu": torch.tensor(c)}
    with torch.no_grad():
        phi = net.features(x)
        phi = phi - phi.mean(0)
        u = net.u_t.T
        pca = float(torch.trace(phi.T @ phi - u @ u.T @ phi.T @ phi)) / 4

        def image(codes):
            return torch.sigmoid(net.decoder(codes @ u.T)).view(4, 1, 64, 64)

        det = image(phi @ u)
        noisy = image(phi @ u + sigma * eps)
        expected = {
            "deterministic": (c / 8 * float((x - det).square().sum()), 0.0),
            "noisy_u": (c / 8 * float((x - noisy).square().sum()), 0.0),
            "split": (c / 8 * float((x - det).square().sum()),
                      c / 8 * float((det - noisy).square().sum())),
        }  # fmt: skip
        for variant, (recon, split) in expected.items():
            loss, stats = StRKM(net, variant)(batch, hyper, torch.tensor(0))
            names = StRKM.stat_names
            got = dict(zip(names, stats.tolist(), strict=True))
            assert got["pca"] == pytest.approx(pca, rel=1e-4, abs=1e-6)
            assert got["recon"] == pytest.approx(recon, rel=1e-5)
            assert got["split"] == pytest.approx(split, rel=1e-4, abs=1e-9)
            assert float(loss) == pytest.approx(pca + recon + split, rel=1e-5)


@pytest.mark.parametrize(
    ("network", "channels", "size"), [("dlib", 3, 64), ("paper", 1, 64), ("paper", 3, 28)]
)
def test_networks_take_their_image_sizes_and_colour(network, channels, size):
    """Shapes3D / Cars3D are 64x64 colour, MNIST-like data 28x28: the authors' two conv
    settings and the dlib networks encode and decode them; other sizes are refused."""
    net = StRKMNetwork(StRKMConfig(in_channels=channels, height=size, width=size,
                                   network=network, capacity=8))  # fmt: skip
    x = torch.rand(2, channels, size, size)
    h, _ = net.encode(x)
    assert h.shape == (2, 10) and net.decode(h).shape == (2, channels, size, size)
    with pytest.raises(ValueError, match="take"):
        StRKMNetwork(StRKMConfig(height=32, width=32, network=network))


def test_exact_u_is_numpys_top_eigenvectors_and_the_codes_are_centred_projections():
    feats = torch.randn(500, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    feats = feats * torch.tensor([3.0, 0.5, 2.0, 1.0, 0.1, 4.0], dtype=torch.float64) + 7.0
    u, mean = exact_projection(feats, 3)
    centred = (feats - feats.mean(0)).numpy()
    values, vectors = np.linalg.eigh(centred.T @ centred)
    top = vectors[:, np.argsort(values)[::-1][:3]]
    # Same vectors up to sign, in decreasing eigenvalue order.
    np.testing.assert_allclose(np.abs(np.sum(u.numpy() * top, axis=0)), 1.0, atol=1e-10)
    np.testing.assert_allclose(mean.numpy(), feats.mean(0).numpy(), atol=1e-12)
    assert np.allclose(u.numpy().T @ u.numpy(), np.eye(3), atol=1e-12)


def test_after_training_u_and_the_gaussian_come_from_the_datasets_features(small_prepared):
    params, prepared = _params(small_prepared, "train.steps=2", "st_rkm.final_rows=0")
    result = train(prepared, RunSpec(params.train, params.st_rkm), params.model, progress=False)
    net = result.model
    rows = np.arange(prepared.dataset.num_rows)
    feats = dataset_features(net, prepared.dataset, rows).numpy()
    centred = feats - feats.mean(0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    top = vectors[:, np.argsort(values)[::-1][:10]]
    u = net.u_t.detach().double().numpy().T
    np.testing.assert_allclose(np.abs(np.sum(u * top, axis=0)), 1.0, atol=1e-4)
    np.testing.assert_allclose(net.feature_mean.numpy(), feats.mean(0), rtol=1e-5, atol=1e-6)
    codes = (feats - feats.mean(0)) @ u
    np.testing.assert_allclose(net.code_cov.numpy(), np.cov(codes, rowvar=False, bias=True)
                               + 1e-6 * np.eye(10), rtol=1e-3, atol=1e-7)  # fmt: skip
    # The representation is the centred projection.
    x = torch.from_numpy(prepared.dataset.images(rows[:5])).float() / 255.0
    np.testing.assert_allclose(net.encode(x)[0].detach().numpy(), codes[:5], rtol=1e-3, atol=1e-5)
    assert result.objective_state["rows"] == prepared.dataset.num_rows


def test_k_batched_configurations_equal_k_separate_runs(small_prepared):
    """The noise of the noisy variants comes from the batch and U's Cayley ADAM runs stacked:
    two stacked models equal two separate runs."""
    from test_training import _assert_same_training

    params, prepared = _params(small_prepared, "train.steps=3", "st_rkm.variant=split",
                               "st_rkm.final_rows=200")  # fmt: skip
    specs = [
        RunSpec(dataclasses.replace(params.train, seed=s),
                dataclasses.replace(params.st_rkm, noise_level=0.1 * (1 + s), c_accu=1.0 + s))
        for s in (0, 1)
    ]  # fmt: skip
    batched = train_many(prepared, specs, params.model, progress=False)
    assert batched[0].stats["batched_models"] == 2
    for spec, res in zip(specs, batched, strict=True):
        alone = train(prepared, spec, params.model, progress=False)
        a = {k: v.detach() for k, v in alone.model.state_dict().items()}
        b = {k: v.detach() for k, v in res.model.state_dict().items()}
        _assert_same_training(a, b, 3, spec.train.lr)
        assert float(res.stats["final_losses"]["orthogonality"]) < 1e-5


def test_resuming_from_a_checkpoint_equals_a_longer_run(small_prepared, tmp_path):
    """Cayley ADAM's state (momentum, scalar second moment, step count) is in the checkpoint:
    4 steps + a resume to 8 (past no retraction) equal 8 steps, bit for bit."""
    params, prepared = _params(small_prepared, "train.steps=4", "train.checkpoint_every=3",
                               "st_rkm.variant=noisy_u", "st_rkm.final_rows=100")  # fmt: skip
    spec = RunSpec(params.train, params.st_rkm)
    train(prepared, spec, params.model, progress=False, checkpoint_dir=tmp_path)
    longer = RunSpec(dataclasses.replace(params.train, steps=8), params.st_rkm)
    resumed = train(prepared, longer, params.model, progress=False, checkpoint_dir=tmp_path)
    fresh = train(prepared, longer, params.model, progress=False)
    assert resumed.stats["resumed_from_step"] == 4
    a, b = resumed.model.state_dict(), fresh.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_study_definition_plans_the_equal_wall_time_arms():
    proc = run_cli("study", "plan", "--definition", str(ROOT / "studies" / "strkm.yaml"),
                   cwd=ROOT, check=True)  # fmt: skip
    assert "arm st_rkm_split: model.name=st_rkm, st_rkm.variant=split, train.steps=690" in (
        proc.stdout
    )
    assert "comparisons: st_rkm_deterministic - beta_vae" in proc.stdout


def test_params_are_checked_with_one_line_each():
    with pytest.raises(ParamsError, match=r"st_rkm\.variant"):
        load_params(None, ["model.name=st_rkm", "st_rkm.variant=noisyU"])
    with pytest.raises(ParamsError, match=r"at most st_rkm\.feature_dim = 8"):
        load_params(None, ["model.name=st_rkm", "st_rkm.feature_dim=8"])
    with pytest.raises(ParamsError, match=r"st_rkm\.noise_level"):
        load_params(None, ["st_rkm.noise_level=-1"])
    with pytest.raises(ParamsError, match=r"eval\.generation"):
        load_params(None, ["eval.generation=yes"])
    method = get_method("st_rkm")
    fields = {f.name for f in dataclasses.fields(type(load_params(None).st_rkm))}
    assert method.params_section == "st_rkm" and set(method.varying) <= fields


# ------------------------------------------------------------------------------ generation scores


def test_sliced_wasserstein_of_a_translation_is_the_mean_projected_shift():
    """Translating every point by t moves each sorted projection by theta . t, so the distance is
    E|theta . t| = ||t|| Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2)) for theta uniform on the sphere;
    with P projections the estimate's standard deviation is ||t|| sqrt((1/d - c_d^2) / P)."""
    d, p = 16, 4096
    g = torch.Generator().manual_seed(5)
    a = torch.rand(300, d, generator=g)
    t = torch.randn(d, generator=g)
    got = sliced_wasserstein(a, a + t, projections=p, seed=0)
    c_d = math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)
    sd = float(t.norm()) * math.sqrt((1 / d - c_d**2) / p)
    assert abs(got - float(t.norm()) * c_d) < 5 * sd
    assert sliced_wasserstein(a, a[torch.randperm(300, generator=g)], 64, 0) == pytest.approx(
        0.0, abs=1e-12
    )


def test_frechet_distance_known_answers():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    # Diagonal covariances: ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2 = 5 + (1 + 0 + 4).
    assert frechet_from_moments(mu1, s1, mu2, s2) == pytest.approx(10.0, rel=1e-10)
    f = np.random.default_rng(0).standard_normal((2000, 4))
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-8)


# ------------------------------------------------------------------------------ the product


def test_cli_prepare_train_evaluate_search_and_compile(tmp_path, small_prepared):
    """model.name = st_rkm through the stages the Kubeflow components call, with tiny budgets:
    evaluate scores generation for it by default (and for the beta-VAE with always), search
    varies a family key, the pipeline compiles with the family's parameters."""
    path, overrides = small_prepared
    env = {"SEMIDISENT_CACHE": str(tmp_path / "cache")}
    common = ["--params", str(ROOT / "params.yaml"), "-q",
              *[a for o in overrides for a in ("-S", o)],
              "-S", "model.name=st_rkm", "-S", "tracking.enabled=false",
              "-S", "train.steps=4", "-S", "train.log_every=2", "-S", "train.batch_size=16",
              "-S", "st_rkm.final_rows=300", "-S", "eval.sample_scale=0.01",
              "-S", "eval.metrics=[mig,dci]",
              "-S", "eval.generation_classifier_steps=10"]  # fmt: skip
    model, ev = tmp_path / "model", tmp_path / "eval"
    run_cli("train", *common, "--prepared", str(path), "--out", str(model), cwd=tmp_path,
            env=env, check=True)  # fmt: skip
    run_cli("evaluate", *common, "--prepared", str(path), "--model", str(model / "model.pt"),
            "--out", str(ev), cwd=tmp_path, env=env, check=True)  # fmt: skip
    metrics = json.loads((ev / "metrics.json").read_text())
    gen = metrics["generation"]
    assert 0 < gen["swd_real"] < gen["swd"] and 0 < gen["frechet_real"] < gen["frechet"]
    assert {"mig", "dci", "swd", "frechet"} <= set(metrics["summary"])
    meta = json.loads((ev / "metrics_meta.json").read_text())
    assert meta["evaluations"] == ["factor_metrics", "generation"]
    assert meta["generation"]["num_samples"] == 500
    assert {"plots/samples.png", "plots/traversals.png"} <= set(meta["pictures"])
    # The same scores for the beta-VAE family, with the same (cached) classifier.
    vae, vae_ev = tmp_path / "vae", tmp_path / "vae_eval"
    vae_args = [*common, "-S", "model.name=s2vae", "-S", "eval.generation=always"]
    run_cli("train", *vae_args, "--prepared", str(path), "--out", str(vae), cwd=tmp_path,
            env=env, check=True)  # fmt: skip
    run_cli("evaluate", *vae_args, "--prepared", str(path), "--model", str(vae / "model.pt"),
            "--out", str(vae_ev), cwd=tmp_path, env=env, check=True)  # fmt: skip
    vae_meta = json.loads((vae_ev / "metrics_meta.json").read_text())
    assert (
        vae_meta["generation"]["classifier"]["sha256"] == meta["generation"]["classifier"]["sha256"]
    )
    search_two_trials(
        common,
        path,
        tmp_path,
        "{st_rkm.noise_level: {low: 0.0001, high: 0.1, log: true}}",
        steps=4,
        env=env,
    )
    compile_family(common[:2], "st_rkm", "variant", "noisy_u", tmp_path, env=env)
