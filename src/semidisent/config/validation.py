"""Build frozen dataclasses from YAML mappings, with one clear error per bad value.

Each field may carry a check in its metadata (``field(metadata=check(...))``); a check returns
``None`` when the value is allowed, else a phrase saying what is allowed. Types come from the
dataclass annotations, so the schema is written once, as plain typed dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from ..errors import ParamsError

T = TypeVar("T")
Check = Callable[[Any], "str | None"]


def check(fn: Check) -> dict[str, Check]:
    """Field metadata carrying a value check (use as ``field(default=..., metadata=check(fn))``)."""
    return {"check": fn}


def between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
    text = f"a number in {lb}{_fmt(lo)}, {_fmt(hi)}{rb}"

    def _check(v: Any) -> str | None:
        if v is None:
            return None
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        return None if ok else text

    return _check


def positive(v: Any) -> str | None:
    return None if v is None or v > 0 else "a number > 0"


def non_negative(v: Any) -> str | None:
    return None if v is None or v >= 0 else "a number >= 0"


def all_of(*checks: Check) -> Check:
    def _check(v: Any) -> str | None:
        for c in checks:
            msg = c(v)
            if msg:
                return msg
        return None

    return _check


def each(item_check: Check) -> Check:
    """Apply a check to every element of a list value."""

    def _check(v: Any) -> str | None:
        if v is None:
            return None
        for item in v:
            msg = item_check(item)
            if msg:
                return f"a list of which every element is {msg}"
        return None

    return _check


def non_empty(v: Any) -> str | None:
    return None if v is None or len(v) > 0 else "a non-empty list"


def _fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return repr(x) if isinstance(x, str) else str(x)


def bad_value(key: str, value: Any, allowed: str) -> ParamsError:
    """The one error format for parameters: key, the bad value, what is allowed."""
    return ParamsError(f"invalid parameter {key} = {value!r}: expected {allowed}")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        parts = [a for a in get_args(tp) if a is not type(None)]
        inner = " or ".join(_type_name(a) for a in parts)
        return f"{inner} or null" if len(parts) < len(get_args(tp)) else inner
    if origin in (dict, Mapping):
        return "a mapping"
    if origin in (list, tuple):
        args = get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


_BOOL_WORDS = {True: ("on", "yes", "true"), False: ("off", "no", "false")}


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type, or raise a ParamsError naming ``key``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key)
            except ParamsError as e:
                errors.append(e)
        raise bad_value(key, value, _type_name(tp))
    if origin is Literal:
        if isinstance(value, bool):
            # YAML 1.1 (PyYAML) reads on / off / yes / no as booleans: `train.fast: off` and
            # `-S train.amp=off` mean the word the choice names.
            words = [w for w in _BOOL_WORDS[value] if w in get_args(tp)]
            if words:
                return words[0]
        elif value in get_args(tp):
            return value
        raise bad_value(key, value, _type_name(tp))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise bad_value(key, value, "a mapping")
        k_tp, v_tp = get_args(tp) or (str, Any)
        return {coerce(k, k_tp, key): coerce(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise bad_value(key, value, _type_name(tp))
        (item_tp, *_rest) = get_args(tp) or (Any,)
        items = [coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad_value(key, value, "true or false")
    if tp is int:
        if isinstance(value, bool):
            raise bad_value(key, value, "an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad_value(key, value, "an integer")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML 1.1 reads "1e-4" (no dot) as a string: accept numeric strings.
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise bad_value(key, value, "a number") from None
            else:
                raise bad_value(key, value, "a number")
        if not math.isfinite(float(value)):
            raise bad_value(key, value, "a finite number")
        return float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad_value(key, value, "a string")
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def build(cls: type[T], data: Any, prefix: str) -> T:
    """Instantiate dataclass ``cls`` from a mapping; unknown keys and bad values are errors."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise bad_value(
            prefix, data, "a mapping of " + ", ".join(f.name for f in dataclasses.fields(cls))
        )
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    for k in data:
        if k not in known:
            close = difflib.get_close_matches(str(k), known, n=1)
            hint = f" (did you mean {_join(prefix, close[0])}?)" if close else ""
            where = f" in {prefix}" if prefix else ""
            raise ParamsError(
                f"unknown parameter {_join(prefix, k)}{hint}; "
                f"allowed keys{where}: {', '.join(known)}"
            )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = _join(prefix, f.name)
        if f.name in data:
            kwargs[f.name] = coerce(data[f.name], hints[f.name], key)
            value = kwargs[f.name]
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            raise ParamsError(f"missing parameter {key}: expected {_type_name(hints[f.name])}")
        fn = f.metadata.get("check")
        if fn is not None:
            msg = fn(value)
            if msg:
                raise bad_value(key, value, msg)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(prefix)
    return obj


def _join(prefix: str, name: object) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def to_plain(obj: Any) -> Any:
    """Dataclass -> plain dicts/lists (YAML/JSON-ready), tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj
