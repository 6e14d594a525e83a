"""`semidisent train`: prepared artifact + params -> trained model, statistics, loss curves.

Writes into ``out``:

- ``model.pt``: the VAE (:func:`semidisent.models.io.save_model`); its meta holds the train and
  model params, the prepared artifact's content and mask hashes, the steps, the final losses,
  the device and the objective's learned parameters (l2's scale, embed's embeddings);
- ``train_stats.json``: throughput (steps/s, images/s), final and averaged losses, wall time,
  device, torch version, fast path on/off;
- ``curves.json``: one point per log step, ``[{"step": .., "loss": .., "recon": .., ...}]``
  (a DVC plots source);
- ``checkpoints/``: resumable checkpoints (a rerun after a kill continues from the newest).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..artifacts.hashing import write_json
from ..artifacts.prepared import load_prepared
from ..config.schema import Params
from ..methods.base import RunSpec
from ..models.io import save_model
from ..tracking.base import NULL_TRACKER, Tracker
from ..training.checkpoint import CheckpointError
from ..training.trainer import TrainResult, train

log = logging.getLogger(__name__)


def run_train(
    params: Params,
    prepared_dir: str | Path,
    out_dir: str | Path,
    *,
    progress: bool = True,
    tracker: Tracker = NULL_TRACKER,
    restart_on_change: bool = False,
) -> TrainResult:
    """Train and write the outputs. A checkpoint made with other parameters is refused, unless
    ``restart_on_change`` (what ``dvc repro`` wants: the stage reruns because its parameters
    changed, so the old checkpoints are stale) removes it and starts over."""
    prepared = load_prepared(prepared_dir, params)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckdir = out / "checkpoints"

    def fit() -> TrainResult:
        return train(
            prepared,
            RunSpec(params.train, params.method_params()),
            params.model,
            checkpoint_dir=ckdir,
            tracker=tracker,
            progress=progress,
        )

    try:
        result = fit()
    except CheckpointError as e:
        if not restart_on_change:
            raise
        log.warning("%s; starting over", e)
        for f in ckdir.glob("ckpt-*.pt"):
            f.unlink()
        result = fit()
    stats = {**result.stats, "content_sha256": prepared.data_hash}
    meta = {
        "train": params.section("train"),
        "model": params.section("model"),
        **(
            {params.model.name: params.section(params.model.name)}
            if params.method_params() is not None
            else {}
        ),
        "data": params.section("data"),
        "content_sha256": prepared.data_hash,
        "mask_sha256": prepared.manifest["supervision"]["mask_sha256"],
        "steps": result.steps,
        "final_losses": stats["final_losses"],
        "device": stats["device"],
        "objective_state": result.objective_state,
        "supervised_factors": list(prepared.mask.factor_names),
    }
    assert result.model is not None  # a diverged single run raises NonFiniteLossError
    save_model(out / "model.pt", result.model, meta)
    write_json(out / "train_stats.json", stats)
    write_json(out / "curves.json", result.curves)
    tracker.log_dict(stats, "train_stats.json")
    log.info(
        "trained %d steps in %.1f s (%.1f steps/s) -> %s",
        result.steps,
        stats["wall_s"],
        stats["steps_per_s"] or 0.0,
        out,
    )
    return result


def run_train_tracked(
    params: Params,
    prepared_dir: str | Path,
    out_dir: str | Path,
    *,
    progress: bool = True,
    restart_on_change: bool = False,
) -> TrainResult:
    """:func:`run_train` inside the experiment's MLflow run (created, or continued after a
    kill); what the CLI, ``dvc repro`` and the Kubeflow component call."""
    from ..artifacts.prepared import read_manifest
    from ..tracking.experiment import describe_run, experiment_run, log_prepared_inputs

    out = Path(out_dir)
    # Read (and refused when missing) before the MLflow run is opened.
    manifest = read_manifest(prepared_dir)
    with experiment_run(params, out, "train", checkpoint_dir=out / "checkpoints") as tracker:
        describe_run(tracker, params, "train", params.train.device)
        log_prepared_inputs(tracker, prepared_dir, manifest)
        result = run_train(
            params,
            prepared_dir,
            out,
            progress=progress,
            tracker=tracker,
            restart_on_change=restart_on_change,
        )
        tracker.log_artifact(out / "curves.json", "training")
        return result
