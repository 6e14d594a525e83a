"""Helpers the component bodies call in their pods (semidisent.kfp_pipeline.runtime)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from semidisent.config import load_params
from semidisent.errors import ParamsError
from semidisent.kfp_pipeline import runtime as rt
from semidisent.kfp_pipeline.parameters import arguments


class FakeArtifact:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.metadata: dict[str, Any] = {}
        self.metrics: dict[str, float] = {}

    def log_metric(self, name: str, value: float) -> None:
        self.metrics[name] = value


def test_write_params_validates_and_tags_the_run(tmp_path):
    params = load_params(None, ["train.beta=2"])
    art = FakeArtifact(tmp_path / "params")
    written = rt.write_params(
        {**arguments(params), "kfp_run_id": "abc", "kfp_run_name": "run-1"}, art
    )
    assert written.tracking.tags == {"kfp.run_id": "abc", "kfp.run_name": "run-1"}
    assert rt.read_params(art.path) == written
    assert art.metadata["experiment"] == "semidisent"
    with pytest.raises(ParamsError, match=r"train\.replacement_rate"):
        rt.write_params({"train__replacement_rate": 1.5}, FakeArtifact(tmp_path / "bad"))


def test_read_params_takes_the_study_storage_from_the_secret(tmp_path, monkeypatch):
    rt.save_params(load_params(None), tmp_path / "params.yaml")
    monkeypatch.setenv(rt.STORAGE_ENV, "postgresql+psycopg2://u:pw@db/optuna")
    p = rt.read_params(tmp_path, search=True)
    assert p.search.storage == "postgresql+psycopg2://u:pw@db/optuna"
    assert p.tracking.registered_model is None  # only the final model is registered


def test_with_best_merges_the_best_trial(tmp_path):
    params = load_params(None)
    (tmp_path / "best_params.json").write_text(json.dumps({"train": {"beta": 2.5}}))
    assert rt.with_best(params, tmp_path).train.beta == 2.5
    (tmp_path / "best_params.json").write_text(json.dumps({"train": {}}))
    assert rt.with_best(params, tmp_path) == params


def test_sqlite_study_is_refused_for_pods(monkeypatch):
    params = load_params(None)
    rt.check_shared_storage(params, 2)  # not in a cluster: one machine shares the file
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    # even one worker: creation, worker and summary are three pods
    for workers in (1, 2):
        with pytest.raises(
            ParamsError, match=r"search\.storage = 'sqlite:///optuna\.db'.*postgres"
        ):
            rt.check_shared_storage(params, workers)


def test_metrics_for_the_kubeflow_ui():
    m = FakeArtifact(Path("unused"))
    flat = rt.log_metrics(m, {"summary": {"mig": 0.25, "dci": None}, "n": 3, "ok": True})
    assert flat == m.metrics == {"summary.mig": 0.25, "n": 3.0}


def test_fetch_dvc_data_is_a_no_op_without_a_version(tmp_path):
    params = load_params(None)
    assert rt.fetch_dvc_data(params, "", "") is params
    with pytest.raises(ParamsError, match=r"needs data\.path"):
        rt.fetch_dvc_data(params, "s3://bucket/x", "0" * 32)
