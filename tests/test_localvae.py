"""The local-decoder VAE (``model.name = local_vae``): the masks' receptive fields (gradients),
the discretised logistic mixture against numerical integration of the logistic density, bits/dim
of a uniform model, batched crop sampling against whole-image sampling, the ELBO written out, the
probes' known answers, the CIFAR-10 pickle loader on a small file in the real format, the M2
variant (psvae's M2 on the pixel decoder), the evaluations per dataset, the params' one-line
errors and one end-to-end CLI run (prepare, train, evaluate with probes, search, compile). K
batched = K separate runs: tests/test_methods.py, which runs it for every family."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from conftest import ROOT, compile_family, run_cli, search_two_trials
from semidisent.artifacts.prepared import load_prepared
from semidisent.config import load_params
from semidisent.errors import DataError, ParamsError
from semidisent.methods import get_method
from semidisent.methods.base import RunSpec
from semidisent.methods.localvae.model import LocalVAE, gaussian_kl
from semidisent.methods.localvae.networks import LocalVAEConfig, LocalVAENetwork
from semidisent.metrics.probes import pca_explained, posterior_entropy, probe_accuracies
from semidisent.models.likelihoods import PixelLikelihood, bits_per_dim
from semidisent.models.pixelcnn import PixelCNN, PixelDecoder, PixelDecoderConfig
from semidisent.objectives.s2vae import ModelBatch
from semidisent.training import train

TINY = ["train.batch_size=8", "train.labelled_batch_size=4", "train.log_every=2"]
SMALL = ["local_vae.pixel_channels=4", "local_vae.feature_channels=2", "local_vae.res_blocks=1",
         "local_vae.mixtures=2", "local_vae.hidden=16"]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------ receptive fields


def _input_gradient(cnn: PixelCNN, size: int, r: int, c: int, channels: int = 1) -> np.ndarray:
    """Where d out(r, c) / d x is non-zero for some of 8 random images (one image may leave a
    pixel's path through the ReLUs closed): (size, size) bool."""
    g = torch.Generator().manual_seed(r * size + c)
    x = torch.randn(8, channels, size, size, generator=g, dtype=torch.float64, requires_grad=True)
    h = torch.randn(8, 2, size, size, generator=g, dtype=torch.float64)
    cnn(x, h)[:, :, r, c].sum().backward()
    return (x.grad.abs().sum((0, 1)) > 0).numpy()


@pytest.mark.parametrize("l", [1, 3, 5])
def test_local_masks_see_exactly_the_causal_window(l):  # noqa: E741 (the paper's l)
    """Output pixel i depends on the image only through the l rows above it (columns within l)
    and the l pixels to its left: never on itself, the pixels after it, or anything farther."""
    torch.manual_seed(l)
    cnn = PixelCNN(1, 2, 16, 3, "local", l, res_blocks=2).double()
    size = 2 * l + 5
    for r, c in [(l + 2, l + 2), (0, 1), (size - 1, size - 1), (l + 1, 0)]:
        seen = _input_gradient(cnn, size, r, c)
        rows, cols = np.indices(seen.shape)
        window = ((rows < r) & (rows >= r - l) & (np.abs(cols - c) <= l)) | (
            (rows == r) & (cols < c) & (cols >= c - l)
        )
        assert np.array_equal(seen, window), (r, c)
    assert cnn.radius == l


def test_the_full_pixelcnn_is_causal_and_sees_beyond_the_window():
    torch.manual_seed(0)
    cnn = PixelCNN(3, 2, 16, 3, "full", res_blocks=3).double()
    seen = _input_gradient(cnn, 15, 12, 7, channels=3)
    rows, cols = np.indices(seen.shape)
    after = (rows > 12) | ((rows == 12) & (cols >= 7))
    assert not seen[after].any()
    assert seen[12 - cnn.radius : 12, :].any() and seen[12 - 5, 7]  # beyond l = 3
    assert cnn.radius == 3 + 3


@pytest.mark.parametrize(("decoder", "channels", "mode"),
                         [("local", 1, "ci"), ("local", 3, "ca"), ("full", 1, "ci")])  # fmt: skip
def test_crop_sampling_equals_whole_image_sampling(decoder, channels, mode):
    torch.manual_seed(1)
    pd = PixelDecoder(PixelDecoderConfig(channels, 7, 9, decoder, 1, "logistic_mixture", mode,
                                         3, 2, 8, 2))  # fmt: skip
    h = torch.randn(3, 2, 7, 9)
    a = pd.sample(h, torch.Generator().manual_seed(5))
    b = pd.sample_naive(h, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(torch.round(a * 255) / 255, a)  # 8-bit values


# ------------------------------------------------------------------------------ likelihoods


def _logistic_mass(lo: float, hi: float, mu: float, s: float) -> float:
    from scipy.integrate import quad

    def pdf(t: float) -> float:
        z = (t - mu) / s
        return math.exp(-abs(z)) / (s * (1 + math.exp(-abs(z))) ** 2)

    return quad(pdf, lo, hi, epsabs=1e-14, epsrel=1e-12, limit=200)[0]


def _bin(k: int) -> tuple[float, float]:
    x = 2 * k / 255 - 1
    return (-math.inf if k == 0 else x - 1 / 255), (math.inf if k == 255 else x + 1 / 255)


def test_discretised_logistic_matches_numerical_integration_of_the_density():
    """Per pixel: log sum_m pi_m prod_c integral over the bin of the logistic density (edge bins
    to +-inf); 'ca' shifts the green and blue means by tanh(a) times the earlier channels."""
    g = torch.Generator().manual_seed(0)
    for channels, mode in ((1, "ci"), (3, "ci"), (3, "ca")):
        lik = PixelLikelihood("logistic_mixture", channels, 2, mode)
        params = torch.randn(1, lik.channels, 1, 4, generator=g, dtype=torch.float64)
        params[:, 2 + 2 * channels : 2 + 4 * channels] -= 2.0  # log scales about -2
        ks = torch.tensor([0, 3, 128, 255])
        x = (ks[None, None, None, :].expand(1, channels, 1, 4) + torch.arange(channels)[
            None, :, None, None] * 7).clamp(max=255).double() / 255  # fmt: skip
        got = lik.log_prob_map(params, x)[0, 0]
        log_pi, means, log_scales, coeffs = lik.split(params)
        xb = 2 * torch.round(x * 255) / 255 - 1
        for p in range(4):
            total = 0.0
            for m in range(2):
                term = float(log_pi[0, m, 0, p].exp())
                k_c = 0
                for ch in range(channels):
                    mu = float(means[0, m, ch, 0, p])
                    if mode == "ca":
                        mu += sum(float(coeffs[0, m, k_c + j, 0, p] * xb[0, j, 0, p])
                                  for j in range(ch))  # fmt: skip
                        k_c += ch
                    k = round(float(x[0, ch, 0, p]) * 255)
                    term *= _logistic_mass(*_bin(k), mu, float(log_scales[0, m, ch, 0, p].exp()))
                total += term
            assert float(got[p]) == pytest.approx(math.log(total), rel=1e-9, abs=1e-9)


def test_the_mixture_sums_to_one_over_the_256_values_and_tiny_bins_stay_finite():
    lik = PixelLikelihood("logistic_mixture", 1, 3)
    params = torch.randn(1, 9, 1, 1, dtype=torch.float64).expand(256, 9, 1, 1).clone()
    x = torch.arange(256, dtype=torch.float64).view(256, 1, 1, 1) / 255
    assert float(lik.log_prob_map(params, x).exp().sum()) == pytest.approx(1.0, abs=1e-12)
    sharp = torch.zeros(1, 3, 1, 1, dtype=torch.float64)
    sharp[:, 2] = -7.0  # s = e^-7: a bin 30 scales away has mass ~e^-30
    far = torch.tensor([[[[200 / 255]]]], dtype=torch.float64)
    assert math.isfinite(float(PixelLikelihood("logistic_mixture", 1, 1).log_prob(sharp, far)))


def test_bits_per_dim_of_a_uniform_model_is_eight():
    dims = 3 * 32 * 32
    assert float(bits_per_dim(torch.tensor(-dims * math.log(256.0)), dims)) == pytest.approx(8.0)
    # A fair coin per binary pixel: one bit per dimension.
    lik = PixelLikelihood("bernoulli", 1)
    x = torch.randint(0, 2, (5, 1, 4, 4)).float()
    bpd = bits_per_dim(lik.log_prob(torch.zeros(5, 1, 4, 4), x), 16)
    torch.testing.assert_close(bpd, torch.ones(5))


# ------------------------------------------------------------------------------ the objective


def _network(decoder: str = "local", seed: int = 0, **kw) -> LocalVAENetwork:
    pixel = PixelDecoderConfig(1, 6, 6, decoder, 1, "logistic_mixture", "ci", 2, 2, 4, 1)
    torch.manual_seed(seed)
    return LocalVAENetwork(LocalVAEConfig(1, 6, 6, 3, "mlp", 8, pixel.to_dict(), **kw))


def test_the_vae_loss_is_the_negative_elbo_written_out():
    net = _network()
    x = torch.randint(0, 256, (4, 1, 6, 6), generator=torch.Generator().manual_seed(1)) / 255.0
    eps = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    batch = ModelBatch(x, x[:0], None, None, eps, None, None, None)
    beta = 2.5
    loss, stats = LocalVAE(net)(batch, {"beta": torch.tensor(beta)}, torch.tensor(0))
    with torch.no_grad():
        hid = net.encoder(x).chunk(2, -1)
        mean, std = hid[0], torch.nn.functional.softplus(hid[1]) + 1e-4
        z = mean + std * eps
        log_px = net.pixel.likelihood.log_prob(net.pixel.cnn(2 * x - 1, net.features(z)), x)
        kl = (0.5 * (mean**2 + std**2 - 1) - torch.log(std)).sum(-1)
    assert float(loss) == pytest.approx(float((-log_px + beta * kl).mean()), rel=1e-5)
    bpd = float((-log_px + kl).mean()) / (36 * math.log(2))
    assert float(stats[3]) == pytest.approx(bpd, rel=1e-5)
    torch.testing.assert_close(gaussian_kl(mean, std), kl)


def test_probes_known_answers():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    codes = np.eye(3)[y] * 5 + 0.1 * rng.standard_normal((600, 3))
    scores = probe_accuracies(codes[:400], y[:400], codes[400:], y[400:])
    assert scores == {"linear_accuracy": 1.0, "mlp_accuracy": 1.0}
    line = rng.standard_normal((500, 1)) @ np.array([[3.0, 4.0, 0.0]])
    np.testing.assert_allclose(pca_explained(line), [1.0, 0.0, 0.0], atol=1e-12)
    log_var = np.log(np.array([[1.0, 4.0]]))
    assert posterior_entropy(log_var) == pytest.approx(math.log(2 * math.pi * math.e) + math.log(2))


# ------------------------------------------------------------------------------ CIFAR-10


def _write_batch(path, images: np.ndarray, labels: list[int]) -> None:
    """The official python batch: a protocol-2 pickle of a dict with bytes keys, data (N, 3072)
    uint8 rows of 1024 R, 1024 G, 1024 B values in row-major order."""
    d = {
        b"batch_label": b"testing batch",
        b"labels": labels,
        b"data": images.reshape(len(images), -1),
        b"filenames": [b"x.png"] * len(images),
    }
    path.write_bytes(pickle.dumps(d, protocol=2))


def test_cifar10_python_batches_load_in_the_real_format(tmp_path):
    from semidisent.data.registry import build_dataset

    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    images = rng.integers(0, 256, (12, 3, 32, 32), dtype=np.uint8)
    images[0, 0, 0, 5], images[0, 2, 31, 0] = 17, 201  # red (0, 5), blue (31, 0)
    labels = [int(v) for v in rng.integers(0, 10, 12)]
    for i in range(5):
        _write_batch(
            root / f"data_batch_{i + 1}", images[2 * i : 2 * i + 2], labels[2 * i : 2 * i + 2]
        )
    _write_batch(root / "test_batch", images[10:], labels[10:])
    ds = build_dataset("cifar10", str(tmp_path))
    assert ds.observation_shape == (3, 32, 32) and ds.num_rows == 12
    assert np.array_equal(ds.images(np.arange(12)), images)
    raw = pickle.loads((root / "data_batch_1").read_bytes())[b"data"]
    assert raw[0, 5] == 17 and raw[0, 2048 + 31 * 32] == 201
    assert ds.holdout.tolist() == [10, 11] and ds.factors_of(np.arange(12))[:, 0].tolist() == labels
    evil = tmp_path / "evil"
    evil.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0],
                                   b"x": OrderedDict()}))  # fmt: skip
    with pytest.raises(DataError, match="not a CIFAR-10 python batch"):
        build_dataset("cifar10", str(evil))


