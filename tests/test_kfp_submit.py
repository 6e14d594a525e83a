"""``semidisent pipeline submit`` against a local stand-in of the Kubeflow Pipelines REST API.

Why a stand-in: a real KFP API server needs a Kubernetes cluster (with Argo / the KFP backend
and their images), and none can run on this machine (no Docker engine, no cluster, no
internet). The stand-in answers the four v2beta1 calls kfp.Client makes to create a run
(healthz, list/create experiment, create run) and records what it received, so the test sees
exactly what a cluster would get. The real kfp.Client and the real console script are used.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from conftest import ROOT, run_cli
from semidisent.config import load_params
from semidisent.kfp_pipeline.parameters import params_from_arguments

IMAGE = "registry.example/sd:1"


class KfpStandIn(BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, str, Any]]] = []
    # What the health check reports (the API server's healthz carries its release as tag_name).
    healthz: ClassVar[dict[str, Any]] = {"multi_user": False}
    pipelines: ClassVar[dict[str, str]] = {}  # name -> id, for the upload calls

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, None))
        path = self.path.split("?")[0]
        if path == "/apis/v2beta1/healthz":
            self._reply(self.healthz)
        elif path == "/apis/v2beta1/experiments":
            self._reply({})  # no experiment of that name yet
        elif path == "/apis/v2beta1/pipelines":
            found = [{"pipeline_id": i, "display_name": n} for n, i in self.pipelines.items()]
            self._reply({"pipelines": found} if found else {})
        elif path.startswith("/apis/v2beta1/pipelines/") and path.endswith("/versions"):
            self._reply({"pipeline_versions": [{"pipeline_version_id": "ver-1"}]})
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        path = self.path.split("?")[0]
        if path.startswith("/apis/v2beta1/pipelines/upload"):  # multipart: the package
            self.requests.append(("POST", self.path, raw.decode(errors="replace")))
            if path.endswith("upload_version"):
                self._reply({"pipeline_id": "pipe-1", "pipeline_version_id": "ver-2"})
            else:
                self.pipelines["semidisent-prod"] = "pipe-1"
                self._reply({"pipeline_id": "pipe-1", "display_name": "semidisent-prod"})
            return
        body = json.loads(raw or b"{}")
        self.requests.append(("POST", self.path, body))
        if path == "/apis/v2beta1/experiments":
            self._reply({"experiment_id": "exp-1", "display_name": body["display_name"]})
        elif path == "/apis/v2beta1/runs":
            self._reply({"run_id": "run-42", "experiment_id": body["experiment_id"]})
        else:
            self.send_error(404)


@pytest.fixture
def kfp_api() -> Iterator[str]:
    KfpStandIn.requests = []
    KfpStandIn.healthz = {"multi_user": False}
    KfpStandIn.pipelines = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), KfpStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_submit_creates_a_run_and_prints_its_url(kfp_api):
    proc = run_cli(
        "pipeline", "submit", "--host", kfp_api, "--experiment", "semidisent-ci",
        "--run-name", "ci-run", "-S", "train.beta=8", "-S", "tracking.uri=http://mlflow:5000",
        "--dvc-remote", "s3://dvc-remote/semidisent", "--image", IMAGE,
        cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"{kfp_api}/#/runs/details/run-42"
    assert "backend version not reported" in proc.stdout
    calls = [(m, p.split("?")[0]) for m, p, _ in KfpStandIn.requests]
    assert ("POST", "/apis/v2beta1/experiments") in calls
    run = next(b for m, p, b in KfpStandIn.requests if p == "/apis/v2beta1/runs")
    assert run["display_name"] == "ci-run" and run["experiment_id"] == "exp-1"
    # Only what this run changes travels as arguments; the rest are the compiled defaults.
    args = run["runtime_config"]["parameters"]
    assert args == {
        "train__beta": 8.0,
        "tracking__uri": "http://mlflow:5000",
        "dvc_remote": "s3://dvc-remote/semidisent",
    }
    # With a platform spec, kfp.Client sends {"pipeline_spec": ..., "platform_spec": ...}.
    assert set(run["pipeline_spec"]) == {"pipeline_spec", "platform_spec"}
    spec = run["pipeline_spec"]["pipeline_spec"]
    platform = run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]
    assert "secretAsEnv" in platform["deploymentSpec"]["executors"]["exec-train"]
    assert spec["pipelineInfo"]["name"] == "semidisent"
    defaults = {
        k: v["defaultValue"]
        for k, v in spec["root"]["inputDefinitions"]["parameters"].items()
        if k not in ("dvc_remote", "data_version")
    }
    merged = {**defaults, **{k: v for k, v in args.items() if k in defaults}}
    expected = load_params(
        ROOT / "params.yaml", ["train.beta=8", "tracking.uri=http://mlflow:5000"]
    )
    assert params_from_arguments(merged) == expected
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {IMAGE}


@pytest.mark.parametrize(
    "override", ["train.replacement_rate=1.5", "train.no_such_key=1", "search.n_trials=-1"]
)
def test_invalid_parameters_never_reach_the_api(kfp_api, override):
    proc = run_cli("pipeline", "submit", "--host", kfp_api, "-S", override, cwd=ROOT)
    assert proc.returncode == 2
    key = override.split("=")[0]
    assert "semidisent pipeline: error:" in proc.stderr and key in proc.stderr
    assert KfpStandIn.requests == []  # not even the health check


def test_the_placeholder_image_and_pod_local_stores_never_reach_the_api(kfp_api):
    proc = run_cli("pipeline", "submit", "--host", kfp_api, cwd=ROOT)
    assert proc.returncode == 2 and "placeholder" in proc.stderr and "--image" in proc.stderr
    proc = run_cli(
        "pipeline", "submit", "--host", kfp_api, "--image", IMAGE,
        "-S", "tracking.uri=sqlite:///mlflow.db", cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2 and "would be a file inside each pod" in proc.stderr
    assert KfpStandIn.requests == []


def test_an_unreachable_host_is_one_line():
    proc = run_cli("pipeline", "submit", "--host", "http://127.0.0.1:9", "--image", IMAGE, cwd=ROOT)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("semidisent pipeline: error: cannot reach Kubeflow Pipelines at ")
    assert "check --host" in line and "Traceback" not in proc.stderr


def test_a_backend_older_than_the_ir_is_refused_with_the_fix(kfp_api):
    KfpStandIn.healthz = {"multi_user": False, "tag_name": "2.4.1", "commit_sha": "abc"}
    proc = run_cli("pipeline", "submit", "--host", kfp_api, "--image", IMAGE, cwd=ROOT)
    assert proc.returncode == 2
    assert "reports version 2.4.1, older than the 2.15" in proc.stderr
    assert "--kfp-backend 2.4.1" in proc.stderr
    assert not [r for r in KfpStandIn.requests if r[1].startswith("/apis/v2beta1/runs")]
    # compiled for it: accepted, and the platform spec has no field that backend refuses
    proc = run_cli(
        "pipeline", "submit", "--host", kfp_api, "--image", IMAGE, "--kfp-backend", "2.4.1",
        cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "backend 2.4.1" in proc.stdout
    run = next(b for m, p, b in KfpStandIn.requests if p == "/apis/v2beta1/runs")
    platform = json.dumps(run["pipeline_spec"]["platform_spec"])
    assert '"optional"' not in platform and "secretNameParameter" not in platform


def test_submit_can_upload_a_named_pipeline_version(kfp_api):
    args = ["pipeline", "submit", "--host", kfp_api, "--image", IMAGE,
            "--pipeline-name", "semidisent-prod", "-S", "train.beta=8"]  # fmt: skip
    proc = run_cli(*args, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "pipeline version pipe-1/ver-1" in proc.stdout  # created with its first version
    proc = run_cli(*args, "--version-name", "v2", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "pipeline version pipe-1/ver-2" in proc.stdout
    uploads = [p for m, p, _ in KfpStandIn.requests if "/pipelines/upload" in p]
    assert uploads[0].startswith("/apis/v2beta1/pipelines/upload?")
    assert (
        uploads[1].startswith("/apis/v2beta1/pipelines/upload_version?") and "name=v2" in uploads[1]
    )
    runs = [b for m, p, b in KfpStandIn.requests if p == "/apis/v2beta1/runs"]
    # the runs reference the uploaded versions (the UI lists them; they can be scheduled)
    assert [r["pipeline_version_reference"] for r in runs] == [
        {"pipeline_id": "pipe-1", "pipeline_version_id": "ver-1"},
        {"pipeline_id": "pipe-1", "pipeline_version_id": "ver-2"},
    ]
    assert runs[1]["runtime_config"]["parameters"] == {"train__beta": 8.0}


@pytest.mark.cluster
def test_submit_to_a_real_cluster():
    """Against a real Kubeflow Pipelines endpoint, when one is given (KFP_HOST; KFP_TOKEN for
    an authenticated one): the run is created and reachable."""
    import os

    host = os.environ.get("KFP_HOST")
    if not host:
        pytest.skip("no Kubeflow endpoint (set KFP_HOST)")
    proc = run_cli(
        "pipeline", "submit", "--host", host, "--experiment", "semidisent-ci",
        "--image", os.environ.get("SEMIDISENT_IMAGE", ""),
        "-S", "train.steps=100", "-S", "search.n_trials=2", "--gpus", "0", cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "/#/runs/details/" in proc.stdout
