"""The one command line: ``semidisent prepare | train | evaluate | ...``.

Thin by design: each command loads and validates params.yaml (plus ``-S key=value``
overrides, in DVC's dotted form) and calls one stage function. Heavy imports happen inside the
commands so that ``semidisent --help`` and parameter errors are instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from .errors import SemidisentError

Command = Callable[[argparse.Namespace], int]


def _load(args: argparse.Namespace):
    from .config import load_params

    return load_params(args.params, args.overrides)


def cmd_prepare(args: argparse.Namespace) -> int:
    from .stages.prepare import run_prepare

    params = _load(args)
    prepared = run_prepare(params, args.out, progress=not args.quiet)
    m = prepared.manifest
    print(
        f"prepared {m['dataset']['name']}: {m['dataset']['num_rows']} images, "
        f"{m['supervision']['n_labels']} labels -> {args.out} (content {m['content_sha256'][:12]})"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .stages.train import run_train_tracked

    params = _load(args)
    result = run_train_tracked(
        params,
        args.prepared,
        args.out,
        progress=not args.quiet,
        restart_on_change=args.restart_on_change,
    )
    st = result.stats
    rate = f"{st['steps_per_s']:.1f} steps/s" if st["steps_per_s"] else "nothing left to train"
    print(
        f"trained {result.steps} steps on {st['device']} ({rate}, fast path "
        f"{'on' if st['fast_path'] else 'off'}); final loss {st['final_losses']['loss']:.2f} "
        f"-> {args.out}/model.pt"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .stages.evaluate import RANDOM_ENCODER, run_evaluate, run_evaluate_tracked

    params = _load(args)
    if args.random_encoder:  # a baseline, not an experiment: not logged to MLflow
        metrics = run_evaluate(params, args.prepared, RANDOM_ENCODER, args.out, not args.quiet)
    else:
        metrics = run_evaluate_tracked(
            params, args.prepared, args.model, args.out, progress=not args.quiet
        )
    summary = ", ".join(f"{k} {v:.3f}" for k, v in metrics["summary"].items() if v is not None)
    what = "a random encoder" if args.random_encoder else args.model
    print(f"evaluated {what} ({params.eval.mode} mode): {summary} -> {args.out}/metrics.json")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .stages.report import run_report_tracked

    params = _load(args)
    out = run_report_tracked(params, args.model_dir, args.eval, args.out)
    print(f"report -> {out}/report.html")
    return 0


def cmd_tracking_replay(args: argparse.Namespace) -> int:
    from .tracking.mlflow_tracker import replay_backlog

    sent = replay_backlog(args.backlog, args.tracking_uri)
    print(f"sent {sent} records from {args.backlog}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .stages.search import run_search

    params = _load(args)
    result = run_search(
        params,
        args.prepared,
        args.out,
        n_trials=args.n_trials,
        worker_id=args.worker_id,
        progress=not args.quiet,
    )
    c = result.counts
    best = "no complete trial yet"
    if result.best_trial is not None and result.best_values is not None:
        values = ", ".join(
            f"{n} {v:.4g}" for n, v in zip(result.objectives, result.best_values, strict=True)
        )
        # its family first, then its searched keys (train keys bare, family keys dotted)
        family = (result.best_params.get("model") or {}).get("name", params.model.name)
        searched = (result.summary.get("best") or {}).get("params") or result.best_train
        keys = ", ".join(
            [f"model.name {family}"]
            + [
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in searched.items()
                if k != "model.name"
            ]
        )
        best = f"best trial {result.best_trial}: {values} ({keys})"
    base = result.summary.get("baseline") or {}
    if base.get("trial") is not None:
        values = ", ".join(f"{n} {base[n]:.4g}" for n in result.objectives)
        baseline = f"best p = 0 (baseline) trial {base['trial']}: {values}"
    else:
        baseline = base.get("note", "no p = 0 trial completed")
    print(
        f"study {result.study}: ran {len(result.trials_run)} trial(s); {c['complete']} complete, "
        f"{c['pruned']} pruned, {c['failed']} failed in all; {best}; {baseline} "
        f"-> {args.out}/best_params.json, search_summary.json"
    )
    return 0


def _study(args: argparse.Namespace, batch: str | None = None):
    from .study.definition import load_study

    return load_study(args.definition, args.preset, args.params, args.overrides, batch=batch)


def cmd_study_run(args: argparse.Namespace) -> int:
    from .stages.study import default_out
    from .study.runner import run_study

    study = _study(args)  # checked before anything runs: a bad definition costs nothing
    out = args.out or default_out(study)
    result = run_study(study, out, jobs=args.jobs, progress=not args.quiet, doc=args.doc)
    shown = [
        f"{r['arm']} - {r['reference']} {r['metric']} {r['verdict']}"
        for r in result.report.get("paired", [])
        if r["metric"] in ("mig", "dci")
    ]
    print(
        f"study {study.label}: {result.done} of {result.planned} models done "
        f"({len(result.ran_now)} run now, {result.diverged} diverged) in {result.wall_s:.0f} s; "
        f"{'; '.join(shown) or 'no paired comparison'} -> {out}/results.md"
        + (f", {args.doc}" if args.doc else "")
    )
    return 0


def cmd_study_plan(args: argparse.Namespace) -> int:
    from .study.definition import describe

    study = _study(args)
    print(describe(study))
    if args.verbose:
        for u in study.units:
            print(f"  unit {u.id} ({u.prepared_id}): {', '.join(u.models)}")
    return 0


def cmd_study_report(args: argparse.Namespace) -> int:
    from .stages.study import report_stage

    report = report_stage(args.out, args.doc)
    c = report["counts"]
    print(
        f"study {report['study']} ({report['preset']}): tables of {c['completed']} completed "
        f"models ({c['missing']} missing) -> {args.out}/results.md"
        + (f", {args.doc}" if args.doc else "")
    )
    return 0


def cmd_study_compile(args: argparse.Namespace) -> int:
    from .kfp_pipeline.study import compile_study_pipeline

    settings = _cluster_settings(args)
    study = _study(args, batch="group" if settings.gpus > 0 else "one")
    out = compile_study_pipeline(study, settings, args.out, parallelism=args.parallel)
    print(f"compiled study pipeline: {len(study.units)} units, {len(study.models)} models -> {out}")
    return 0


def _study_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study", help="a study: arms x labelled pools x seeds, trained and compared (resumable)"
    )
    ssub = p.add_subparsers(dest="study_command", required=True, metavar="ACTION")

    def definition(q: argparse.ArgumentParser) -> None:
        _common(q)
        q.add_argument(
            "--definition",
            default="studies/label_replacement.yaml",
            help="study definition (default: %(default)s); -S study.key=value overrides it",
        )
        q.add_argument("--preset", default=None, help="ci | cpu | paper (default: the file's)")

    q = ssub.add_parser("run", help="train, evaluate and compare every model not done yet")
    definition(q)
    q.add_argument("--out", default=None, help="study folder (default: results/<name>-<preset>)")
    q.add_argument("--jobs", type=int, default=None, help="processes side by side (CPU)")
    q.add_argument("--doc", default=None, help="also write the results into this page's section")
    q.set_defaults(func=cmd_study_run)

    q = ssub.add_parser("plan", help="check the definition and print what it trains")
    definition(q)
    q.add_argument("-v", "--verbose", action="store_true", help="list every training unit")
    q.set_defaults(func=cmd_study_plan)

    q = ssub.add_parser("report", help="the tables, pictures and doc section from a study folder")
    q.add_argument("--out", required=True, help="the study folder (results/<name>-<preset>)")
    q.add_argument("--doc", default=None, help="also write the results into this page's section")
    q.set_defaults(func=cmd_study_report)

    q = ssub.add_parser("compile", help="the Kubeflow study pipeline (units fanned out on GPUs)")
    definition(q)
    q.add_argument("--out", default="study_pipeline.yaml", help="default: %(default)s")
    q.add_argument("--parallel", type=int, default=4, help="units at once (default: 4)")
    g = q.add_argument_group("cluster settings (docs/kubeflow.md)")
    g.add_argument("--image", help="the components' image (default: $SEMIDISENT_IMAGE)")
    g.add_argument("--gpus", type=int, help="GPUs per unit; 0 = CPU, one model per unit")
    g.add_argument("--accelerator", help="accelerator resource name")
    g.add_argument("--gpu-toleration", help="GPU nodes' taint key ('' = none)")
    g.add_argument("--gpu-node-selector", help="label=value of the GPU nodes")
    g.add_argument("--data-pvc", help="PVC at /data: units resume there after a retry")
    g.add_argument("--s3-endpoint-url", help="S3-compatible endpoint (MinIO, Ceph)")
    g.add_argument("--s3-secret", help="secret with the S3 credentials")
    g.add_argument("--mlflow-secret", help="secret with the MLflow credentials")
    g.add_argument("--image-pull-secret", help="registry secret for the image")
    q.set_defaults(func=cmd_study_compile)


def cmd_params(args: argparse.Namespace) -> int:
    import yaml

    from .tracking.redact import redact_value

    def redacted(value):  # credentials inside URLs (tracking.uri, search.storage) never shown
        if isinstance(value, dict):
            return {k: redacted(v) for k, v in value.items()}
        if isinstance(value, list):
            return [redacted(v) for v in value]
        return redact_value(value)

    params = _load(args)
    sections = args.section or list(params.to_dict())
    out = {s: redacted(params.section(s)) for s in sections}
    print(yaml.safe_dump(out, sort_keys=False), end="")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data.catalog import CATALOG

    for info in CATALOG.values():
        pairs = zip(info.factor_names, info.factor_sizes, strict=True)
        factors = ", ".join(f"{n} {k}" for n, k in pairs)
        needs = "file" if info.needs_path else "embedded"
        print(
            f"{info.name:16s} {needs:8s} {info.size:>8d} images  {factors}\n{'':16s} {info.summary}"
        )
    return 0


# ---------------------------------------------------------------- pipeline (Kubeflow)


def _cluster_settings(args: argparse.Namespace):
    """ClusterSettings from the command line (options left out keep their defaults)."""
    import dataclasses

    from .kfp_pipeline.settings import ClusterSettings

    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(ClusterSettings)
        if getattr(args, f.name, None) is not None
    }
    return ClusterSettings(**given)


def cmd_pipeline_compile(args: argparse.Namespace) -> int:
    from .kfp_pipeline.cluster import check_compile
    from .kfp_pipeline.compile import compile_pipeline, with_source

    params = _load(args)  # validated first: a wrong value never reaches the compiler
    settings = _cluster_settings(args)
    check_compile(params, settings)  # what would fail on the cluster, before anything is written
    out = compile_pipeline(params, with_source(settings), args.out)
    print(f"compiled pipeline (for Kubeflow Pipelines backend {settings.kfp_backend}) -> {out}")
    return 0


def cmd_pipeline_submit(args: argparse.Namespace) -> int:
    import os

    from .config import load_params
    from .kfp_pipeline.submit import submit

    # Both validated before anything is sent: the compiled defaults (the params file) and this
    # run's values (with the -S overrides), which travel as the run's arguments.
    base = load_params(args.params)
    run = _load(args)
    extra = {
        k: v for k, v in (("dvc_remote", args.dvc_remote), ("data_version", args.data_version)) if v
    }
    result = submit(
        base,
        run,
        _cluster_settings(args),
        host=args.host,
        experiment=args.experiment,
        run_name=args.run_name,
        namespace=args.namespace,
        token=os.environ.get("KFP_TOKEN") or None,
        extra_arguments=extra,
        enable_caching=False if args.no_cache else None,
        pipeline_name=args.pipeline_name,
        version_name=args.version_name,
    )
    from .tracking.redact import redact_value

    changed = ", ".join(f"{k}={redact_value(v)!r}" for k, v in result.arguments.items()) or "none"
    backend = f"backend {result.backend}" if result.backend else "backend version not reported"
    version = f", pipeline version {result.pipeline_version}" if result.pipeline_version else ""
    print(f"submitted run {result.run_id} ({backend}{version}; arguments changed: {changed})")
    print(result.url)
    return 0


def cmd_pipeline_run_local(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from .kfp_pipeline.local import default_root, local_params, run_local
    from .kfp_pipeline.settings import local_settings

    root = Path(args.root).resolve() if args.root else default_root()
    cluster_like = args.cluster_like is not None
    params = local_params(
        args.params, args.overrides, root, tiny=not args.full_budget, cluster_like=cluster_like
    )
    settings = local_settings()
    if args.s3_endpoint_url:
        settings = dataclasses.replace(settings, s3_endpoint_url=args.s3_endpoint_url)
    result = run_local(
        params,
        root,
        settings,
        dvc_remote=args.dvc_remote,
        data_version=args.data_version,
        cluster_like=cluster_like,
        manifests=args.cluster_like or None,
    )
    print(
        f"pipeline finished in {result.seconds:.0f} s; artifacts under {result.root}; "
        f"registered model {result.model_uri or '(tracking disabled)'}"
    )
    return 0


def _pipeline_parser(sub: argparse._SubParsersAction) -> None:
    from .kfp_pipeline.settings import OLDEST_BACKEND, ClusterSettings

    p = sub.add_parser("pipeline", help="Kubeflow Pipelines: compile, submit, run locally")
    psub = p.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    defaults = ClusterSettings()

    def cluster_options(q: argparse.ArgumentParser) -> None:
        g = q.add_argument_group("cluster settings (fixed at compile time; docs/kubeflow.md)")
        g.add_argument("--image", help="the components' image (default: $SEMIDISENT_IMAGE)")
        g.add_argument(
            "--workers", dest="search_workers", type=int, help="search workers (default: 2)"
        )
        g.add_argument("--gpus", type=int, help="GPUs per training task; 0 = CPU (default: 1)")
        g.add_argument("--accelerator", help=f"default: {defaults.accelerator}")
        g.add_argument("--gpu-toleration", help="GPU nodes' taint key ('' = none)")
        g.add_argument("--gpu-node-selector", help="label=value of the GPU nodes")
        g.add_argument("--data-pvc", help="PVC for the dataset cache + checkpoints, at /data")
        g.add_argument("--s3-endpoint-url", help="S3-compatible endpoint (MinIO, Ceph)")
        g.add_argument("--s3-secret", help=f"default: {defaults.s3_secret}")
        g.add_argument("--mlflow-secret", help=f"default: {defaults.mlflow_secret}")
        g.add_argument("--optuna-secret", help=f"default: {defaults.optuna_secret}")
        g.add_argument("--image-pull-secret", help="registry secret for the image")
        g.add_argument(
            "--tracking-configmap",
            help=f"ConfigMap with MLFLOW_TRACKING_URI (default: {defaults.tracking_configmap})",
        )
        g.add_argument(
            "--gpu-timeout",
            dest="gpu_timeout_h",
            type=float,
            help=f"hours each GPU step may run; 0 = no limit (default: {defaults.gpu_timeout_h:g})",
        )
        g.add_argument(
            "--kfp-backend",
            help=f"Kubeflow Pipelines backend version to compile for (default: "
            f"{defaults.kfp_backend}; older ones down to {OLDEST_BACKEND}: no optional "
            "secrets, every named secret / ConfigMap must exist)",
        )

    q = psub.add_parser("compile", help="write the pipeline's IR YAML")
    _common(q)
    q.add_argument("--out", default="semidisent_pipeline.yaml", help="default: %(default)s")
    cluster_options(q)
    q.set_defaults(func=cmd_pipeline_compile)

    q = psub.add_parser("submit", help="create a run on a Kubeflow Pipelines endpoint")
    _common(q)
    q.add_argument("--host", required=True, help="KFP API URL, e.g. https://kf.example/pipeline")
    q.add_argument("--experiment", default="semidisent", help="KFP experiment (%(default)s)")
    q.add_argument("--run-name", default=None, help="default: file name + time")
    q.add_argument("--namespace", default=None, help="profile namespace (multi-user Kubeflow)")
    q.add_argument("--dvc-remote", default="", help="DVC remote URL of the data (s3://...)")
    q.add_argument("--data-version", default="", help="md5 DVC recorded for the data")
    q.add_argument("--no-cache", action="store_true", help="disable KFP caching for this run")
    q.add_argument(
        "--pipeline-name",
        default=None,
        help="also upload as a version of this named pipeline (listed in the UI, schedulable) "
        "and run that version",
    )
    q.add_argument(
        "--version-name", default=None, help="the pipeline version's name (default: commit-time)"
    )
    cluster_options(q)
    q.set_defaults(func=cmd_pipeline_submit)

    q = psub.add_parser("run-local", help="run the pipeline here with kfp.local (CPU)")
    _common(q)
    q.add_argument("--root", default=None, help="artifact folder (default: a new temp folder)")
    q.add_argument("--dvc-remote", default="", help="DVC remote URL of the data (s3://...)")
    q.add_argument("--data-version", default="", help="md5 DVC recorded for the data")
    q.add_argument(
        "--full-budget",
        action="store_true",
        help="use the params as they are (default: a tiny budget that runs in minutes)",
    )
    q.add_argument(
        "--cluster-like",
        nargs="?",
        const="",
        default=None,
        metavar="MANIFESTS",
        help="run each step as its pod would: own empty directories, no inherited environment, "
        "KUBERNETES_SERVICE_HOST set, secrets / ConfigMaps from MANIFESTS (a YAML file of "
        "Kubernetes Secret and ConfigMap objects)",
    )
    q.add_argument(
        "--s3-endpoint-url",
        default=None,
        help="S3-compatible endpoint set in the steps (AWS_ENDPOINT_URL), as on a cluster",
    )
    q.set_defaults(func=cmd_pipeline_run_local)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    p.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter, e.g. -S train.beta=8",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semidisent",
        description="Semi-supervised disentanglement learning with label replacement.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"semidisent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="dataset + supervision mask -> prepared artifact")
    _common(p)
    p.add_argument(
        "--out", default="data/prepared", help="artifact directory (default: %(default)s)"
    )
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="prepared artifact -> trained model (resumes if killed)")
    _common(p)
    p.add_argument(
        "--prepared", default="data/prepared", help="prepared artifact (default: %(default)s)"
    )
    p.add_argument(
        "--out", default="models/default", help="output directory (default: %(default)s)"
    )
    p.add_argument(
        "--restart-on-change",
        action="store_true",
        help="start over when the checkpoints were made with other parameters (dvc repro)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="trained model -> disentanglement metrics + pictures")
    _common(p)
    p.add_argument(
        "--prepared", default="data/prepared", help="prepared artifact (default: %(default)s)"
    )
    p.add_argument(
        "--model", default="models/default/model.pt", help="model file (default: %(default)s)"
    )
    p.add_argument("--out", default="eval", help="output directory (default: %(default)s)")
    p.add_argument(
        "--random-encoder",
        action="store_true",
        help="evaluate a freshly initialised encoder (the baseline) instead of --model",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="experiment summary (Markdown + HTML); registers the model")
    _common(p)
    p.add_argument("--model-dir", default="models/default", help="train's output directory")
    p.add_argument("--eval", default="eval", help="evaluate's output directory")
    p.add_argument("--out", default="reports", help="output directory (default: %(default)s)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("tracking", help="tracking utilities")
    tsub = p.add_subparsers(dest="tracking_command", required=True, metavar="ACTION")
    r = tsub.add_parser("replay", help="send a backlog left by an MLflow outage")
    r.add_argument("backlog", help="tracking_backlog_*.jsonl file")
    r.add_argument("--tracking-uri", default=None, help="default: the backlog's own / env")
    r.set_defaults(func=cmd_tracking_replay)

    p = sub.add_parser("search", help="Optuna study over train.* keys, trials trained in batches")
    _common(p)
    p.add_argument(
        "--prepared", default="data/prepared", help="prepared artifact (default: %(default)s)"
    )
    p.add_argument("--out", default="search", help="output directory (default: %(default)s)")
    p.add_argument(
        "--n-trials",
        type=int,
        default=None,
        metavar="N",
        help="this worker's own budget (default: fill the study up to search.n_trials; "
        "0: only create the study and summarise it)",
    )
    p.add_argument(
        "--worker-id",
        default=None,
        metavar="ID",
        help="name of this worker (several workers share a study through search.storage)",
    )
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("params", help="print the validated parameters")
    _common(p)
    p.add_argument("section", nargs="*", help="sections to print (default: all)")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("datasets", help="list the dataset names for data.dataset")
    p.set_defaults(func=cmd_datasets)

    _pipeline_parser(sub)
    _study_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args)
    except SemidisentError as e:
        from .tracking.redact import redact_value

        # Messages may quote values: a URL's password is never printed.
        print(f"semidisent {args.command}: error: {redact_value(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"semidisent {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