# ------------------------------------------------------------------------------ the step


def test_grids_also_get_the_factor_metrics():
    """K batched = K separate runs is tests/test_methods.py's (every family); here: which
    evaluations a network declares, from the dataset's label columns."""
    from semidisent.config.schema import ModelParams
    from semidisent.methods.base import BuildContext
    from semidisent.methods.localvae.params import LocalVAEParams

    method = get_method("local_vae")

    def config(names, shape):
        ctx = BuildContext(ModelParams(num_latent=5), (3,) * len(names), shape[0], None, False,
                           observation_shape=shape, factor_names=names)  # fmt: skip
        return method.network_config(LocalVAEParams(), ctx)

    grid = config(("shape", "scale", "orientation", "pos_x", "pos_y"), (1, 64, 64))
    assert grid.network == "conv" and grid.evaluations == ("probes", "factor_metrics", "generation")
    digits = config(("digit",), (1, 28, 28))
    assert digits.network == "mlp" and digits.evaluations == ("probes", "generation")


def test_local_m2_is_psvaes_m2_on_the_pixel_decoder(tmp_path):
    """M2's log p(x | y, z) of the k enumerated classes through the pixel decoder (the image's
    masked convolution once) equals k separate evaluations; the classification weight is
    m2_alpha (N_u + N_l) / N_l."""
    from semidisent.stages.prepare import run_prepare
    from semidisent.training.trainer import build_run

    overrides = ["data.dataset=digits", "supervision.n_labels=50", *TINY, *SMALL,
                 "model.name=local_vae", "local_vae.objective=m2",
                 "model.num_latent=3"]  # fmt: skip
    params = load_params(None, overrides)
    run_prepare(params, tmp_path / "prep", progress=False)
    prepared = load_prepared(tmp_path / "prep", params)
    run = build_run(prepared, [RunSpec(params.train, params.local_vae)], params.model)
    module = run.stepper.model.module
    net = module.network
    assert module.m2.m2_scale == pytest.approx((1797 - 359) / 45)
    assert run.stepper.data._split[-1] == (8 + 4) * 10 * 3
    x = torch.from_numpy(prepared.dataset.images(np.arange(2))).float() / 255
    code = torch.randn(10, 2, net.spec.code_size)
    together = net.log_likelihood(x, code)
    for s in range(10):
        torch.testing.assert_close(together[s], net.log_likelihood(x, code[s : s + 1])[0])
    result = train(prepared, RunSpec(dataclasses.replace(params.train, steps=2), params.local_vae),
                   params.model, progress=False)  # fmt: skip
    assert math.isfinite(result.stats["final_losses"]["bits_per_dim"])


