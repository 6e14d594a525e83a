"""Read params.yaml, apply ``-S key=value`` overrides (DVC's dotted form), validate."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import ParamsError
from .schema import METHOD_SECTIONS, SECTIONS, Params
from .validation import build


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.beta=8`` -> (["train", "beta"], 8); the value is read as YAML, as DVC does."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ParamsError(
            f"invalid override {text!r}: expected section.key=value, e.g. train.beta=8"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ParamsError(f"invalid override {text!r}: the value is not valid YAML ({e})") from None
    return key.split("."), value


def _space_path(raw: Mapping[str, Any], path: list[str]) -> list[str]:
    """``search.space.s2_factor_vae.gamma[.low]`` addresses the space key ``s2_factor_vae.gamma``
    (a dotted key, as params.yaml writes it), not a new nested ``s2_factor_vae`` entry (which
    would take precedence over the dotted one: search.space.flatten_space); the same for
    ``model.name``. Unless the file itself writes that key nested (``dvc exp run -S`` does):
    the override then goes there. Bare train keys (``search.space.beta.low``) are unchanged."""
    sectioned = path[2] == "model" or path[2] in METHOD_SECTIONS if len(path) > 3 else False
    if not (sectioned and path[:2] == ["search", "space"]):
        return path
    search = raw.get("search")
    space = search.get("space") if isinstance(search, dict) else None
    nested = space.get(path[2]) if isinstance(space, dict) else None
    if isinstance(nested, dict) and path[3] in nested:
        return path
    return [*path[:2], f"{path[2]}.{path[3]}", *path[4:]]


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    out = copy.deepcopy(dict(raw))
    for text in overrides:
        path, value = parse_override(text)
        path = _space_path(out, path)
        if path[0] not in SECTIONS:
            raise ParamsError(
                f"unknown parameter {'.'.join(path)}: sections are {', '.join(SECTIONS)}"
            )
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ParamsError(f"invalid override {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return out


def params_from_dict(raw: Mapping[str, Any] | None) -> Params:
    raw = dict(raw or {})
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        raise ParamsError(
            f"unknown section {unknown[0]!r} in params; sections are {', '.join(SECTIONS)}"
        )
    return build(Params, raw, "")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open() as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ParamsError(f"parameter file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"parameter file {path} is not valid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ParamsError(f"parameter file {path} must hold a mapping of sections")
    return raw


def load_params(path: str | Path | None = "params.yaml", overrides: Iterable[str] = ()) -> Params:
    """Load and validate; raises ParamsError naming the key, the bad value and what is allowed."""
    raw = read_yaml(path) if path is not None else {}
    return params_from_dict(apply_overrides(raw, overrides))
