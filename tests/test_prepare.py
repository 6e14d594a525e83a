"""`semidisent prepare` and the prepared artifact: content, hashes, refusal of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ROOT, run_cli
from semidisent.artifacts.prepared import load_prepared
from semidisent.config import load_params
from semidisent.errors import ArtifactError
from semidisent.stages.prepare import run_prepare


@pytest.fixture
def small_params(small_dsprites_npz):
    return load_params(
        ROOT / "params.yaml", [f"data.path={small_dsprites_npz}", "supervision.n_labels=40"]
    )


def test_artifact_round_trip(tmp_path, small_params):
    out = tmp_path / "prepared"
    prepared = run_prepare(small_params, out, progress=False)
    m = prepared.manifest
    assert m["dataset"]["num_rows"] == 192 and m["dataset"]["binary"]
    assert m["supervision"]["n_labels"] == 40 and m["supervision"]["n_validation"] == 4
    assert m["params"]["supervision"]["n_labels"] == 40
    assert m["versions"]["semidisent"] and m["versions"]["numpy"] == np.__version__
    assert set(m["files"]) == {
        "images.npy",
        "factors.npy",
        "supervision/rows.npy",
        "supervision/is_validation.npy",
        "supervision/labels.npy",
        "supervision/observed.npy",
        "supervision/label_sizes.npy",
    }
    # Bit-packed on disk: 64 px a row -> 8 bytes.
    assert np.load(out / "images.npy", mmap_mode="r").shape == (192, 1, 64, 8)
    loaded = load_prepared(out, small_params)
    src = prepared.dataset
    rows = np.arange(192)
    np.testing.assert_array_equal(loaded.dataset.images(rows), src.images(rows))
    np.testing.assert_array_equal(loaded.dataset.factors_of(rows), src.factors_of(rows))
    assert loaded.mask.digest() == prepared.mask.digest() == m["supervision"]["mask_sha256"]
    f = np.array([[2, 1, 0, 3, 1]])
    np.testing.assert_array_equal(loaded.dataset.observations(f), src.observations(f))


def test_same_params_same_bytes(tmp_path, small_params):
    a = run_prepare(small_params, tmp_path / "a", progress=False).manifest
    b = run_prepare(small_params, tmp_path / "b", progress=False).manifest
    assert a["files"] == b["files"] and a["content_sha256"] == b["content_sha256"]
    other = load_params(
        ROOT / "params.yaml",
        [f"data.path={small_params.data.path}", "supervision.n_labels=40", "supervision.seed=1"],
    )
    c = run_prepare(other, tmp_path / "c", progress=False).manifest
    assert c["files"]["images.npy"] == a["files"]["images.npy"]
    assert c["files"]["supervision/rows.npy"] != a["files"]["supervision/rows.npy"]


def test_corrupt_truncated_or_mismatched_artifacts_are_refused(tmp_path, small_params):
    out = tmp_path / "prepared"
    run_prepare(small_params, out, progress=False)
    labels = out / "supervision" / "labels.npy"
    arr = np.load(labels)
    arr[0, 0] = (arr[0, 0] + 1) % 3
    np.save(labels, arr)  # same size, different content
    with pytest.raises(ArtifactError, match=r"supervision/labels.npy has sha256 .*\(corrupt"):
        load_prepared(out)
    run_prepare(small_params, out, progress=False)
    images = out / "images.npy"
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match=r"images\.npy has .* bytes.*truncated"):
        load_prepared(out)
    run_prepare(small_params, out, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["factors.npy"]["sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"factors\.npy has sha256"):
        load_prepared(out)
    run_prepare(small_params, out, progress=False)
    other = load_params(
        ROOT / "params.yaml", [f"data.path={small_params.data.path}", "supervision.n_labels=50"]
    )
    with pytest.raises(
        ArtifactError, match=r"supervision.n_labels = 40 but the parameters ask for 50"
    ):
        load_prepared(out, other)
    with pytest.raises(ArtifactError, match="not a prepared artifact"):
        load_prepared(tmp_path / "nothing")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.dataset=imagenet"], "data.dataset = 'imagenet'"),
        (["supervision.n_labels=800000"], "supervision.n_labels = 800000"),
        (["train.replacement_rate=1.5"], "train.replacement_rate = 1.5"),
        (["data.path={bad}"], "truncated, corrupt or not in the expected format"),
        (["data.path={small}", "supervision.n_labels=500"], "at most the 192 images"),
    ],
)
def test_bad_input_gets_a_clear_error_and_writes_nothing(
    tmp_path, small_dsprites_npz, overrides, message
):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(small_dsprites_npz.read_bytes()[:1000])
    out = tmp_path / "out"
    args = [o.format(bad=bad, small=small_dsprites_npz) for o in overrides]
    proc = run_cli(
        "prepare",
        "--params",
        str(ROOT / "params.yaml"),
        "--out",
        str(out),
        "-q",
        *[x for a in args for x in ("-S", a)],
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad] or set(tmp_path.iterdir()) == {bad, small_dsprites_npz}


def test_failed_prepare_keeps_the_previous_artifact(tmp_path, small_params, small_dsprites_npz):
    out = tmp_path / "prepared"
    run_prepare(small_params, out, progress=False)
    before = (out / "manifest.json").read_text()
    proc = run_cli(
        "prepare",
        "--params",
        str(ROOT / "params.yaml"),
        "--out",
        str(out),
        "-q",
        "-S",
        f"data.path={small_dsprites_npz}",
        "-S",
        "supervision.n_labels=999",
    )
    assert proc.returncode == 2
    assert (out / "manifest.json").read_text() == before
    load_prepared(out)


@pytest.mark.slow
def test_full_procedural_dsprites_artifact(tmp_path):
    """The embedded default: all 737,280 images, bit-packed, under 450 MB on disk."""
    out = tmp_path / "prepared"
    proc = run_cli("prepare", "--params", str(ROOT / "params.yaml"), "--out", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert size < 450e6
    prepared = load_prepared(out, load_params(ROOT / "params.yaml"))
    ds = prepared.dataset
    assert ds.num_rows == 737280 and prepared.mask.n == 1000
    rs = np.random.RandomState(0)
    f = ds.sample_factors(64, rs)
    from semidisent.data import build_dataset

    np.testing.assert_array_equal(ds.observations(f), build_dataset("dsprites").observations(f))
