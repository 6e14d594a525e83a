"""benchmarks/gpu_check.py, the one call for a lent GPU: its CPU dry run end to end, on an
environment where mlflow, kfp and dvc cannot be imported (as on the GPU machine's image)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check

BLOCKED = "mlflow,kfp,dvc"


def _blocked_env() -> dict[str, str]:
    env = dict(os.environ)
    env["SEMIDISENT_BLOCK_IMPORTS"] = BLOCKED
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "benchmarks" / "blocked_imports"),
                                         str(ROOT / "src")])  # fmt: skip
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_the_blocker_blocks_and_the_training_core_trains_without_mlflow_kfp_dvc(tmp_path):
    """In a process where mlflow, kfp and dvc do not import, the training core, the metrics and
    the benchmarks import, and a two-step training plus a metric run."""
    code = f"""
import sys
for name in ("mlflow", "kfp", "dvc"):
    try:
        __import__(name)
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit(name + " imported despite the blocker")
sys.path.insert(0, {str(ROOT / "tests")!r})
from conftest import write_small_dsprites_npz, SMALL_PREPARED_OVERRIDES
from pathlib import Path
from semidisent.config import load_params
from semidisent.stages.prepare import run_prepare
from semidisent.artifacts.prepared import load_prepared
from semidisent.training import train
from semidisent.metrics.registry import evaluate_metrics
from semidisent.metrics.representation import vae_representation
root = Path({str(tmp_path)!r})
write_small_dsprites_npz(root / "d.npz")
ov = [f"data.path={{root / 'd.npz'}}", *SMALL_PREPARED_OVERRIDES, "tracking.enabled=false",
      "train.steps=2", "train.batch_size=8", "train.labelled_batch_size=4"]
params = load_params(None, ov)
run_prepare(params, root / "prepared", progress=False)
result = train(load_prepared(root / "prepared", params), params.train, params.model,
               progress=False)
ev = evaluate_metrics(["mig"], load_prepared(root / "prepared", params).dataset,
                      vae_representation(result.model, device="cpu"), sample_scale=0.01)
bad = [m for m in ("mlflow", "kfp", "dvc") if m in sys.modules]
assert not bad, bad
print("ok", ev.summary["mig"])
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_blocked_env(), capture_output=True, text=True,
        timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok")


def test_gpu_test_files_list_every_file_with_gpu_tests():
    """The check runs `pytest -m gpu` on GPU_TEST_FILES only (the others import the pipeline
    packages): a new @gpu test in another file must be added there."""
    marked = {
        f"tests/{p.name}"
        for p in (ROOT / "tests").glob("test_*.py")
        if re.search(r"^@gpu\b|mark\.gpu\b", p.read_text(), re.M)
    }
    assert marked == set(gpu_check.GPU_TEST_FILES)


def test_docs_block_is_replaced_and_a_missing_block_refused(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Perf\n\nintro\n{gpu_check.DOCS_BEGIN}\nold\n{gpu_check.DOCS_END}\nrest\n")
    gpu_check.update_docs(doc, "| new |\n")
    assert doc.read_text() == (
        f"# Perf\n\nintro\n{gpu_check.DOCS_BEGIN}\n| new |\n{gpu_check.DOCS_END}\nrest\n"
    )
    (tmp_path / "other.md").write_text("no block\n")
    with pytest.raises(SystemExit, match=r"no .*block"):
        gpu_check.update_docs(tmp_path / "other.md", "x")


def test_project_docs_carry_the_block_the_check_fills():
    text = (ROOT / "docs" / "performance.md").read_text()
    assert gpu_check.DOCS_BEGIN in text and gpu_check.DOCS_END in text
    for what, *_ in gpu_check.TARGETS.values():
        assert what in text


@pytest.mark.slow
def test_junit_counts_and_failed_test_names_reach_the_report(tmp_path):
    """A real pytest JUnit file with one pass, one failure, one error and one skip."""
    (tmp_path / "test_mix.py").write_text(
        "import pytest\n"
        "@pytest.fixture\n"
        "def broken():\n"
        "    raise RuntimeError('setup')\n"
        "def test_ok():\n    pass\n"
        "def test_bad():\n    assert 1 == 2\n"
        "def test_error(broken):\n    pass\n"
        "def test_skip():\n    pytest.skip('no')\n"
    )
    xml = tmp_path / "out.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
         str(tmp_path / "test_mix.py")],
        cwd=tmp_path, capture_output=True, check=False,
    )  # fmt: skip
    counts = gpu_check._junit(xml)
    assert counts is not None
    assert [counts[k] for k in ("passed", "failures", "errors", "skipped")] == [1, 1, 1, 1]
    assert counts["failed"] == ["test_mix::test_bad", "test_mix::test_error"]
    report = {
        "environment": {"date": "d", "device": "dev", "torch": "t", "cuda": "c"},
        "dry_run": False,
        "targets": {},
        "parts": {"pytest_gpu": {"status": "failed", "seconds": 1.0}},
        "figures": {"pytest_gpu": counts},
    }
    md = gpu_check.markdown(report)
    assert "1 passed, 2 failed, 1 skipped" in md
    assert "Failed GPU tests: `test_mix::test_bad`, `test_mix::test_error`." in md


def test_dry_run_runs_every_part_on_the_cpu_as_on_the_gpu_image(tmp_path):
    """Every part of the check, tiny, on the CPU, with mlflow, kfp and dvc unimportable: all
    pass, and the JSON and markdown hold each part's status and the figures (~40 s here)."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), str(out), "--dry-run",
         "--block-imports", BLOCKED],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
        cwd=ROOT,
    )  # fmt: skip
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + log[-5000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["dry_run"] and not report["environment"]["packages"]["mlflow"]
    assert {n: r["status"] for n, r in report["parts"].items()} == {
        p.name: "ok" for p in gpu_check.PARTS
    }
    figures = report["figures"]
    assert figures["pytest_gpu"]["failures"] == 0 and figures["pytest_gpu"]["errors"] == 0
    paths = [r["path"] for r in figures["train_throughput"]["rows"]]
    assert paths[0].startswith("baseline") and any(p.startswith("batched") for p in paths)
    assert {r["amp"] for r in figures["train_throughput"]["amp_compare"]} == {"bf16", "off"}
    assert figures["search_speed"]["same_trials"]
    assert figures["metrics_speed"]["timing"]
    assert "st_rkm split (dlib networks)" in figures["family_speed"]["configs"]
    assert "drmm (64x64, 3 layers)" in figures["drmm_speed"]["configs"]
    md = (out / "gpu_check.md").read_text()
    assert "DRY RUN" in md and "| search_speed | ok |" in md
    assert md.count("not yet measured") == len(gpu_check.TARGETS)  # no CPU figure as a GPU one
