"""What the component bodies call inside their pods (and under ``kfp.local``).

The components in ``components/`` stay thin wrappers over the stage functions; the few things
they need around them (reading the validated params, copying files between KFP artifacts and
the stages' directories, turning results into Kubeflow UI metrics and HTML) are here, in the
installed package, so that they are tested like the rest of it. Nothing here imports kfp:
artifacts are used through their ``path`` / ``metadata`` / ``log_metric`` attributes.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import html
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from ..config.load import params_from_dict
from ..config.schema import METHOD_SECTIONS, Params
from .parameters import PARAMS_OUTPUT, RUN_INPUTS, params_from_arguments

PARAMS_FILE = "params.yaml"
# Set from a Kubernetes secret in the compiled pipeline: the Optuna RDB URL (with its password)
# replaces search.storage in the pods, so it never appears in the pipeline spec or the KFP UI.
STORAGE_ENV = "SEMIDISENT_SEARCH_STORAGE"
# Tags that tie every MLflow run of a pipeline run to it.
RUN_ID_TAG = "kfp.run_id"
RUN_NAME_TAG = "kfp.run_name"
# What train publishes as its Model artifact (the checkpoints stay in the work directory).
MODEL_FILES = ("model.pt", "train_stats.json", "curves.json", "mlflow_run.json", PARAMS_FILE)
# Parent folder of the steps' scratch directories. Unset in a pod (its disk goes with it);
# run-local points it into the run's folder so that nothing is left behind in /tmp.
WORK_ENV = "SEMIDISENT_KFP_WORK_DIR"


class ArtifactLike(Protocol):
    path: str
    metadata: dict[str, Any]


# ------------------------------------------------------------------------------ params


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """A component body: a mistake in the set-up (a :class:`SemidisentError`) ends the step
    with one line in its log, ``semidisent <step>: error: ...`` (credentials redacted), and
    exit status 2, instead of a traceback."""
    from ..errors import SemidisentError
    from ..tracking.redact import redact_value

    try:
        yield
    except SemidisentError as e:
        print(f"semidisent {name}: error: {redact_value(str(e))}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def write_params(values: Mapping[str, Any], artifact: ArtifactLike) -> Params:
    """The first step: decode + validate the per-key arguments, check what a cluster needs
    (kfp_pipeline.cluster: nothing outside one), tag the run, write params.yaml."""
    from .cluster import check_pod

    values = dict(values)
    values.pop(PARAMS_OUTPUT, None)
    run = {name: str(values.pop(name, "") or "") for name in RUN_INPUTS}
    params = params_from_arguments(values)
    check_pod(params)
    tags = dict(params.tracking.tags)
    if run["kfp_run_id"]:
        tags[RUN_ID_TAG] = run["kfp_run_id"]
    if run["kfp_run_name"]:
        tags[RUN_NAME_TAG] = run["kfp_run_name"]
    params = dataclasses.replace(params, tracking=dataclasses.replace(params.tracking, tags=tags))
    save_params(params, artifact.path)
    artifact.metadata.update(
        {"digest": params.digest()[:16], "experiment": params.tracking.experiment}
    )
    return params


# The sections the prepared artifact depends on (artifacts.prepared records these).
DATA_SECTIONS = ("data", "supervision")


def data_params(params: Params) -> str:
    """The data and supervision sections as canonical JSON: prepare's only input besides the
    DVC coordinates, so KFP's cache (keyed by input values, never by the run id) reuses the
    prepared dataset across runs with the same data parameters."""
    return json.dumps({s: params.section(s) for s in DATA_SECTIONS}, sort_keys=True)


def params_from_data(text: str) -> Params:
    return params_from_dict(json.loads(text))


def save_params(params: Params, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(params.to_dict(), sort_keys=False))


def read_params(path: str | Path, *, search: bool = False) -> Params:
    """params.yaml of the run (a file, or a directory holding one).

    ``search``: the settings of the search steps: in the pipeline only the final model (trained
    at full budget on the best configuration) is registered, not each worker's best trial.
    """
    path = Path(path)
    if path.is_dir():
        path = path / PARAMS_FILE
    params = params_from_dict(yaml.safe_load(path.read_text()) or {})
    storage = os.environ.get(STORAGE_ENV)
    if storage:
        params = dataclasses.replace(
            params, search=dataclasses.replace(params.search, storage=storage)
        )
    if search:
        params = dataclasses.replace(
            params, tracking=dataclasses.replace(params.tracking, registered_model=None)
        )
    return params


def with_best(params: Params, study_dir: str | Path) -> Params:
    """``params`` with the best trial's configuration (best_params.json of the search summary):
    its train keys, its model.name and its family's searched keys, so that training it at the
    full budget trains the family and values the search selected; unchanged when the study has
    no complete trial (e.g. search.n_trials = 0)."""
    best = json.loads((Path(study_dir) / "best_params.json").read_text())
    sections = {s: best[s] for s in ("train", "model", *METHOD_SECTIONS) if best.get(s)}
    if not sections:
        return params
    raw = params.to_dict()
    for section, keys in sections.items():
        raw[section] = {**raw[section], **keys}
    return params_from_dict(raw)


def run_tag(params: Params) -> str:
    return params.tracking.tags.get(RUN_ID_TAG, "local")


def worker_id(params: Params, worker: Any) -> str:
    """A search worker's name: the pipeline run and the loop item (ints may come as floats)."""
    if isinstance(worker, float) and worker.is_integer():
        worker = int(worker)
    return f"kfp-{run_tag(params)[:12]}-{worker}"


