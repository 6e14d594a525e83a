"""Read ``components/Dockerfile`` without Docker: its instructions, build args and environment.

Used where the image's behaviour is reproduced on this machine: the cluster-like local run
gives each step the image's environment (``ENV``), and the tests build an image-equivalent
virtual environment by running its ``RUN pip ...`` lines.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DOCKERFILE = "components/Dockerfile"


@dataclass(frozen=True)
class Instruction:
    command: str  # upper case: FROM, RUN, COPY, ENV, ARG, ...
    args: str  # the rest, continuation lines joined


def instructions(text: str) -> list[Instruction]:
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        command, _, args = full.partition(" ")
        out.append(Instruction(command.upper(), args.strip()))
    return out


def substitute(text: str, values: Mapping[str, str]) -> str:
    """``${NAME}`` / ``$NAME`` as Docker expands them in ENV, WORKDIR, COPY (unknown: "")."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), ""), text)


def pairs(args: str) -> dict[str, str]:
    """``KEY=VALUE KEY2="V 2"`` (or the legacy ``KEY VALUE``) of ENV / ARG."""
    words = shlex.split(args)
    if len(words) >= 2 and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return {k: v for k, _, v in (w.partition("=") for w in words)}


def build_args(steps: list[Instruction], given: Mapping[str, str] | None = None) -> dict[str, str]:
    """ARG defaults, overridden by ``given`` (``--build-arg``)."""
    values: dict[str, str] = {}
    for step in steps:
        if step.command == "ARG":
            values.update(pairs(step.args))
    values.update(given or {})
    return values


def image_env(path: str | Path, given: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the image's processes start with (its ENV lines, build args applied)."""
    steps = instructions(Path(path).read_text())
    args = build_args(steps, given)
    env: dict[str, str] = {}
    for step in steps:
        if step.command == "ENV":
            for key, value in pairs(step.args).items():
                env[key] = substitute(value, {**args, **env})
    return env
