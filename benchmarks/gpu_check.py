"""One call that proves every CUDA path on a lent GPU and measures it: the GPU tests, training
throughput (eager, compiled + CUDA graph, K-model batching, bf16 vs float32), a short search and
the metric suite, each part in its own process with its own time limit, so that a failure or a
timeout in one part does not stop the others.

    python benchmarks/gpu_check.py OUT                  # on the GPU machine: about 9 minutes
    python benchmarks/gpu_check.py OUT --dry-run        # the same parts, tiny, on the CPU
    python benchmarks/gpu_check.py OUT --update-docs docs/performance.md

Writes OUT/gpu_check.json (every figure, the device, the versions, each part's status),
OUT/gpu_check.md (the tables of docs/performance.md) and OUT/gpu_check.log (each part's
output). It needs only what the lent machine's image has (PyTorch with CUDA, numpy, scipy,
scikit-learn, pytest): mlflow, kfp and dvc are never imported; without optuna the search part
is skipped and says so. Nothing is installed, except wheels a caller carried in ``--wheels``
(e.g. optuna's, see docs/performance.md), put on the path of the children only.
``--block-imports mlflow,kfp,dvc`` makes those packages unimportable in every part (the CPU
dry run uses it to behave like the GPU image).

Exit status: 0 when every part passed (or was skipped with a reason), 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
BLOCKER = BENCH / "blocked_imports"
# Test files holding @gpu tests (tests/test_gpu_check.py checks that this list is complete);
# the others import mlflow / kfp / dvc, which the GPU image lacks.
GPU_TEST_FILES = (
    "tests/test_backends.py",
    "tests/test_cayley.py",
    "tests/test_drmm.py",
    "tests/test_evaluate.py",
    "tests/test_metrics_agreement.py",
    "tests/test_metrics_gbt.py",
    "tests/test_training.py",
)
OPTIONAL = ("mlflow", "kfp", "dvc", "optuna", "pytest")
DOCS_BEGIN, DOCS_END = "<!-- gpu_check:begin -->", "<!-- gpu_check:end -->"

# Targets (docs/training.md, docs/search.md, docs/metrics.md): (what, unit, threshold, better).
TARGETS = {
    "fast_steps_per_s": ("single model, compiled + CUDA graph", "steps/s", 1500.0, "higher"),
    "fast_vs_baseline": ("fast path vs DataLoader baseline", "x", 10.0, "higher"),
    "k32_model_steps_per_s": ("K = 32 batched models", "model-steps/s", 6000.0, "higher"),
    "resident_gib": ("full dSprites resident + fast step, peak memory", "GiB", 4.0, "lower"),
    "metrics_fast_s": ("six core metrics, fast mode, study sizes", "s", 5.0, "lower"),
}


@dataclass
class Part:
    name: str
    limit_s: float  # on the GPU
    dry_limit_s: float  # --dry-run on a CPU
    argv: Callable[[Path, bool], list[str] | None]  # (work dir, dry) -> command, or None
    needs: tuple[str, ...] = ()  # importable packages it needs (skipped without them)
    result: dict[str, Any] = field(default_factory=dict)


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _imports(work: Path, dry: bool) -> list[str]:
    code = (
        "import semidisent.training, semidisent.metrics, semidisent.objectives, "
        "semidisent.models, semidisent.data, semidisent.backends\n"
        "import sys; sys.path.insert(0, 'benchmarks')\n"
        "import train_throughput, metrics_speed, search_speed\n"
        "bad = [m for m in ('mlflow', 'kfp', 'dvc') if m in sys.modules]\n"
        "assert not bad, f'imported {bad}'\n"
        "print('training core, metrics and benchmarks import without mlflow, kfp and dvc')"
    )
    return _python("-c", code)


def _pytest(work: Path, dry: bool) -> list[str]:
    return _python(
        "-m", "pytest", "-m", "gpu", "-v", "-p", "no:cacheprovider", "-rfEs", "--tb=short",
        f"--junitxml={work / 'pytest.xml'}", *GPU_TEST_FILES,
    )  # fmt: skip


def _throughput(work: Path, dry: bool) -> list[str]:
    args = ["--json", str(work / "train.json")]
    if dry:
        args += ["--quick", "--device", "cpu", "--ks", "2", "--steps", "2", "--amp-compare", "4"]
    else:
        args += ["--device", "cuda", "--ks", "32", "--steps", "300", "--amp-compare", "1000"]
    return _python(str(BENCH / "train_throughput.py"), *args)


def _search(work: Path, dry: bool) -> list[str]:
    args = ["--json", str(work / "search.json"), "--reports", "2", "--gt-metrics", "mig"]
    if dry:
        args += ["--quick", "--device", "cpu", "--trials", "2", "--steps", "4"]
        args += ["--warmup-steps", "2"]
    else:
        args += ["--device", "cuda", "--trials", "8", "--steps", "1000", "--warmup-steps", "20"]
        args += ["--sample-scale", "0.1"]
    return _python(str(BENCH / "search_speed.py"), *args)


def _metrics(work: Path, dry: bool) -> list[str]:
    prepared = work / "prepared"
    # The procedural dSprites (all 737,280 images) on the GPU; a sub-grid in the dry run.
    prepare = (
        "import sys; sys.path.insert(0, 'benchmarks')\n"
        "from pathlib import Path\n"
        "from semidisent.config import load_params\n"
        "from semidisent.stages.prepare import run_prepare\n"
        f"out = Path({str(work)!r})\n"
        "data = ['tracking.enabled=false']\n"
        f"if {dry!r}:\n"
        "    from search_speed import write_dsprites_subset\n"
        "    write_dsprites_subset(out / 'subset.npz', {2: [0, 20], 3: list(range(0, 32, 4)),"
        " 4: list(range(0, 32, 4))})\n"
        "    data += [f'data.path={out / \"subset.npz\"}', 'supervision.n_labels=100']\n"
        f"run_prepare(load_params(None, data), {str(prepared)!r}, progress=False)\n"
    )
    # The DCI agreement part is CPU-only scikit-learn work (minutes): not what the GPU time is for.
    args = [
        "--prepared", str(prepared), "--skip-reference", "--skip-dci-agreement",
        "--json", str(work / "metrics.json"),
    ]  # fmt: skip
    if dry:
        args += ["--devices", "cpu", "--scale", "0.02", "--metrics", "mig", "dci"]
    else:
        args += ["--devices", "cuda", "--threads", "0"]
    # Two commands in one part: prepare, then the benchmark.
    script = (
        prepare
        + "import runpy, sys\n"
        + f"sys.argv = ['metrics_speed.py', *{args!r}]\n"
        + "runpy.run_path('benchmarks/metrics_speed.py', run_name='__main__')\n"
    )
    return _python("-c", script)


def _families(work: Path, dry: bool) -> list[str]:
    """St-RKM's training steps/s beside the beta-VAE's (issue 18)."""
    out = ["--json", str(work / "families.json")]
    if dry:
        args = ["--device", "cpu", "--steps", "2", "--repeats", "1", "--no-paper"]
    else:
        args = ["--device", "cuda", "--steps", "50"]
    return _python(str(BENCH / "strkm_speed.py"), *args, *out)


def _local_vae(work: Path, dry: bool) -> list[str]:
    """The local-decoder VAE's training steps/s beside the beta-VAE's, and sampling (issue 19)."""
    out = ["--json", str(work / "localvae.json")]
    if dry:
        args = ["--device", "cpu", "--steps", "1", "--repeats", "1", "--batch", "8",
                "--channels", "4", "--sample", "1",
                "--decoders", "factorised", "local l=1"]  # fmt: skip
    else:
        args = ["--device", "cuda", "--steps", "20", "--mnist"]
    return _python(str(BENCH / "localvae_speed.py"), *args, *out)


def _drmm(work: Path, dry: bool) -> list[str]:
    """The DRMM's and its CNN's training steps/s beside the beta-VAE's (issue 20)."""
    out = ["--json", str(work / "drmm.json")]
    if dry:
        args = ["--device", "cpu", "--steps", "1", "--repeats", "1", "--batch", "8"]
    else:
        args = ["--device", "cuda", "--steps", "30", "--mnist"]
    return _python(str(BENCH / "drmm_speed.py"), *args, *out)