# ------------------------------------------------------------------------------ files


def content_hash(prepared_dir: str | Path) -> str:
    from ..artifacts.prepared import read_manifest

    return read_manifest(prepared_dir)["content_sha256"]


def prepared_metadata(prepared_dir: str | Path) -> dict[str, Any]:
    from ..artifacts.prepared import read_manifest

    m = read_manifest(prepared_dir)
    return {
        "dataset": m["dataset"]["name"],
        "num_rows": m["dataset"]["num_rows"],
        "n_labels": m["supervision"]["n_labels"],
        "content_sha256": m["content_sha256"],
        "mask_sha256": m["supervision"]["mask_sha256"],
    }


def train_dir(params: Params, checkpoint_root: str) -> Path:
    """Where training runs. On the optional PVC (``checkpoint_root``) it is keyed by the pipeline
    run, so a retried pod resumes from its checkpoints (and continues its MLflow run)."""
    from .cluster import writable_dir

    if checkpoint_root:
        return writable_dir(Path(checkpoint_root) / run_tag(params) / "train", "checkpoints to")
    path = scratch("train")
    path.mkdir(parents=True, exist_ok=True)
    return path


def scratch(what: str) -> Path:
    """A new scratch directory of a step (see :data:`WORK_ENV`)."""
    base = os.environ.get(WORK_ENV) or None
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"semidisent-{what}-", dir=base))


def publish(src: str | Path, dst: str | Path, names: Iterable[str]) -> Path:
    """Copy the named files/directories of ``src`` that exist into ``dst`` (an artifact)."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        s = src / name
        if s.is_dir():
            shutil.copytree(s, dst / name, dirs_exist_ok=True)
        elif s.exists():
            shutil.copy2(s, dst / name)
    return dst


def publish_model(params: Params, work: str | Path, model: ArtifactLike) -> None:
    save_params(params, Path(work) / PARAMS_FILE)
    publish(work, model.path, MODEL_FILES)
    run = json.loads((Path(model.path) / "mlflow_run.json").read_text()) if _has_run(model) else {}
    # The family's own keys, as the Kubeflow UI shows them (e.g. s2_factor_vae.gamma).
    name = params.model.name
    family = {} if params.method_params() is None else params.section(name)
    family = {f"{name}.{k}": v for k, v in family.items()}
    model.metadata.update(
        {
            "framework": "pytorch",
            "file": "model.pt",
            "mlflow_run_id": run.get("run_id", ""),
            "mlflow_experiment": run.get("experiment", ""),
            "model_name": params.model.name,
            "beta": params.train.beta,
            "replacement_rate": params.train.replacement_rate,
            **family,
        }
    )


def _has_run(model: ArtifactLike) -> bool:
    return (Path(model.path) / "mlflow_run.json").exists()


def working_copy(model_dir: str | Path) -> Path:
    """A writable copy of a Model artifact: evaluate and report record their MLflow run next to
    the model, and input artifacts may be read-only in a pod."""
    return publish(model_dir, scratch("model"), MODEL_FILES)


# ------------------------------------------------------------------------------ Kubeflow UI


def numbers(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numbers of a nested mapping, with dotted names."""
    out: dict[str, float] = {}
    for k, v in values.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(numbers(v, key))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = float(v)
    return out


