"""The MLflow tracker against a real `mlflow server`: logging, redaction, outages, backlog."""

from __future__ import annotations

import json
import time

import pytest
from mlflow import MlflowClient

from semidisent.config import TrackingParams
from semidisent.tracking import Tracker
from semidisent.tracking.factory import open_tracker, resolve_tracking_uri
from semidisent.tracking.mlflow_tracker import MlflowTracker, TrackingError, replay_backlog
from semidisent.tracking.redact import redact_mapping, redact_value

pytestmark = pytest.mark.integration


def test_disabled_tracking_is_a_no_op():
    t = open_tracker(TrackingParams(enabled=False), run_name="x")
    assert type(t) is Tracker and not t.enabled
    t.log_metrics({"a": 1.0}, step=1)
    t.close()


def test_default_uri_is_a_sqlite_file_in_the_project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(TrackingParams(), tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example:5000")
    assert resolve_tracking_uri(TrackingParams(), tmp_path) == "http://example:5000"
    assert resolve_tracking_uri(TrackingParams(uri="http://a:1"), tmp_path) == "http://a:1"


def test_redaction(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-123")
    assert redact_value("postgresql://me:pw@db:5432/optuna") == "postgresql://***@db:5432/optuna"
    assert redact_value("token=s3cr3t-value-123") == "token=***"
    assert redact_mapping({"db_password": "x1234", "beta": 4.0}) == {
        "db_password": "***",
        "beta": 4.0,
    }


def test_logs_everything_and_reads_back(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "never-log-this-secret")
    tp = TrackingParams(uri=mlflow_server, experiment="tracker-test")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "a.png").write_bytes(b"\x89PNG fake")
    t = open_tracker(tp, run_name="run-1", tags={"stage": "test"})
    t.log_params(
        {
            "train": {"beta": 4.0, "metrics": ["mig", "dci"]},
            "search": {"storage": "postgresql://user:hunter22@db/x"},
            "note": "key never-log-this-secret",
        }
    )
    for step in range(0, 250):
        t.log_metrics({"loss": 100.0 - step, "kl": 0.5}, step=step)
    t.set_tags({"git_commit": "abc"})
    t.log_dict({"mig": 0.3}, "eval/metrics.json")
    t.log_artifact(plots, "plots")
    t.log_dataset("dsprites", "f" * 64, "data/prepared", profile={"rows": 10})
    t.close()
    assert not t.problems

    c = MlflowClient(mlflow_server)
    run = c.get_run(t.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run-1"
    p = run.data.params
    assert p["train.beta"] == "4.0" and json.loads(p["train.metrics"]) == ["mig", "dci"]
    assert p["search.storage"] == "postgresql://***@db/x"
    assert p["note"] == "key ***"
    assert run.data.tags["stage"] == "test" and run.data.tags["git_commit"] == "abc"
    hist = c.get_metric_history(t.run_id, "loss")
    assert len(hist) == 250 and sorted(m.step for m in hist) == list(range(250))
    assert {a.path for a in c.list_artifacts(t.run_id)} >= {"eval", "plots"}
    assert [a.path for a in c.list_artifacts(t.run_id, "plots")] == ["plots/a.png"]
    inputs = run.inputs.dataset_inputs
    assert inputs[0].dataset.name == "dsprites" and inputs[0].dataset.digest == "f" * 36
    everything = json.dumps({"p": p, "t": run.data.tags})
    assert "never-log-this-secret" not in everything and "hunter22" not in everything


def test_unreachable_server_at_start_is_one_clear_error():
    with pytest.raises(TrackingError, match=r"cannot be used .*tracking\.enabled=false"):
        open_tracker(TrackingParams(uri="http://127.0.0.1:9"), run_name="x")


def test_outage_mid_run_does_not_block_and_is_recovered(tmp_path):
    from services import start_mlflow

    svc = start_mlflow(tmp_path)
    port = int(svc.url.rsplit(":", 1)[1])
    t = MlflowTracker.start(svc.url, "outage", run_name="r", flush_timeout=120, retry_max_delay=1.0)
    t.log_metrics({"loss": 1.0}, step=0)
    assert t.flush(30)
    svc.stop()
    t0 = time.perf_counter()
    for step in range(1, 200):
        t.log_metrics({"loss": float(step)}, step=step)
    assert time.perf_counter() - t0 < 1.0  # logging never waits for the server
    time.sleep(2)
    svc = start_mlflow(tmp_path, port=port)  # same database, same port
    try:
        t.close()
        assert not t.problems
        hist = MlflowClient(svc.url).get_metric_history(t.run_id, "loss")
        assert sorted(m.step for m in hist) == list(range(200))
    finally:
        svc.stop()


def test_outage_until_the_end_writes_a_backlog_that_replays(tmp_path, caplog):
    from services import start_mlflow

    svc = start_mlflow(tmp_path)
    port = int(svc.url.rsplit(":", 1)[1])
    backlog = tmp_path / "backlog.jsonl"
    t = MlflowTracker.start(
        svc.url, "backlog", run_name="r", flush_timeout=3, backlog_path=backlog, retry_max_delay=0.5
    )
    t.log_metrics({"loss": 0.0}, step=0)
    assert t.flush(30)
    svc.stop()
    for step in range(1, 50):
        t.log_metrics({"loss": float(step)}, step=step)
    t.log_dict({"x": 1}, "late.json")
    t0 = time.perf_counter()
    t.close()
    assert time.perf_counter() - t0 < 15
    assert backlog.exists()
    assert any("49 metric points" in p and "replay" in p for p in t.problems), t.problems
    svc = start_mlflow(tmp_path, port=port)
    try:
        assert replay_backlog(backlog, svc.url) >= 2
        c = MlflowClient(svc.url)
        assert sorted(m.step for m in c.get_metric_history(t.run_id, "loss")) == list(range(50))
        assert c.get_run(t.run_id).info.status == "FINISHED"
    finally:
        svc.stop()
