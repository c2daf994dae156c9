"""Typed, frozen configuration: dataclasses, validated on construction, overridden by dotted keys.

Every config in the project is a ``@dataclass(frozen=True)``; its ``__post_init__`` checks values with
:func:`sragu_core.errors.check`.  ``override(cfg, {"sragu.tau": "2.0"})`` walks nested dataclasses,
converts the string to the field's declared type, and rebuilds the frozen objects, so an unknown key,
a wrong type or an out-of-range value is a :class:`ConfigError` before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints

from .errors import ConfigError

__all__ = ["override", "parse_value", "to_dict", "flatten", "from_dict", "choices"]


def choices(field_type: Any) -> tuple | None:
    """The allowed values of a ``Literal[...]`` field type, else None."""
    return get_args(field_type) if get_origin(field_type) is Literal else None


def parse_value(key: str, raw: Any, tp: Any) -> Any:
    """Convert ``raw`` (usually a command-line string) to type ``tp`` or raise ConfigError."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        for a in args:
            if raw == a or (isinstance(raw, str) and str(a) == raw):
                return a
        raise ConfigError(key, raw, f"one of {list(args)}")
    if origin in (typing.Union, types.UnionType):
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return parse_value(key, raw, a)
            except ConfigError as e:
                errors.append(e.allowed)
        raise ConfigError(key, raw, " or ".join(errors) or "None")
    if origin is tuple:
        items = raw
        if isinstance(raw, str):
            text = raw.strip()
            if text.startswith("[") or text.endswith("]"):
                if not (text.startswith("[") and text.endswith("]")):
                    raise ConfigError(key, raw, "a list such as [a,b] or a,b")
                try:
                    items = json.loads(text)
                except json.JSONDecodeError:  # unquoted words: [mlp,cnn_small]
                    items = text[1:-1].split(",")
                    if any(not s.strip() for s in items) and text[1:-1].strip():
                        raise ConfigError(key, raw, "a list such as [a,b] or a,b") from None
                    items = [s for s in items if s.strip()]
            else:
                items = [s for s in text.split(",") if s.strip()]
        if not isinstance(items, (list, tuple)):
            raise ConfigError(key, raw, "a list such as [a,b] or a,b")
        item_tp = args[0] if args else str
        return tuple(parse_value(key, x.strip() if isinstance(x, str) else x, item_tp) for x in items)
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "1", "yes", "false", "0", "no"):
            return raw.lower() in ("true", "1", "yes")
        raise ConfigError(key, raw, "true or false")
    if tp is int:
        if isinstance(raw, bool):
            raise ConfigError(key, raw, "an integer")
        try:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(raw) if not isinstance(raw, str) else int(raw.strip())
        except (TypeError, ValueError):
            raise ConfigError(key, raw, "an integer") from None
    if tp is float:
        if isinstance(raw, bool):
            raise ConfigError(key, raw, "a number")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(key, raw, "a number") from None
        if not math.isfinite(value):  # inf and nan pass every range check written as a comparison
            raise ConfigError(key, raw, "a finite number")
        return value
    if tp is str:
        if not isinstance(raw, str):
            raise ConfigError(key, raw, "a string")
        return raw
    if dataclasses.is_dataclass(tp):
        if isinstance(raw, tp):
            return raw
        if isinstance(raw, dict):
            return from_dict(tp, raw, prefix=key)
        raise ConfigError(key, raw, f"a mapping of {tp.__name__} fields")
    return raw


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (possibly nested) dict, validating every key and type."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        path = f"{prefix}.{k}" if prefix else k
        if k not in names:
            raise ConfigError(path, v, f"a key of {cls.__name__}: {sorted(names)}")
        kwargs[k] = parse_value(path, v, hints[k])
    return cls(**kwargs)


def override(cfg: Any, updates: dict[str, Any], prefix: str = "") -> Any:
    """Return a copy of frozen dataclass ``cfg`` with dotted-key ``updates`` applied and re-validated."""
    if not updates:
        return cfg
    hints = get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    direct, nested = {}, {}
    for key, value in updates.items():
        head, _, rest = key.partition(".")
        path = f"{prefix}.{head}" if prefix else head
        if head not in names:
            raise ConfigError(f"{prefix}.{key}" if prefix else key, value,
                              f"a key of {type(cfg).__name__}: {sorted(names)}")
        if rest:
            current = getattr(cfg, head)
            if not dataclasses.is_dataclass(current):
                raise ConfigError(f"{path}.{rest}", value, f"no sub-keys: {path} is a {type(current).__name__}")
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = parse_value(path, value, hints[head])
    for head, sub in nested.items():
        direct[head] = override(getattr(cfg, head), sub, prefix=f"{prefix}.{head}" if prefix else head)
    try:
        return dataclasses.replace(cfg, **direct)
    except ConfigError as e:  # name the field as the user wrote it: sragu.tau, not tau
        if prefix and not e.field.startswith(prefix.split(".")[0] + "."):
            raise ConfigError(f"{prefix}.{e.field}", e.value, e.allowed) from None
        raise


def to_dict(cfg: Any) -> dict:
    """Nested plain-dict view (tuples become lists) for JSON, hashing and logging."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (for MLflow params and tables)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out
