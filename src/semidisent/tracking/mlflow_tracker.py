"""MLflow behind the :class:`Tracker` interface, built so that tracking never stops training.

Every logging call is queued and sent by a background thread. If the server goes away, the
thread keeps the queue, retries with backoff, and training goes on. At ``close`` the queue is
given ``flush_timeout`` seconds to drain; what cannot be sent is written to a backlog file
(JSON lines) and reported in one clear message, and ``semidisent tracking replay BACKLOG``
sends it later. Errors that retrying cannot fix (HTTP 4xx, e.g. a parameter logged twice with
different values) are reported, not retried.

Everything logged as a parameter or tag passes through :mod:`.redact`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import SemidisentError
from .base import Tracker
from .redact import redact_mapping, redact_value

log = logging.getLogger(__name__)

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch
MAX_PARAM_CHARS = 6000


class TrackingError(SemidisentError):
    """The tracking backend cannot be used at all (checked when a run starts)."""


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def _param_text(v: Any) -> str:
    text = json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)
    return text[:MAX_PARAM_CHARS]


def _is_permanent(exc: BaseException) -> bool:
    """4xx answers will not change on retry; connection errors and 5xx may."""
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(exc, RestException):
        status = exc.get_http_status_code()
        return status is not None and 400 <= status < 500
    if isinstance(exc, MlflowException):
        text = str(exc)
        return not any(
            s in text
            for s in (
                "Connection",
                "connection",
                "timed out",
                "Max retries",
                "503",
                "502",
                "504",
                "500",
            )
        )
    return isinstance(exc, (ValueError, TypeError, FileNotFoundError))


def _client_settings() -> None:
    # Retries are ours (in the background thread); the client's own would block for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    # A fresh sqlite store announces its schema creation and migrations at INFO on stderr,
    # where a stage's one-line error must stand alone.
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


EXPERIMENT_KIND, MODEL_DEV = "mlflow.experimentKind", "custom_model_development"


class MlflowTracker(Tracker):
    enabled = True

    def __init__(
        self,
        client,
        run_id: str,
        tracking_uri: str,
        backlog_path: str | Path | None = None,
        flush_timeout: float = 60.0,
        retry_max_delay: float = 15.0,
    ):
        self.client = client
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.backlog_path = Path(backlog_path) if backlog_path else None
        self.flush_timeout = flush_timeout
        self.retry_max_delay = retry_max_delay
        self.problems: list[str] = []
        self._queue: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._outage_since: float | None = None
        self._failed_attempts = 0
        self._closed = False
        self._thread = threading.Thread(target=self._worker, name="mlflow-tracker", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ construction

    @classmethod
    def start(
        cls,
        tracking_uri: str,
        experiment: str,
        run_name: str | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> MlflowTracker:
        """Create (or, with ``run_id``, continue) a run. Fails fast if MLflow is unusable."""
        _client_settings()
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        where = redact_value(tracking_uri)
        try:
            if run_id is not None:
                client.update_run(run_id, status="RUNNING")
            else:
                exp = client.get_experiment_by_name(experiment)
                # The kind tag makes MLflow 3's UI open the experiment on its runs table (an
                # untagged experiment opens on the GenAI traces onboarding page).
                exp_id = (
                    exp.experiment_id
                    if exp
                    else client.create_experiment(experiment, tags={EXPERIMENT_KIND: MODEL_DEV})
                )
                run_tags = dict(redact_mapping(tags or {}))
                if parent_run_id:
                    run_tags["mlflow.parentRunId"] = parent_run_id
                run_id = client.create_run(exp_id, run_name=run_name, tags=run_tags).info.run_id
        except Exception as e:
            raise TrackingError(
                f"MLflow tracking at {where} cannot be used ({type(e).__name__}: "
                f"{redact_value(str(e))[:300]}); start the server, fix tracking.uri / "
                "MLFLOW_TRACKING_URI, or run with -S tracking.enabled=false"
            ) from None
        return cls(client, run_id, tracking_uri, **kwargs)

    # ------------------------------------------------------------------ Tracker API

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = redact_mapping(flatten(params))
        self._put({"kind": "batch", "params": [(k, _param_text(v)) for k, v in flat.items()]})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        ts = int(time.time() * 1000)
        points = [(k, float(v), ts, int(step or 0)) for k, v in metrics.items()]
        self._put({"kind": "batch", "metrics": points})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        flat = redact_mapping(dict(tags))
        self._put({"kind": "batch", "tags": [(k, str(v)) for k, v in flat.items()]})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._put(
            {"kind": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path}
        )

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        self._put(
            {
                "kind": "text",
                "text": json.dumps(obj, indent=2, sort_keys=True, default=str),
                "artifact_file": artifact_file,
            }
        )

    def log_dataset(
        self,
        name: str,
        digest: str,
        source: str,
        context: str = "training",
        profile: Mapping[str, Any] | None = None,
    ) -> None:
        """A dataset input of the run (MLflow's dataset lineage: name, content digest, source)."""
        self._put(
            {
                "kind": "dataset",
                "name": name,
                "digest": digest[:36],
                "source": source,
                "context": context,
                "profile": json.dumps(profile or {}, sort_keys=True),
            }
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued is sent; False if the timeout passed first."""
        deadline = time.monotonic() + (self.flush_timeout if timeout is None else timeout)
        with self._cond:
            while self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def close(self, status: str = "FINISHED") -> None:
        if self._closed:
            return
        self._closed = True
        self._put({"kind": "terminate", "status": status})
        drained = self.flush()
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        if not drained:
            self._write_backlog()
        for problem in self.problems:
            log.warning("tracking: %s", problem)

    # ------------------------------------------------------------------ worker

    def _put(self, op: dict[str, Any]) -> None:
        if self._closed and op["kind"] != "terminate":
            raise RuntimeError("tracker is closed")
        with self._cond:
            self._queue.append(op)
            self._cond.notify_all()

    def _next(self) -> dict[str, Any] | None:
        """The head of the queue, with consecutive batches merged (up to MLflow's limits)."""
        with self._cond:
            while not self._queue and not self._stop:
                self._cond.wait(0.5)
            if not self._queue:
                return None
            head = self._queue[0]
            if head["kind"] != "batch":
                return {**head, "_count": 1}
            merged: dict[str, Any] = {
                "kind": "batch",
                "metrics": [],
                "params": [],
                "tags": [],
                "_count": 0,
            }
            for op in self._queue:
                if (
                    op["kind"] != "batch"
                    or len(merged["metrics"]) + len(op.get("metrics", ())) > MAX_BATCH
                ):
                    break
                for key in ("metrics", "params", "tags"):
                    merged[key].extend(op.get(key, ()))
                merged["_count"] += 1
                if len(merged["params"]) >= 90:  # MLflow: at most 100 params per batch
                    break
            return merged

    def _execute(self, op: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        kind = op["kind"]
        if kind == "batch":
            self.client.log_batch(
                self.run_id,
                metrics=[Metric(k, v, ts, s) for k, v, ts, s in op.get("metrics", ())],
                params=[Param(k, v) for k, v in op.get("params", ())],
                tags=[RunTag(k, v) for k, v in op.get("tags", ())],
            )
        elif kind == "artifact":
            path = Path(op["path"])
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), op["artifact_path"])
            else:
                self.client.log_artifact(self.run_id, str(path), op["artifact_path"])
        elif kind == "text":
            self.client.log_text(self.run_id, op["text"], op["artifact_file"])
        elif kind == "dataset":
            from mlflow.entities import Dataset, DatasetInput, InputTag

            ds = Dataset(
                name=op["name"],
                digest=op["digest"],
                source_type="semidisent",
                source=json.dumps({"uri": op["source"]}),
                profile=op["profile"],
            )
            self.client.log_inputs(
                self.run_id,
                datasets=[DatasetInput(ds, tags=[InputTag("mlflow.data.context", op["context"])])],
            )
        elif kind == "terminate":
            self.client.set_terminated(self.run_id, status=op["status"])
        else:
            raise ValueError(f"unknown tracking operation {kind}")

    def _worker(self) -> None:
        delay = 0.5
        while True:
            op = self._next()
            if op is None:
                return
            try:
                self._execute(op)
            except Exception as e:
                if _is_permanent(e):
                    self.problems.append(f"{op['kind']} not logged: {redact_value(str(e))[:300]}")
                else:
                    if self._outage_since is None:
                        self._outage_since = time.time()
                        log.warning(
                            "tracking: MLflow at %s unreachable (%s); training goes on, "
                            "logs are queued",
                            redact_value(self.tracking_uri),
                            type(e).__name__,
                        )
                    self._failed_attempts += 1
                    with self._cond:
                        if self._stop:
                            return
                        self._cond.wait(delay)
                    delay = min(delay * 2, self.retry_max_delay)
                    continue
            if self._outage_since is not None:
                log.warning(
                    "tracking: MLflow reachable again after %.0f s; queued logs sent",
                    time.time() - self._outage_since,
                )
                self._outage_since = None
            delay = 0.5
            with self._cond:
                for _ in range(op["_count"]):
                    self._queue.popleft()
                self._cond.notify_all()

    def _write_backlog(self) -> None:
        with self._cond:
            pending = list(self._queue)
        n_metrics = sum(len(op.get("metrics", ())) for op in pending)
        n_other = sum(1 for op in pending if op["kind"] != "batch")
        if self.backlog_path is None:
            self.problems.append(
                f"MLflow unreachable at the end of the run: {n_metrics} metric "
                f"points and {n_other} other records were not logged"
            )
            return
        self.backlog_path.parent.mkdir(parents=True, exist_ok=True)
        with self.backlog_path.open("a") as f:
            f.write(
                json.dumps(
                    {
                        "kind": "header",
                        "run_id": self.run_id,
                        "tracking_uri": redact_value(self.tracking_uri),
                    }
                )
                + "\n"
            )
            for op in pending:
                f.write(json.dumps(op) + "\n")
        self.problems.append(
            f"MLflow at {redact_value(self.tracking_uri)} was unreachable at the end of the run: "
            f"{n_metrics} metric points and {n_other} other records were saved to "
            f"{self.backlog_path}; send them with `semidisent tracking replay {self.backlog_path}`"
        )


def replay_backlog(path: str | Path, tracking_uri: str | None = None) -> int:
    """Send a backlog written by :meth:`MlflowTracker.close`; returns the records sent."""
    _client_settings()
    from mlflow import MlflowClient

    path = Path(path)
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    sent = 0
    tracker = None
    for op in lines:
        if op["kind"] == "header":
            uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or op["tracking_uri"]
            tracker = MlflowTracker.__new__(MlflowTracker)
            tracker.client, tracker.run_id = MlflowClient(tracking_uri=uri), op["run_id"]
            continue
        if tracker is None:
            raise TrackingError(f"{path} is not a tracking backlog (no header line)")
        MlflowTracker._execute(tracker, op)
        sent += 1
    path.rename(path.with_suffix(path.suffix + ".sent"))
    return sent