PARTS = [
    Part("imports", 60, 60, _imports),
    Part("pytest_gpu", 240, 120, _pytest, needs=("pytest",)),
    Part("train_throughput", 150, 120, _throughput),
    Part("search_speed", 150, 120, _search, needs=("optuna",)),
    Part("metrics_speed", 75, 120, _metrics),
    Part("family_speed", 60, 60, _families),
    Part("localvae_speed", 90, 60, _local_vae),
    Part("drmm_speed", 60, 60, _drmm),
]


def _importable(name: str, env: dict[str, str]) -> bool:
    """Whether ``name`` imports in a child process of this environment (the blocker and
    carried wheels apply there)."""
    code = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({name!r}) else 1)"
    try:
        proc = subprocess.run(_python("-c", code), env=env, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def environment(env: dict[str, str]) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.machine()})",
        "cuda_available": cuda,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "packages": {name: _importable(name, env) for name in OPTIONAL},
    }


def run_part(part: Part, work: Path, dry: bool, env: dict[str, str], log: Any) -> None:
    limit = part.dry_limit_s if dry else part.limit_s
    missing = [n for n in part.needs if not _importable(n, env)]
    if missing:
        part.result = {"status": "skipped", "reason": f"{', '.join(missing)} not installed"}
        log.write(f"\n===== {part.name}: skipped ({part.result['reason']})\n")
        return
    argv = part.argv(work, dry)
    log.write(f"\n===== {part.name} (limit {limit:.0f} s): {' '.join(argv)[:400]}\n")
    log.flush()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=limit
        )
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        rc = None
    seconds = round(time.perf_counter() - t0, 1)
    if rc is None:
        part.result = {"status": "timeout", "seconds": seconds, "limit_s": limit}
    elif part.name == "pytest_gpu" and rc == 5:  # nothing collected: a CPU machine
        part.result = {"status": "ok", "seconds": seconds, "note": "no GPU test ran (no CUDA)"}
    else:
        part.result = {"status": "ok" if rc == 0 else "failed", "seconds": seconds, "rc": rc}
    log.write(f"===== {part.name}: {part.result}\n")
    log.flush()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _junit(path: Path) -> dict[str, Any] | None:
    """pytest's counts from its JUnit XML, and the failed tests (``module::name``)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    counts: dict[str, Any] = {
        k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")
    }
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed"] = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return counts


def collect(work: Path) -> dict[str, Any]:
    """The children's figures, by part."""
    out: dict[str, Any] = {
        "pytest_gpu": _junit(work / "pytest.xml"),
        "train_throughput": _read_json(work / "train.json"),
        "search_speed": _read_json(work / "search.json"),
        "metrics_speed": _read_json(work / "metrics.json"),
        "family_speed": _read_json(work / "families.json"),
        "localvae_speed": _read_json(work / "localvae.json"),
        "drmm_speed": _read_json(work / "drmm.json"),
    }
    return {k: v for k, v in out.items() if v is not None}


