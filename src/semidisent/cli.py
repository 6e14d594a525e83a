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


def cmd_params(args: argparse.Namespace) -> int:
    import yaml

    params = _load(args)
    sections = args.section or list(params.to_dict())
    print(yaml.safe_dump({s: params.section(s) for s in sections}, sort_keys=False), end="")
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
    from .kfp_pipeline.compile import compile_pipeline

    params = _load(args)  # validated first: a wrong value never reaches the compiler
    out = compile_pipeline(params, _cluster_settings(args), args.out)
    print(f"compiled pipeline -> {out}")
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
    )
    changed = ", ".join(f"{k}={v!r}" for k, v in result.arguments.items()) or "none"
    print(f"submitted run {result.run_id} (arguments changed: {changed})")
    print(result.url)
    return 0


def cmd_pipeline_run_local(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .kfp_pipeline.local import default_root, local_params, run_local

    root = Path(args.root).resolve() if args.root else default_root()
    params = local_params(args.params, args.overrides, root, tiny=not args.full_budget)
    result = run_local(params, root, dvc_remote=args.dvc_remote, data_version=args.data_version)
    print(
        f"pipeline finished in {result.seconds:.0f} s; artifacts under {result.root}; "
        f"registered model {result.model_uri or '(tracking disabled)'}"
    )
    return 0


def _pipeline_parser(sub: argparse._SubParsersAction) -> None:
    from .kfp_pipeline.settings import ClusterSettings

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
        print(f"semidisent {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"semidisent {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
