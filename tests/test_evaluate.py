"""`semidisent evaluate` and run_evaluate: outputs, provenance, pictures, the random-encoder
baseline, and one-line errors. Uses the small prepared dSprites grid (192 images, 40 labels)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from semidisent.config import load_params
from semidisent.errors import ArtifactError
from semidisent.metrics import registry
from semidisent.models import VAE, VAEConfig
from semidisent.models.io import save_model
from semidisent.stages.evaluate import RANDOM_ENCODER, random_encoder, run_evaluate

EVAL = ["eval.sample_scale=0.01", "eval.device=cpu"]


@pytest.fixture
def setup(small_prepared, tmp_path):
    prepared, overrides = small_prepared
    params = load_params(None, [*overrides, *EVAL])
    torch.manual_seed(1)
    model = save_model(tmp_path / "model.pt", VAE(VAEConfig()), {"steps": 0})
    return params, prepared, model, overrides


def _numbers_only(obj) -> bool:
    if isinstance(obj, dict):
        return all(_numbers_only(v) for v in obj.values())
    return obj is None or (isinstance(obj, (int, float)) and not isinstance(obj, bool))


def test_run_evaluate_writes_metrics_meta_and_pictures(setup, tmp_path):
    params, prepared, model, _ = setup
    out = tmp_path / "eval"
    metrics = run_evaluate(params, prepared, model, out, progress=False)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics and _numbers_only(on_disk)
    core = ("beta_vae", "factor_vae", "mig", "dci", "sap", "modularity")
    assert set(core) | {"val_mig", "val_dci", "val_sap", "summary", "random_encoder"} == set(
        metrics
    )
    assert set(metrics["summary"]) == set(core) | {"val_mig", "val_dci", "val_sap"}
    assert metrics["summary"]["mig"] == metrics["mig"]["discrete_mig"]
    # dlib's protocol (eval.few_label_protocol): val_mig on the whole 40-label pool, val_dci /
    # val_sap fitted on the 36 labels training saw and scored on the 4 held out.
    assert metrics["val_mig"]["num_labels"] == 40
    assert metrics["val_mig"]["num_seen_in_training"] == 36
    assert metrics["val_dci"]["num_train"] == 36 and metrics["val_dci"]["num_test"] == 4
    meta = json.loads((out / "metrics_meta.json").read_text())
    assert meta["mode"] == "fast" and meta["seed"] == 0 and meta["sample_scale"] == 0.01
    assert meta["versions"]["scikit-learn"] == "1.9.1"
    assert {"numpy", "scipy", "torch", "semidisent"} <= set(meta["versions"])
    assert meta["model"]["kind"] == "file"
    assert len(meta["model"]["sha256"]) == 64 and meta["model"]["meta"] == {"steps": 0}
    assert meta["data"]["content_sha256"] and meta["data"]["n_validation"] == 4
    assert (
        meta["few_label_protocol"] == "dlib" and meta["settings"]["val_dci"]["protocol"] == "dlib"
    )
    assert meta["settings"]["beta_vae"]["num_train"] == 100  # 10,000 x 0.01
    assert set(meta["seconds"]) >= set(core) | {"total"}
    # DCI runs alongside the other metrics only where they are single-threaded: not with the
    # VAE encoder on this process's torch threads (>1 on a multi-core machine).
    encoder = type("Encoder", (), {"threads": torch.get_num_threads()})()
    alongside = registry.concurrent_allowed(
        "fast", meta["device"], params.eval.cpu_threads, params.eval.cpu_workers, encoder
    )
    assert meta["concurrent"] == (["dci"] if alongside else [])
    pictures = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pictures == [
        "dci_importance.png",
        "mutual_information.png",
        "reconstructions.png",
        "samples.png",
        "traversals.png",
    ]
    for p in (out / "plots").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_is_deterministic_and_the_random_encoder_baseline_is_reproducible(setup, tmp_path):
    params, prepared, model, _ = setup
    params = load_params(None, [*setup[3], *EVAL, "eval.plots=false"])
    a = run_evaluate(params, prepared, model, tmp_path / "a", progress=False)
    b = run_evaluate(params, prepared, model, tmp_path / "b", progress=False)
    assert a == b
    assert not (tmp_path / "a" / "plots").exists()
    r1 = run_evaluate(params, prepared, RANDOM_ENCODER, tmp_path / "r1", progress=False)
    r2 = run_evaluate(params, prepared, random_encoder(params, 1), tmp_path / "r2", progress=False)
    # (an in-memory model is not known to be random: it gets the baseline beside its scores)
    assert r1 == {k: v for k, v in r2.items() if k != "random_encoder"}
    meta = json.loads((tmp_path / "r1" / "metrics_meta.json").read_text())
    assert meta["model"]["kind"] == "random_encoder" and meta["model"]["seed"] == 0
    # the baseline written beside a model's scores is exactly the random encoder's evaluation
    assert "random_encoder" not in r1
    assert a["random_encoder"] == {k: r1["summary"][k] for k in ("mig", "dci")}


def test_heat_map_without_mig_or_dci(setup, tmp_path):
    _, prepared, model, overrides = setup
    params = load_params(
        None,
        [
            *overrides,
            *EVAL,
            "eval.metrics=[sap]",
            "eval.few_label=false",
            "eval.random_baseline=[]",
        ],
    )
    metrics = run_evaluate(params, prepared, model, tmp_path / "e", progress=False)
    assert set(metrics) == {"sap", "summary"}
    assert (tmp_path / "e" / "plots" / "mutual_information.png").exists()


def test_model_for_another_number_of_channels_is_refused(setup, tmp_path):
    params, prepared, _, _ = setup
    colour = save_model(tmp_path / "rgb.pt", VAE(VAEConfig(in_channels=3)))
    with pytest.raises(ArtifactError, match="3-channel images but the prepared dataset has 1"):
        run_evaluate(params, prepared, colour, tmp_path / "e", progress=False)


def test_cli_evaluate(setup, tmp_path):
    _, prepared, model, overrides = setup
    sets = [a for o in [*overrides, *EVAL, "eval.metrics=[mig,factor_vae]"] for a in ("-S", o)]
    params_file = tmp_path / "params.yaml"
    params_file.write_text("{}\n")
    out = tmp_path / "eval"
    base = ["evaluate", "--params", str(params_file), *sets, "--prepared", str(prepared)]
    proc = run_cli(*base, "--model", str(model), "--out", str(out), "-q", check=True)
    assert "mig" in proc.stdout and str(out) in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    expected = {"mig", "factor_vae", "val_mig", "val_dci", "val_sap", "summary", "random_encoder"}
    assert set(metrics) == expected
    proc = run_cli(*base, "--random-encoder", "--out", str(tmp_path / "r"), "-q", check=True)
    assert "random encoder" in proc.stdout


def test_cli_errors_are_one_line(setup, tmp_path):
    _, prepared, _, overrides = setup
    sets = [a for o in [*overrides, *EVAL, "eval.metrics=[mig]"] for a in ("-S", o)]
    params_file = tmp_path / "params.yaml"
    params_file.write_text("{}\n")
    base = ["evaluate", "--params", str(params_file), *sets, "--prepared", str(prepared), "-q"]
    missing = run_cli(*base, "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o"))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "does not exist" in missing.stderr
    # An encoder that outputs NaN: the metric's name in one line, no traceback.
    vae = VAE(VAEConfig())
    with torch.no_grad():
        vae.encoder.mean.bias.fill_(math.nan)
    nan_model = save_model(tmp_path / "nan.pt", vae)
    bad = run_cli(*base, "--model", str(nan_model), "--out", str(tmp_path / "o"))
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "metric mig: the representation function returned NaN" in bad.stderr
    assert not Path(tmp_path / "o" / "metrics.json").exists()


@pytest.mark.gpu
def test_evaluate_on_cuda(setup, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    _, prepared, model, overrides = setup
    cpu = run_evaluate(
        load_params(None, [*overrides, *EVAL]), prepared, model, tmp_path / "c", progress=False
    )
    gpu_params = load_params(None, [*overrides, "eval.sample_scale=0.01", "eval.device=cuda"])
    gpu = run_evaluate(gpu_params, prepared, model, tmp_path / "g", progress=False)
    meta = json.loads((tmp_path / "g" / "metrics_meta.json").read_text())
    assert meta["device"] == "cuda"
    for name, scores in cpu["summary"].items():
        assert gpu["summary"][name] == pytest.approx(scores, abs=0.02), name
    assert np.isfinite(list(gpu["summary"].values())).all()
