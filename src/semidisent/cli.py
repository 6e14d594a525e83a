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

    p = sub.add_parser("params", help="print the validated parameters")
    _common(p)
    p.add_argument("section", nargs="*", help="sections to print (default: all)")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("datasets", help="list the dataset names for data.dataset")
    p.set_defaults(func=cmd_datasets)
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
