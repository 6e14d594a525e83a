"""An image-equivalent environment without Docker: components/Dockerfile's own commands, run in
a fresh virtual environment.

There is no Docker engine on the development machine, so the image cannot be built; what can be
reproduced is what its Python sees. The Dockerfile is read (kfp_pipeline.dockerfile) and
executed as Docker would, in order: ``ARG`` / ``ENV`` become the commands' environment, ``COPY``
copies from the repository (the build context) into a build directory (the ``WORKDIR``), and
every ``RUN`` runs there with the virtual environment's ``bin`` first on ``PATH`` (so ``pip``,
``python`` and ``semidisent`` are the image's). The system set-up ``RUN`` lines (apt-get,
useradd) are skipped: they concern the OS, not Python.

Layer cache, as Docker's: the layers before the code (``COPY src/``) install torch and every
pinned dependency (about three minutes, 1.9 GB with the CPU torch of this machine); the
environment after them is kept in a cache directory keyed by their inputs (those instructions,
the files they copy, the Python version) and reused while those are unchanged. The code layers
run every time. The cache directory is locked while a session uses it (the code layer rewrites
the installed package).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from semidisent.kfp_pipeline.dockerfile import (
    Instruction,
    build_args,
    instructions,
    pairs,
    substitute,
)

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "components" / "Dockerfile"
CACHE_ENV = "SEMIDISENT_IMAGE_VENV_CACHE"
SYSTEM_COMMANDS = ("apt-get", "useradd", "groupadd", "chown", "chmod")
CODE_MARKER = "src/"  # the first COPY of the code ends the cached layers


@dataclass
class ImageEnv:
    venv: Path
    env: dict[str, str]  # what a process in the image starts with (ENV + PATH)
    workdir: Path
    log: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
        """``python ARGS`` in the image's environment (plus ``env``); its stdout."""
        proc = subprocess.run(
            [str(self.python), *args],
            cwd=self.workdir,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)[:200]} failed in the image environment:\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            )
        return proc.stdout


def _copy(step: Instruction, workdir: Path, values: dict[str, str]) -> None:
    """``COPY SRC... DEST`` from the repository (the build context) into ``workdir``."""
    *sources, dest = substitute(step.args, values).split()
    target = workdir / dest.lstrip("/")
    for src in sources:
        path = ROOT / src
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(path, target, dirs_exist_ok=True, ignore=ignore)
        else:
            to = target / path.name if dest.endswith("/") or dest in (".", "./") else target
            to.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, to)


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _split(steps: list[Instruction]) -> tuple[list[Instruction], list[Instruction]]:
    """(the dependency layers, the code layers): split after the last RUN before the code is
    copied (what comes after it, README included, is rebuilt every time, as in Docker)."""
    code = next(
        (i for i, s in enumerate(steps) if s.command == "COPY" and CODE_MARKER in s.args.split()),
        None,
    )
    if code is None:
        raise AssertionError(f"{DOCKERFILE} copies no {CODE_MARKER}")
    last_run = max(i for i, s in enumerate(steps[:code]) if s.command == "RUN")
    return steps[: last_run + 1], steps[last_run + 1 :]


def _execute(
    steps: list[Instruction],
    venv: Path,
    workdir: Path,
    state: dict[str, str],
    out: list[str],
    *,
    run: bool = True,
) -> None:
    """Run ``steps`` (ARG / ENV / COPY / RUN; FROM, USER, WORKDIR, CMD have no equivalent in a
    venv) with ``state`` (ARG + ENV values so far, updated); ``run`` false: all but RUN (the
    cached layers replayed)."""
    for step in steps:
        if step.command == "ARG":
            for key, value in build_args([step]).items():
                state.setdefault(key, value)
        elif step.command == "ENV":
            for key, value in pairs(step.args).items():
                state[key] = substitute(value, state)
        elif step.command == "COPY":
            _copy(step, workdir, state)
        elif step.command == "RUN" and run:
            if step.args.split()[0] in SYSTEM_COMMANDS:
                continue
            env = {
                **{k: v for k, v in os.environ.items() if k.startswith(("PIP_", "LANG", "LC_"))},
                "HOME": os.environ.get("HOME", "/root"),
                **state,
                "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
                "VIRTUAL_ENV": str(venv),
            }
            proc = subprocess.run(
                ["bash", "-c", f"set -e; {step.args}"],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
            )
            out.append(f"$ {step.args}\n{proc.stdout}{proc.stderr}")
            if proc.returncode != 0:
                raise AssertionError(
                    f"Dockerfile RUN failed ({proc.returncode}): {step.args}\n"
                    f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
                )


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get(CACHE_ENV) or default / "semidisent" / "image-venv")


@contextlib.contextmanager
def image_env(workdir: Path, build_args_given: dict[str, str]) -> Iterator[ImageEnv]:
    """The image-equivalent environment for one test session (see the module docstring)."""
    steps = instructions(DOCKERFILE.read_text())
    deps, code = _split(steps)
    copied = [ROOT / a for s in deps if s.command == "COPY" for a in s.args.split()[:-1]]
    key = hashlib.sha256(
        "\n".join(f"{s.command} {s.args}" for s in deps).encode()
        + _digest(copied).encode()
        + sys.version.encode()
    ).hexdigest()[:16]
    cache = cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    lock = (cache / "lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        layer = cache / key
        venv = layer / "venv"
        state = dict(build_args_given)
        log: list[str] = []
        timings: dict[str, float] = {}
        if not (layer / "complete").exists():
            for stale in cache.iterdir():  # one cached environment at a time (2 GB each)
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
            t0 = time.perf_counter()
            layer.mkdir(parents=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            _execute(deps, venv, workdir, state, log)
            (layer / "complete").write_text(key)
            timings["dependency layers"] = time.perf_counter() - t0
        else:
            # The cached layers' ARG / ENV / COPY, without running their commands again.
            _execute(deps, venv, workdir, state, log, run=False)
            timings["dependency layers"] = 0.0
        t0 = time.perf_counter()
        _execute(code, venv, workdir, state, log)
        timings["code layers"] = time.perf_counter() - t0
        runtime_env = {k: v for k, v in state.items() if k not in build_args(steps)}
        env = {
            **runtime_env,
            "HOME": str(workdir / "home"),
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        }
        (workdir / "home").mkdir(exist_ok=True)
        yield ImageEnv(venv=venv, env=env, workdir=workdir, log=log, timings=timings)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
