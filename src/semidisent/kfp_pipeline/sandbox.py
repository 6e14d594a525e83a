"""``run-local --cluster-like``: kfp.local, with each step isolated the way a pod is.

kfp.local runs every step as a subprocess of the caller: in the caller's working directory,
with the caller's environment (its ``MLFLOW_TRACKING_URI``, credentials, ...), and it ignores
the Kubernetes platform spec. Everything a cluster would break is therefore invisible to it: a
sqlite tracking store or Optuna study shared through the working directory, a secret wired to
the wrong step, a setting that only exists in the developer's shell.

Here each step runs instead as its pod would (what the compiled IR says, read from it):

- in a new empty working directory, with a new empty ``HOME`` and ``TMPDIR``;
- with an environment built from nothing: the image's (the ``ENV`` lines of
  components/Dockerfile, ``GIT_COMMIT`` = this checkout's commit), the container's (the IR's
  ``env``), the secrets and ConfigMaps the platform spec maps into that step, taken from a file
  of Kubernetes ``Secret`` / ``ConfigMap`` manifests (what ``kubectl apply -f`` would create;
  a missing optional one leaves its variables unset, a missing required one fails the step as
  Kubernetes would), and ``KUBERNETES_SERVICE_HOST``. Of the caller's environment only
  ``PATH`` (this interpreter first), locale and thread-count variables pass.

Not reproduced: the image itself (steps run on this interpreter, see the image-equivalent
environment of the tests), GPUs, the PVC (paths are local), resource limits, retries.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import SemidisentError
from .cluster import IN_CLUSTER_ENV

# Variables of the caller a pod would have an equivalent of (its locale, its CPU budget).
PASSTHROUGH = ("LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
FUNCTION_FLAG = "--function_to_execute"


@dataclass
class Namespace:
    """The Secrets and ConfigMaps of a namespace: name -> key -> value."""

    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    configmaps: dict[str, dict[str, str]] = field(default_factory=dict)


def read_manifests(path: str | Path | None) -> Namespace:
    """Kubernetes Secret (``stringData`` or base64 ``data``) and ConfigMap (``data``) manifests,
    several per file (``---``); other kinds are ignored."""
    ns = Namespace()
    if path is None:
        return ns
    try:
        docs = list(yaml.safe_load_all(Path(path).read_text()))
    except (OSError, yaml.YAMLError) as e:
        raise SemidisentError(f"--cluster-like {path}: cannot read the manifests ({e})") from None
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        name = str((doc.get("metadata") or {}).get("name") or "")
        if doc.get("kind") == "Secret" and name:
            values = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
            values.update({k: str(v) for k, v in (doc.get("stringData") or {}).items()})
            ns.secrets[name] = values
        elif doc.get("kind") == "ConfigMap" and name:
            ns.configmaps[name] = {k: str(v) for k, v in (doc.get("data") or {}).items()}
    return ns


def _name(entry: Mapping[str, Any], deprecated: str, parameter: str) -> str:
    """A source's name: the constant of its name parameter, else the deprecated plain field."""
    constant = ((entry.get(parameter) or {}).get("runtimeValue") or {}).get("constant")
    return str(constant or entry.get(deprecated) or "")


def platform_env(config: Mapping[str, Any], ns: Namespace) -> dict[str, str]:
    """The variables one executor's Kubernetes config sets from the namespace's sources; a
    missing required source raises (Kubernetes: CreateContainerConfigError)."""
    env: dict[str, str] = {}
    sources = [
        ("secret", e, ns.secrets, _name(e, "secretName", "secretNameParameter"), "secretKey")
        for e in config.get("secretAsEnv") or []
    ] + [
        (
            "configmap",
            e,
            ns.configmaps,
            _name(e, "configMapName", "configMapNameParameter"),
            "configMapKey",
        )
        for e in config.get("configMapAsEnv") or []
    ]
    for kind, entry, store, name, key_field in sources:
        values = store.get(name)
        optional = bool(entry.get("optional"))
        for pair in entry.get("keyToEnv") or []:
            key = pair[key_field]
            if values is not None and key in values:
                env[pair["envVar"]] = values[key]
            elif not optional:
                what = f"{kind} {name!r}"
                missing = what if values is None else f"key {key!r} of {what}"
                raise SemidisentError(f"{missing} not found (CreateContainerConfigError)")
    return env


def executor_label(full_command: list[str]) -> str:
    """``exec-<component>`` of a lightweight component's command (its function's name)."""
    for flag, value in itertools.pairwise(full_command):
        if flag == FUNCTION_FLAG:
            return "exec-" + value.replace("_", "-")
    return ""


@dataclass
class Sandbox:
    """Runs kfp.local's steps as pods (see the module docstring)."""

    root: Path  # one directory per step execution below it
    executors: dict[str, dict[str, Any]]  # the platform spec's per-executor configs
    namespace: Namespace
    image_env: dict[str, str]
    counter: itertools.count = field(default_factory=itertools.count)

    def environment(self, label: str, container_env: Mapping[str, str], home: Path) -> dict:
        base = {k: os.environ[k] for k in PASSTHROUGH if k in os.environ}
        base["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
        pod = {
            IN_CLUSTER_ENV: "10.96.0.1",
            "KUBERNETES_SERVICE_PORT": "443",
            "HOME": str(home / "home"),
            "TMPDIR": str(home / "tmp"),
        }
        secrets = platform_env(self.executors.get(label, {}), self.namespace)
        return {**base, **self.image_env, **dict(container_env), **secrets, **pod}

    def run(self, full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        """Drop-in for ``kfp.local.subprocess_task_handler.run_local_subprocess``."""
        label = executor_label(full_command)
        box = self.root / f"{next(self.counter):02d}-{label or 'task'}"
        for sub in ("work", "home", "tmp"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        try:
            env = self.environment(label, env_vars or {}, box)
        except SemidisentError as e:
            print(f"{label}: {e}", flush=True)
            return 1
        with subprocess.Popen(
            full_command,
            cwd=box / "work",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        ) as process:
            assert process.stdout is not None
            for line in iter(process.stdout.readline, ""):
                print(line, end="")
            print("\n")
            return process.wait()


@contextlib.contextmanager
def cluster_like(
    package: Path, manifests: str | Path | None, root: Path, dockerfile: Path, commit: str
) -> Iterator[Sandbox]:
    """kfp.local's subprocess runner replaced by a :class:`Sandbox` for the block."""
    from kfp.local import subprocess_task_handler

    from .dockerfile import image_env

    docs = list(yaml.safe_load_all(package.read_text()))
    platform = docs[1] if len(docs) > 1 else {}
    executors = (
        ((platform.get("platforms") or {}).get("kubernetes") or {}).get("deploymentSpec") or {}
    ).get("executors") or {}
    sandbox = Sandbox(
        root=root,
        executors=executors,
        namespace=read_manifests(manifests),
        image_env=image_env(dockerfile, {"GIT_COMMIT": commit}),
    )
    original = subprocess_task_handler.run_local_subprocess
    subprocess_task_handler.run_local_subprocess = sandbox.run
    try:
        yield sandbox
    finally:
        subprocess_task_handler.run_local_subprocess = original