def target_values(figures: dict[str, Any]) -> dict[str, float]:
    """The measured value of each target that the figures hold."""
    values: dict[str, float] = {}
    train = figures.get("train_throughput") or {}
    rows = {r["path"]: r for r in train.get("rows", [])}
    fast = next((r for p, r in rows.items() if p.startswith("fast") and r.get("steps_per_s")), None)
    if fast:
        values["fast_steps_per_s"] = fast["steps_per_s"]
        if fast.get("ratio") is not None:
            values["fast_vs_baseline"] = fast["ratio"]
        if fast.get("mem"):
            values["resident_gib"] = fast["mem"] / 2**30
    k32 = rows.get("batched K=32 (fast)")
    if k32 and k32.get("model_steps_per_s"):
        values["k32_model_steps_per_s"] = k32["model_steps_per_s"]
    metrics = figures.get("metrics_speed") or {}
    total = _metrics_total(metrics, "cuda")
    if total is not None:
        values["metrics_fast_s"] = total
    return values


def _metrics_total(metrics: dict[str, Any], device: str) -> float | None:
    """Wall seconds of the metric suite in fast mode on ``device`` for the first representation
    timed (metrics_speed's JSON: timing -> representation -> fast -> device -> total)."""
    timing = metrics.get("timing") if isinstance(metrics, dict) else None
    for entry in (timing or {}).values():
        total = ((entry or {}).get("fast") or {}).get(device, {}).get("total")
        if isinstance(total, (int, float)):
            return float(total)
    return None


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"GPU check of {env['date']} on {env['device']} (torch {env['torch']}, CUDA "
        f"{env['cuda']}){' - DRY RUN on a CPU, not GPU figures' if report['dry_run'] else ''}; "
        f"`python benchmarks/gpu_check.py OUT`.",
        "",
        "| target | threshold | measured | status |",
        "|---|---|---|---|",
    ]
    values = report["targets"]
    for key, (what, unit, threshold, better) in TARGETS.items():
        sign = ">=" if better == "higher" else "<="
        if key in values and not report["dry_run"]:
            v = values[key]
            ok = v >= threshold if better == "higher" else v <= threshold
            status = f"{'met' if ok else 'missed'} ({env['date']}, {env['device']})"
            lines.append(f"| {what} | {sign} {threshold:g} {unit} | {v:,.2f} {unit} | {status} |")
        else:
            lines.append(f"| {what} | {sign} {threshold:g} {unit} | | not yet measured |")
    lines += ["", "| part | status | seconds | notes |", "|---|---|---|---|"]
    for name, res in report["parts"].items():
        note = res.get("reason") or res.get("note") or ""
        if name == "pytest_gpu" and report["figures"].get("pytest_gpu"):
            c = report["figures"]["pytest_gpu"]
            note = (f"{c['passed']} passed, {c['failures'] + c['errors']} failed, "
                    f"{c['skipped']} skipped")  # fmt: skip
        if res.get("status") == "timeout":
            note = f"stopped at its {res['limit_s']:.0f} s limit"
        lines.append(f"| {name} | {res['status']} | {res.get('seconds', '')} | {note} |")
    failed = (report["figures"].get("pytest_gpu") or {}).get("failed") or []
    if failed:
        lines += ["", "Failed GPU tests: " + ", ".join(f"`{t}`" for t in failed) + "."]
    amp = (report["figures"].get("train_throughput") or {}).get("amp_compare") or []
    if amp:
        lines += ["", "| autocast | steps/s | final loss | MIG |", "|---|---|---|---|"]
        for r in amp:
            lines.append(
                f"| {r['amp']} | {r['steps_per_s']:.1f} | {r['final_loss']:.2f} | {r['mig']:.3f} |"
            )
    search = report["figures"].get("search_speed") or {}
    if search.get("batched"):
        b, s = search["batched"], search.get("sequential", {})
        mem = [m for m in b.get("rung_memory_bytes", []) if m is not None]
        lines += [
            "",
            f"Search, {search.get('trials')} trials x {search.get('steps')} steps: batched "
            f"{b.get('wall_s')} s, sequential {s.get('wall_s')} s (ratio "
            f"{search.get('ratio_sequential_over_batched')}); device memory after each rung "
            f"(MiB): {', '.join(f'{m / 2**20:.0f}' for m in mem) or 'n/a'}.",
        ]
    families = (report["figures"].get("family_speed") or {}).get("configs") or {}
    families = {
        **families,
        **((report["figures"].get("localvae_speed") or {}).get("configs") or {}),
        **((report["figures"].get("drmm_speed") or {}).get("configs") or {}),
    }
    if families:
        lines += ["", "| family step (batch 64) | steps/s | step time vs s2vae |", "|---|---|---|"]
        for name, f in families.items():
            lines.append(f"| {name} | {f['steps_per_s']:.1f} | {f['step_time_vs_s2vae']:.2f}x |")
    return "\n".join(lines) + "\n"


