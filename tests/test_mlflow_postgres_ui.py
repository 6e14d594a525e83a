"""The scaled-out tracking set-up, for real: `mlflow server` on a PostgreSQL backend (Debian's
package) with S3 artifacts (moto_server); the stages log to it by configuration only
(`tracking.uri`), everything is read back through MlflowClient, and the MLflow UI is opened in a
real headless browser (Debian's chromium) which must list the run and its metrics.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where CI leaves pictures a person may want to look at (gitignored).
ARTIFACTS = ROOT / "test-artifacts"


# pg_mlflow (conftest): the session's server on PostgreSQL + S3, shared with the cluster-like
# pipeline test.


@pytest.fixture(scope="module")
def tracked_experiment(pg_mlflow, small_prepared, tmp_path_factory):
    """train -> evaluate -> report of a tiny model, tracked on the PostgreSQL-backed server."""
    from semidisent.config import load_params
    from semidisent.stages.evaluate import run_evaluate_tracked
    from semidisent.stages.report import run_report_tracked
    from semidisent.stages.train import run_train_tracked

    prepared, overrides = small_prepared
    params = load_params(
        None,
        [
            *overrides,
            f"tracking.uri={pg_mlflow}",
            "tracking.experiment=semidisent-pg",
            "tracking.registered_model=semidisent-pg-vae",
            "train.steps=20",
            "train.batch_size=16",
            "train.log_every=5",
            "eval.sample_scale=0.01",
            "eval.metrics=[mig, dci]",
        ],
    )
    out = tmp_path_factory.mktemp("pg_experiment")
    run_train_tracked(params, prepared, out / "model", progress=False)
    run_evaluate_tracked(params, prepared, out / "model" / "model.pt", out / "eval", progress=False)
    run_report_tracked(params, out / "model", out / "eval", out / "reports")
    return params, out


def test_stages_log_one_run_to_an_mlflow_server_on_postgresql(pg_mlflow, tracked_experiment):
    from mlflow import MlflowClient

    _, out = tracked_experiment
    run_id = json.loads((out / "model" / "mlflow_run.json").read_text())["run_id"]
    client = MlflowClient(pg_mlflow)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "20"
    assert "dci.disentanglement" in run.data.metrics
    assert len(client.get_metric_history(run_id, "train/loss")) == 4
    registered = json.loads((out / "reports" / "registered_model.json").read_text())
    version = client.get_model_version("semidisent-pg-vae", registered["version"])
    assert version.run_id == run_id
    assert float(version.tags["dci"]) == pytest.approx(run.data.metrics["summary.dci"], abs=1e-5)
    # Artifacts went through the server to S3 (moto), not to a local folder.
    names = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert any(n.endswith(".png") for n in names)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _headless(url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",  # root in CI containers
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1600,1400",
            # Let the single-page app fetch and render before the DOM / picture is taken.
            "--virtual-time-budget=30000",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_mlflow_ui_lists_the_run_with_its_metrics_in_a_real_browser(pg_mlflow, tracked_experiment):
    from mlflow import MlflowClient

    _, out = tracked_experiment
    client = MlflowClient(pg_mlflow)
    exp = client.get_experiment_by_name("semidisent-pg")
    run = client.get_run(json.loads((out / "model" / "mlflow_run.json").read_text())["run_id"])
    page = f"{pg_mlflow}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"
    dom = _headless(page, "--dump-dom").stdout
    text = re.sub(r"<[^>]+>", " ", dom)
    assert run.info.run_name in text, "the run page names the run"
    assert "dci.disentanglement" in text, "the run page lists its metrics"
    # (The bare experiment URL redirects to /runs after the budget has started: ask for it.)
    runs = f"{pg_mlflow}/#/experiments/{exp.experiment_id}/runs"
    ARTIFACTS.mkdir(exist_ok=True)
    listing = ""
    for _ in range(3):  # the runs table is fetched after first paint; a loaded CI box is slow
        listing = " ".join(re.sub(r"<[^>]+>", " ", _headless(runs, "--dump-dom").stdout).split())
        if run.info.run_name in listing:
            break
    (ARTIFACTS / "mlflow_ui_runs.txt").write_text(listing)
    assert run.info.run_name in listing and "1 matching run" in listing, "the experiment lists it"
    for name, url in (("mlflow_ui_runs.png", runs), ("mlflow_ui_run.png", page)):
        shot = ARTIFACTS / name
        shot.unlink(missing_ok=True)
        _headless(url, f"--screenshot={shot}")
        assert shot.exists() and shot.stat().st_size > 20_000
