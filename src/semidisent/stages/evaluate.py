"""`semidisent evaluate`: a trained model + the prepared artifact -> metrics and pictures.

Writes into ``out``:

- ``metrics.json``: numbers only (DVC metrics): ``{"summary": {metric: headline score},
  metric: {score name: value}, ...}``, e.g. ``{"mig": {"discrete_mig": 0.31}, ...}``; the
  few-label entries also carry the counts they were computed from (``num_labels``,
  ``num_seen_in_training``; DCI / SAP ``num_train`` / ``num_test``: metrics/few_label.py);
- ``metrics_meta.json``: provenance: mode, seed, sample scale, the few-label protocol
  (``few_label_protocol``, also in the val_* settings), settings and seconds per metric,
  library versions (scikit-learn is part of the reference metrics' definition), device, model
  file hash and metadata, dataset hash;
- ``plots/*.png``: reconstructions, prior samples, latent traversals, and factor-vs-latent heat
  maps (mutual information / factor entropy; DCI importance when DCI is computed).

``model="random"`` evaluates a freshly initialised encoder (seed ``train.seed``): the "random
encoder" baseline that trained models are compared against.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..artifacts.hashing import sha256_file, write_json
from ..artifacts.prepared import Prepared, load_prepared
from ..config.schema import Params
from ..errors import ArtifactError
from ..tracking.base import NULL_TRACKER, Tracker

log = logging.getLogger(__name__)

RANDOM_ENCODER = "random"


def random_encoder(params: Params, in_channels: int, seed: int | None = None) -> Any:
    """A VAE with freshly initialised weights (``model`` parameters, seed ``train.seed``)."""
    import torch

    from ..models import VAE, VAEConfig

    seed = params.train.seed if seed is None else seed
    config = VAEConfig(
        in_channels=in_channels,
        num_latent=params.model.num_latent,
        encoder_kernel=params.model.encoder_kernel,
        init=params.model.init,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VAE(config).eval()


def _versions() -> dict[str, str]:
    import scipy
    import sklearn
    import torch

    return {
        "semidisent": __version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _load_model(model: Any, params: Params, prepared: Prepared, device: str) -> tuple[Any, dict]:
    from ..methods import get_method
    from ..models.io import load_model

    in_channels = prepared.dataset.observation_shape[0]
    if isinstance(model, str) and model == RANDOM_ENCODER:
        # The family's own networks freshly initialised, else the disentanglement_lib VAE.
        vae = get_method(params.model.name).random_network(params, prepared)
        if vae is None:
            vae = random_encoder(params, in_channels)
        info = {"kind": "random_encoder", "seed": params.train.seed, "config": vae.config.to_dict()}
    elif isinstance(model, (str, Path)):
        vae, meta = load_model(model)
        info = {
            "kind": "file",
            "path": str(model),
            "sha256": sha256_file(model),
            "config": vae.config.to_dict(),
            "meta": meta,
        }
    else:
        vae = model
        info = {"kind": "object", "config": vae.config.to_dict()}
    if vae.config.in_channels != in_channels:
        raise ArtifactError(
            f"the model takes {vae.config.in_channels}-channel images but the prepared dataset "
            f"has {in_channels} channels; evaluate it on the dataset it was trained on"
        )
    return vae.to(device).eval(), info


def _family(model_info: dict[str, Any], params: Params) -> Any:
    """The model family of the evaluated network: the one its model file names, else the
    params' ``model.name`` (an object, the random encoder)."""
    from ..methods import get_method

    if model_info["kind"] == "file":
        return get_method((model_info["meta"].get("model") or {}).get("name", "s2vae"))
    return get_method(params.model.name)


def _numbers(obj: Any) -> Any:
    """Scores as JSON numbers (NaN is not valid JSON: it becomes null)."""
    if isinstance(obj, dict):
        return {k: _numbers(v) for k, v in obj.items()}
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    return obj