def log_metrics(metrics: Any, values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``Output[Metrics].log_metric`` for every finite number (the Kubeflow UI's scalar view)."""
    flat = numbers(values, prefix)
    for k, v in flat.items():
        metrics.log_metric(k, v)
    return flat


def train_metrics(stats: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("steps", "steps_per_s", "images_per_s", "wall_s")
    return {
        **{k: stats[k] for k in keys if k in stats},
        "final": stats.get("final_losses", {}),
    }


def publish_report(
    report_dir: str | Path, report_html: ArtifactLike, report_md: ArtifactLike
) -> None:
    """report.html is self-contained (pictures embedded): the Kubeflow UI shows it as is. The
    Markdown view cannot resolve report.md's relative pictures, so they are left out there."""
    report_dir = Path(report_dir)
    shutil.copyfile(report_dir / "report.html", report_html.path)
    lines = [
        line
        for line in (report_dir / "report.md").read_text().splitlines()
        if not re.match(r"!\[[^\]]*\]\(assets/", line)
    ]
    lines.append("Pictures: in the HTML report and in the MLflow run (`plots/`, `report/`).")
    Path(report_md.path).write_text("\n".join(lines) + "\n")


def search_html(study_dir: str | Path) -> str:
    """One page for the Kubeflow UI: the trials plot, the best trial, the counts."""
    d = Path(study_dir)
    best = json.loads((d / "best_params.json").read_text())
    summary = json.loads((d / "search_summary.json").read_text())
    rows = [("study", str(best.get("study"))), ("best trial", str(best.get("trial")))]
    if (best.get("model") or {}).get("name"):
        rows.append(("best model.name", str(best["model"]["name"])))
    rows += [(f"best {k}", f"{v:.4g}") for k, v in numbers(best.get("train") or {}).items()]
    for section in METHOD_SECTIONS:  # the best trial's family keys (its family only)
        rows += [(f"best {section}.{k}", str(v)) for k, v in (best.get(section) or {}).items()]
    values = dict(zip(best.get("objectives") or [], best.get("values") or [], strict=False))
    rows += [(k, f"{v:.4g}") for k, v in numbers(values).items()]
    base = summary.get("baseline") or {}  # the best p = 0 trial (no label replacement)
    if base.get("trial") is not None:
        rows.append(("best p = 0 (baseline) trial", str(base["trial"])))
        scores = {k: base[k] for k in best.get("objectives") or [] if k in base}
        rows += [(f"p = 0 {k}", f"{v:.4g}") for k, v in numbers(scores).items()]
    else:
        rows.append(("best p = 0 (baseline) trial", str(base.get("note", "none"))))
    rows += [(f"trials {k}", str(v)) for k, v in (summary.get("trials") or {}).items()]
    table = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    img = ""
    if (d / "trials.png").exists():
        data = base64.b64encode((d / "trials.png").read_bytes()).decode()
        img = f'<img alt="trials" style="max-width:100%" src="data:image/png;base64,{data}">'
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>search</title></head>"
        "<body style='font-family:system-ui,sans-serif'><h2>Hyper-parameter search</h2>"
        f"<table border='1' cellpadding='4' style='border-collapse:collapse'>{table}</table>"
        f"{img}</body></html>\n"
    )


# ------------------------------------------------------------------------------ steps


def check_shared_storage(params: Params, workers: int) -> None:
    """Refuse a study that the search's pods cannot share: a sqlite file lives on one pod's
    disk, so in a cluster the study creation, each worker and the summary (separate pods, even
    with a single worker) would each see a study of their own."""
    from ..errors import ParamsError
    from ..tracking.redact import redact_value
    from .cluster import in_cluster, is_pod_local

    storage = params.search.storage
    if in_cluster() and is_pod_local(storage):
        raise ParamsError(
            f"search.storage = {redact_value(storage)!r}: the search steps ({workers} worker(s), "
            "the study creation and the summary, each a pod) cannot share a sqlite file; give "
            f"an RDB URL (postgresql+psycopg2://...) in the secret that sets ${STORAGE_ENV} "
            "(docs/kubeflow.md)"
        )


def fetch_dvc_data(params: Params, dvc_remote: str, data_version: str) -> Params:
    """``data.path`` from the DVC remote: the file (or directory) whose md5 DVC recorded as
    ``data_version``, read from the remote's content-addressed store (``files/md5/xx/...``),
    to ``data.path`` (e.g. on the dataset-cache PVC; kept there for the next run).

    Every file is checked against the md5 DVC recorded (a truncated or corrupted download, or
    a wrong version, is refused) and moved into place only then.

    Nothing to do without a remote and a version: the dataset is then built from the params
    (the embedded procedural data, or a ``data.path`` already on the PVC)."""
    if not (dvc_remote and data_version):
        return params
    from ..errors import DataError, ParamsError
    from .cluster import writable_dir

    if not params.data.path:
        raise ParamsError(
            f"data_version = {data_version!r} needs data.path: where to put the data "
            "(e.g. /data/dsprites.npz on the dataset-cache PVC)"
        )
    target = Path(params.data.path)
    marker = target.parent / f".{target.name}.dvc-md5"
    if target.exists() and marker.exists() and marker.read_text().strip() == data_version:
        return params  # already in the cache (written only after its md5 was verified)
    writable_dir(target.parent, "the dataset to")
    import fsspec

    fs, root = fsspec.core.url_to_fs(
        dvc_remote.rstrip("/"), **_s3_options() if dvc_remote.startswith("s3://") else {}
    )

    def obj(md5: str) -> str:
        return f"{root}/files/md5/{md5[:2]}/{md5[2:]}"

    def fetch(md5: str, dst: Path) -> None:
        """Download to a temporary name, verify, then rename (never a partial file at dst)."""
        dst.parent.mkdir(parents=True, exist_ok=True)
        part = dst.parent / f".{dst.name}.part-{os.getpid()}"
        try:
            fs.get_file(obj(md5), str(part))
            got = file_md5(part)
            if got != md5:
                raise DataError(
                    f"{dvc_remote}: {obj(md5)} has md5 {got}, not the {md5} DVC recorded "
                    f"(corrupted or incomplete upload; `dvc push` it again)"
                )
            part.replace(dst)
        finally:
            part.unlink(missing_ok=True)

    if data_version.endswith(".dir"):
        listing = fs.cat_file(obj(data_version))
        if hashlib.md5(listing).hexdigest() != data_version.removesuffix(".dir"):
            raise DataError(f"{dvc_remote}: the directory listing {data_version} is corrupted")
        for entry in json.loads(listing):
            fetch(entry["md5"], target / entry["relpath"])
    else:
        fetch(data_version, target)
    marker.write_text(data_version)
    return params


def file_md5(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dataset_metadata(prepared_dir: str | Path, dvc_remote: str, data_version: str) -> dict:
    """The Dataset artifact's metadata: the prepared artifact's hashes and where its data
    came from (the DVC remote and the md5 of the version; "" when built from params)."""
    return {
        **prepared_metadata(prepared_dir),
        "dvc_remote": dvc_remote,
        "data_version": data_version,
    }


def registered_uri(info: Mapping[str, Any]) -> str:
    """``models:/<name>/<version>`` of a registered model (registered_model.json); the
    logged model's URI when nothing was registered (tracking.registered_model null)."""
    if info.get("name") and info.get("version"):
        return f"models:/{info['name']}/{info['version']}"
    return str(info.get("model_uri") or "")


def _s3_options() -> dict[str, Any]:
    # s3fs does not read AWS_ENDPOINT_URL by itself (MinIO, Ceph, moto).
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def evaluate_model(
    params: Params, prepared_dir: str | Path, model_dir: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    """Evaluate ``model_dir/model.pt`` inside the model's MLflow run (its mlflow_run.json)."""
    from ..stages import evaluate as stage

    model_path = Path(model_dir) / "model.pt"
    tracked = getattr(stage, "run_evaluate_tracked", None)
    if tracked is not None:
        return tracked(params, prepared_dir, model_path, out_dir, progress=False)
    # Until the tracked variant lands: the same metrics, logged through the model's run.
    from ..tracking.experiment import experiment_run

    with experiment_run(params, model_dir, "evaluate") as tracker:
        return stage.run_evaluate(
            params, prepared_dir, model_path, out_dir, progress=False, tracker=tracker
        )
