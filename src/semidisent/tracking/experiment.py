"""One MLflow run per experiment, shared by the stages that make it (train, evaluate, report).

Stages run as separate processes (``dvc repro``, Kubeflow pods), so the run id travels in a small
file, ``mlflow_run.json``, beside the model. ``train`` creates the run, and also keeps the id in
its checkpoint directory: a training run killed and restarted continues the same MLflow run.
``evaluate`` and ``report`` continue the run of the model they are given.

What the run holds: every parameter (redacted), the git commit, versions and device as tags, the
prepared data (content hash, DVC hash when run under DVC) and the supervision mask hash as
dataset inputs, the training curves, final metrics, pictures, the report and the model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..artifacts.hashing import write_json
from ..config.schema import Params
from .base import Tracker
from .environment import device_description, git_state, package_versions
from .factory import open_tracker, resolve_tracking_uri
from .redact import redact_mapping

log = logging.getLogger(__name__)

RUN_FILE = "mlflow_run.json"


def _identity(params: Params) -> str:
    """Which experiment a checkpointed run belongs to (execution keys excluded)."""
    return params.digest("data", "supervision", "model", "train")


def read_run_file(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / RUN_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def dvc_hash(path: str | Path, lock: str | Path = "dvc.lock") -> str | None:
    """The md5 DVC recorded for an output path (when running under ``dvc repro``)."""
    lock = Path(lock)
    if not lock.exists():
        return None
    import yaml

    target = Path(path).as_posix().rstrip("/")
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path", "").rstrip("/") == target:
                return out.get("md5")
    return None


def run_name(params: Params) -> str:
    t = params.train
    rate = t.replacement_rate
    return f"{params.data.dataset}-b{t.beta:g}-p{rate:g}-{t.supervised_loss}-s{t.seed}"


def describe_run(tracker: Tracker, params: Params, stage: str, device: str | None = None) -> None:
    tracker.log_params(params.to_dict())
    versions = package_versions()
    tracker.set_tags(
        {
            "semidisent.stage": stage,
            "device": device_description(device),
            **{f"version.{k}": v for k, v in versions.items()},
            **git_state(),
        }
    )


def log_prepared_inputs(
    tracker: Tracker, prepared_dir: str | Path, manifest: dict[str, Any]
) -> None:
    """The data version and the supervision mask as the run's dataset inputs."""
    log_dataset = getattr(tracker, "log_dataset", None)
    if log_dataset is None:
        return
    sup = manifest["supervision"]
    md5 = dvc_hash(prepared_dir)
    log_dataset(
        manifest["dataset"]["name"],
        manifest["content_sha256"],
        str(prepared_dir),
        context="training",
        profile={
            "rows": manifest["dataset"]["num_rows"],
            "dvc_md5": md5,
            "content_sha256": manifest["content_sha256"],
        },
    )
    log_dataset(
        "supervision-mask",
        sup["mask_sha256"],
        f"{prepared_dir}/supervision",
        context="supervision",
        profile={
            "n_labels": sup["n_labels"],
            "n_validation": sup["n_validation"],
            "labeller": sup["labeller"],
            "seed": sup["seed"],
        },
    )
    tracker.set_tags(
        {
            "data.content_sha256": manifest["content_sha256"],
            "data.mask_sha256": sup["mask_sha256"],
            **({"data.dvc_md5": md5} if md5 else {}),
        }
    )


@contextmanager
def experiment_run(
    params: Params, model_dir: str | Path, stage: str, checkpoint_dir: str | Path | None = None
) -> Iterator[Tracker]:
    """The experiment's tracker for one stage; a no-op when tracking is disabled.

    ``checkpoint_dir`` (train only) keeps the run id so that a resumed training continues it.
    """
    model_dir = Path(model_dir)
    if not params.tracking.enabled:
        yield Tracker()
        return
    ident = _identity(params)
    run_id = None
    sources = [Path(checkpoint_dir)] if checkpoint_dir is not None else [model_dir]
    for directory in sources:
        info = read_run_file(directory)
        if info and (checkpoint_dir is None or info.get("identity") == ident):
            run_id = info["run_id"]
            break
    uri = resolve_tracking_uri(params.tracking)
    tracker = open_tracker(
        params.tracking,
        run_name=run_name(params),
        run_id=run_id,
        backlog_path=model_dir / f"tracking_backlog_{stage}.jsonl",
    )
    info = {
        "run_id": tracker.run_id,
        "tracking_uri": uri,
        "experiment": params.tracking.experiment,
        "identity": ident,
    }
    for directory in [model_dir, *([Path(checkpoint_dir)] if checkpoint_dir else [])]:
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / RUN_FILE, redact_mapping(info))
    status = "FINISHED"
    try:
        yield tracker
    except BaseException:
        status = "FAILED" if stage != "train" else "KILLED"
        raise
    finally:
        tracker.close(status)