def update_docs(path: Path, md: str) -> None:
    text = path.read_text()
    if DOCS_BEGIN not in text or DOCS_END not in text:
        raise SystemExit(f"{path} has no {DOCS_BEGIN} ... {DOCS_END} block to fill")
    head, rest = text.split(DOCS_BEGIN, 1)
    _, tail = rest.split(DOCS_END, 1)
    path.write_text(f"{head}{DOCS_BEGIN}\n{md}{DOCS_END}{tail}")


def child_env(block: str, wheels: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT / "src")]
    if block:
        paths.insert(0, str(BLOCKER))
        env["SEMIDISENT_BLOCK_IMPORTS"] = block
    if wheels is not None:
        site = Path(tempfile.mkdtemp(prefix="gpu-check-site-"))
        subprocess.run(
            _python("-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--target", str(site), *map(str, sorted(wheels.glob("*.whl")))),
            check=True,
        )  # fmt: skip
        paths.append(str(site))
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for gpu_check.json / .md / .log")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    ap.add_argument("--block-imports", default="", help="e.g. mlflow,kfp,dvc (as the GPU image)")
    ap.add_argument("--wheels", type=Path, default=None, help="carried wheels (e.g. optuna)")
    ap.add_argument("--parts", nargs="+", default=[p.name for p in PARTS])
    ap.add_argument("--update-docs", type=Path, default=None, help="docs/performance.md")
    args = ap.parse_args(argv)
    unknown = set(args.parts) - {p.name for p in PARTS}
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}; choose among {[p.name for p in PARTS]}")
    args.out.mkdir(parents=True, exist_ok=True)
    env = child_env(args.block_imports, args.wheels)
    t0 = time.perf_counter()
    report: dict[str, Any] = {"dry_run": args.dry_run, "environment": environment(env)}
    print(f"gpu_check on {report['environment']['device']}{' (dry run)' if args.dry_run else ''}")
    with (
        tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp,
        open(args.out / "gpu_check.log", "w") as log,
    ):
        work = Path(tmp)
        for part in PARTS:
            if part.name not in args.parts:
                continue
            run_part(part, work, args.dry_run, env, log)
            print(f"  {part.name:18s} {part.result['status']:8s} "
                  f"{part.result.get('seconds', '')} {part.result.get('reason', '')}")  # fmt: skip
        report["figures"] = collect(work)
    report["parts"] = {p.name: p.result for p in PARTS if p.result}
    report["targets"] = target_values(report["figures"])
    report["seconds"] = round(time.perf_counter() - t0, 1)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    md = markdown(report)
    (args.out / "gpu_check.md").write_text(md)
    print(md)
    print(f"gpu_check: {report['seconds']} s; files in {args.out}")
    if args.update_docs is not None and not args.dry_run:
        update_docs(args.update_docs, md)
    failed = [n for n, r in report["parts"].items() if r["status"] in ("failed", "timeout")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