def run_evaluate(
    params: Params,
    prepared: Prepared | str | Path,
    model: Any,
    out: str | Path,
    progress: bool = True,
    tracker: Tracker = NULL_TRACKER,
) -> dict[str, Any]:
    """Compute ``eval.metrics`` (+ the few-label ones with ``eval.few_label``) of ``model`` (a
    VAE, a model file, or ``"random"``) on the prepared dataset; write metrics.json,
    metrics_meta.json and plots/ under ``out``. Returns the contents of metrics.json."""
    from ..metrics.registry import evaluate_metrics
    from ..metrics.representation import vae_representation
    from ..metrics.utils import resolve_device

    t0 = time.perf_counter()
    ep = params.eval
    if not isinstance(prepared, Prepared):
        prepared = load_prepared(prepared, params)
    dataset = prepared.dataset
    device = resolve_device(ep.device)
    vae, model_info = _load_model(model, params, prepared, device)
    representation = vae_representation(vae, device=device, batch_size=ep.batch_size)
    log.info(
        "evaluating %s on %s (%s mode, %s, sample scale %g)",
        model_info["kind"],
        dataset.name,
        ep.mode,
        device,
        ep.sample_scale,
    )

    def report(name: str, scores: dict[str, Any], seconds: float) -> None:
        log.info("%s: %s (%.1f s)", name, json.dumps(_numbers(scores))[:200], seconds)

    def score(rep: Any, names: Sequence[str], few_label: bool, on_metric: Any = None) -> Any:
        """The configured metrics of one representation (the model's, or the baseline's)."""
        return evaluate_metrics(
            names,
            dataset,
            rep,
            seed=ep.seed,
            mode=ep.mode,
            sample_scale=ep.sample_scale,
            device=device,
            progress=progress,
            mask=prepared.mask,
            few_label=few_label,
            on_metric=on_metric,
            threads=ep.cpu_threads,
            workers=ep.cpu_workers,
            few_label_protocol=ep.few_label_protocol,
        )

    # The evaluations the model's family declares for it (methods/base.py): the factor metrics
    # (disentanglement suite, few-label scores, random baseline) and / or classification.
    method = _family(model_info, params)
    # Generation is scored when eval.generation asks for it of a family that generates.
    wants_generation = ep.generation == "always" or (
        ep.generation == "auto" and method.generation_default
    )
    evaluations = tuple(
        e for e in method.evaluations_of(vae) if e != "generation" or wants_generation
    )
    factor_metrics = "factor_metrics" in evaluations
    ev = score(representation, ep.metrics, ep.few_label, report) if factor_metrics else None
    details = dict(ev.details) if ev is not None else {}
    if ev is not None and "mig" not in details:  # the heat map needs a mutual-information matrix
        from ..metrics.mig import MIGSettings, compute_mig
        from ..metrics.representation import CodeCache

        sizes = MIGSettings(mode="fast", device=device).scaled(min(ep.sample_scale, 0.2))
        details["mig"] = {}
        compute_mig(dataset, CodeCache(dataset, representation), ep.seed, sizes, details["mig"])
    out = Path(out)
    plots = out / "plots"
    if plots.exists():
        shutil.rmtree(plots)
    pictures: list[Path] = []
    if ep.plots:
        pictures = method.write_pictures(vae, dataset, plots, details, ep.seed)
    metrics = _numbers({"summary": ev.summary, **ev.scores}) if ev is not None else {"summary": {}}
    if factor_metrics and ep.random_baseline and model_info["kind"] != "random_encoder":
        # The evaluated family's networks, freshly initialised (else the dlib VAE).
        rnd = method.random_network(params, prepared)
        if rnd is None:
            rnd, _ = _load_model(RANDOM_ENCODER, params, prepared, device)
        rep = vae_representation(rnd, device=device, batch_size=ep.batch_size)
        baseline = score(rep, ep.random_baseline, few_label=False)
        metrics["random_encoder"] = _numbers(baseline.summary)
    classification: dict[str, Any] = {}
    if "classification" in evaluations:
        from ..metrics.classification import classification_scores

        t1 = time.perf_counter()
        predict = method.predictor(vae, params, device)
        scores, classification = classification_scores(predict, dataset, prepared.mask, ep.seed)
        classification["seconds"] = round(time.perf_counter() - t1, 3)
        metrics["classification"] = _numbers(scores)
        metrics["summary"]["classification_error"] = _numbers(scores.get("error"))
        # Higher is better, as every score a study compares (study/definition.py SUMMARY_SCORES).
        error = scores.get("error")
        if isinstance(error, float) and math.isfinite(error):
            metrics["summary"]["classification_accuracy"] = 1.0 - error
        if "error_inferred" in scores:
            metrics["summary"]["classification_error_inferred"] = _numbers(scores["error_inferred"])
        report("classification", scores, classification["seconds"])
    probes: dict[str, Any] = {}
    if "probes" in evaluations:
        from ..metrics.probes import probe_scores

        scores, probes = probe_scores(
            vae, dataset, prepared.mask, ep.seed, device, ep.sample_scale,
            **method.probe_options(params),
        )  # fmt: skip
        metrics["probes"] = _numbers(scores)
        for key in ("linear_accuracy", "mlp_accuracy", "bits_per_dim"):
            if key in scores:
                metrics["summary"][f"probe_{key}" if "accuracy" in key else key] = _numbers(
                    scores[key]
                )
        report("probes", scores, probes["seconds"])
    generation: dict[str, Any] = {}
    if "generation" in evaluations:
        from ..metrics.generation import GenerationSettings, generation_scores

        t1 = time.perf_counter()
        settings = GenerationSettings(
            num_samples=ep.generation_samples,
            classifier_steps=ep.generation_classifier_steps,
        ).scaled(ep.sample_scale)
        scores, generation = generation_scores(
            lambda n, seed: method.generate(vae, n, seed),
            dataset,
            prepared.data_hash,
            settings,
            seed=ep.seed,
            progress=progress,
        )
        generation["seconds"] = round(time.perf_counter() - t1, 3)
        metrics["generation"] = _numbers(scores)
        metrics["summary"]["swd"] = _numbers(scores["swd"])
        metrics["summary"]["frechet"] = _numbers(scores["frechet"])
        report("generation", scores, generation["seconds"])
    meta = {
        "mode": ep.mode,
        "seed": ep.seed,
        "sample_scale": ep.sample_scale,
        "evaluations": list(evaluations),
        "metrics": list(ep.metrics) if factor_metrics else [],
        "few_label": ep.few_label and factor_metrics,
        "few_label_protocol": ep.few_label_protocol,
        "device": device,
        "device_name": _device_name(device),
        "seconds": {
            **({k: round(v, 3) for k, v in ev.seconds.items()} if ev is not None else {}),
            "total": round(time.perf_counter() - t0, 3),
        },
        # Metrics computed in a forked process alongside the others: their seconds overlap.
        "concurrent": ev.concurrent if ev is not None else [],
        "settings": ev.settings if ev is not None else {},
        "rows_encoded": ev.rows_encoded if ev is not None else 0,
        **({"classification": classification} if classification else {}),
        **({"generation": generation} if generation else {}),
        **({"probes": probes} if probes else {}),
        "versions": _versions(),
        "model": model_info,
        "data": {
            "path": str(prepared.path),
            "dataset": dataset.name,
            "content_sha256": prepared.data_hash,
            "mask_sha256": prepared.mask.digest(),
            "n_validation": int(np.sum(prepared.mask.is_validation)),
        },
        "params_sha256": params.digest("eval", "model"),
        "pictures": [str(p.relative_to(out)) for p in pictures],
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    write_json(out / "metrics_meta.json", _numbers(meta))
    tracker.log_metrics(_flatten(metrics))
    tracker.log_dict(meta, "metrics_meta.json")
    if pictures:
        tracker.log_artifact(plots, "plots")
    log.info("evaluation written to %s in %.1f s", out, meta["seconds"]["total"])
    return metrics


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested scores -> MLflow metric names (``mig.discrete_mig``); ':' is not allowed there."""
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}".replace(":", "_")
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (int, float)) and v is not None:
            out[key] = float(v)
    return out


def run_evaluate_tracked(
    params: Params,
    prepared_dir: str | Path,
    model_path: str | Path,
    out: str | Path,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """:func:`run_evaluate` logging into the MLflow run of the model (the run id travels in
    ``mlflow_run.json`` beside the model file); what the CLI, ``dvc repro`` and Kubeflow call."""
    from ..models.io import require_model_file
    from ..tracking.experiment import experiment_run

    # Refused before the MLflow run is opened: a typo must not leave a failed run behind.
    model_path = require_model_file(model_path)
    with experiment_run(params, model_path.parent, "evaluate") as tracker:
        # Tags, not params: train logged params.yaml's eval section already, and a later
        # `dvc exp run -S eval.mode=reference` must not collide with it (MLflow params are
        # write-once).
        evaluated = {f"evaluated_with.{k}": v for k, v in params.to_dict()["eval"].items()}
        tracker.set_tags({"semidisent.evaluated": "true", **evaluated})
        return run_evaluate(params, prepared_dir, model_path, out, progress, tracker=tracker)