def test_params_are_checked_with_one_line_each():
    with pytest.raises(ParamsError, match=r"local_vae\.local_size = 2: expected one of 1, 3, 5"):
        load_params(None, ["model.name=local_vae", "local_vae.local_size=2"])
    with pytest.raises(ParamsError, match=r"local_vae\.objective = 'm2': expected vae"):
        load_params(None, ["model.name=local_vae", "local_vae.objective=m2"])
    with pytest.raises(ParamsError, match=r"local_vae\.network = 'conv'"):
        load_params(
            None, ["model.name=local_vae", "data.dataset=mnist5k", "local_vae.network=conv"]
        )
    with pytest.raises(ParamsError, match=r"local_vae\.mixtures"):
        load_params(None, ["local_vae.mixtures=0"])
    method = get_method("local_vae")
    fields = {f.name for f in dataclasses.fields(type(load_params(None).local_vae))}
    assert method.params_section == "local_vae" and set(method.varying) <= fields


# ------------------------------------------------------------------------------ the product


# One thread per CLI process: sampling is many small kernels, which a second OpenMP thread on a
# busy 2-core machine slows down ~10x (docs/design: OpenMP barriers).
ONE = {"OMP_NUM_THREADS": "1"}


def test_cli_prepare_train_evaluate_search_and_compile_on_digits(tmp_path):
    common = ["--params", str(ROOT / "params.yaml"), "-q",
              "-S", "data.dataset=digits", "-S", "supervision.n_labels=60",
              "-S", "model.name=local_vae", "-S", "tracking.enabled=false",
              "-S", "train.steps=4", "-S", "train.log_every=2", "-S", "train.batch_size=16",
              "-S", "train.labelled_batch_size=1", "-S", "model.num_latent=4",
              *[a for o in SMALL for a in ("-S", o)]]  # fmt: skip
    prep, model, ev = tmp_path / "prep", tmp_path / "model", tmp_path / "eval"
    run_cli("prepare", *common, "--out", str(prep), cwd=tmp_path, env=ONE, check=True)
    run_cli("train", *common, "--prepared", str(prep), "--out", str(model), cwd=tmp_path,
            env=ONE, check=True)  # fmt: skip
    run_cli("evaluate", *common, "--prepared", str(prep), "--model", str(model / "model.pt"),
            "--out", str(ev), cwd=tmp_path, env=ONE, check=True)  # fmt: skip
    metrics = json.loads((ev / "metrics.json").read_text())
    probes = metrics["probes"]
    assert 0.0 <= metrics["summary"]["probe_linear_accuracy"] <= 1.0
    assert len(probes["pca_explained"]) == 4 and 0 < metrics["summary"]["bits_per_dim"] < 9
    meta = json.loads((ev / "metrics_meta.json").read_text())
    assert meta["evaluations"] == ["probes"] and meta["probes"]["split"] == "holdout"
    assert meta["probes"]["num_test"] == 359
    assert {"plots/samples.png", "plots/traversals.png"} <= set(meta["pictures"])
    search_two_trials(
        common, prep, tmp_path, "{local_vae.beta: {low: 0.5, high: 2.0}}", steps=2, env=ONE
    )
    compile_family(common[:2], "local_vae", "decoder", "full", tmp_path, env=ONE)
