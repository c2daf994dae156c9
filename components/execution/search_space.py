"""Search spaces for Ray Tune, read from the methods' typed configs (docs/design.md §7).

A config field declares its range once, as ``field(default=…, metadata={"search": …})``: ``("float", lo, hi)``,
``("log", lo, hi)``, ``("int", lo, hi)`` (inclusive) or ``("choice",)`` (every value of the field's ``Literal``
type, which itself derives from a registry where one exists, or ``("choice", [values])``).
``--space sragu.tau=0.5:3`` narrows or adds a range for one run and is validated against the field's type
before Ray starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, get_type_hints

from sragu_core.config import choices, parse_value
from sragu_core.errors import ConfigError, check
from sragu_core.methods import METHODS

__all__ = ["SearchDim", "search_space", "parse_space_override"]


@dataclass(frozen=True)
class SearchDim:
    """One searched field: ``kind`` in float | log | int | choice."""

    kind: str
    low: float | None = None
    high: float | None = None
    values: tuple = ()

    def to_tune(self):
        from ray import tune

        if self.kind == "float":
            return tune.uniform(self.low, self.high)
        if self.kind == "log":
            return tune.loguniform(self.low, self.high)
        if self.kind == "int":
            return tune.randint(int(self.low), int(self.high) + 1)
        return tune.choice(list(self.values))


def _dim(key: str, spec: tuple, tp: Any) -> SearchDim:
    kind = spec[0]
    if kind == "choice":
        values = tuple(spec[1]) if len(spec) > 1 else choices(tp)
        check(bool(values), key, spec, "a non-empty list of choices")
        return SearchDim("choice", values=tuple(parse_value(key, v, tp) for v in values))
    check(kind in ("float", "log", "int") and len(spec) == 3, key, spec, "(float|log|int, low, high) or (choice, ...)")
    number = int if kind == "int" else float
    low, high = parse_value(key, spec[1], number), parse_value(key, spec[2], number)
    raw = f"{spec[1]}:{spec[2]}"  # as the user wrote it
    check(low < high, key, raw, "a non-empty range low < high")
    check(kind != "log" or low > 0, key, raw, "a log range with low > 0")
    return SearchDim(kind, low, high)


def parse_space_override(key: str, text: str) -> tuple[str, str, tuple]:
    """``("sragu.tau", "0.5:3")`` → (method, field, spec).  Forms: ``lo:hi``, ``log:lo:hi``, ``int:lo:hi``,
    ``a,b,c`` (choices).  Unknown methods or fields and malformed ranges are ConfigErrors."""
    method, _, name = key.partition(".")
    check(method in METHODS, "--space", key, f"<method>.<field> with method one of {METHODS.names()}")
    cls = METHODS[method].config
    hints = get_type_hints(cls)
    check(name in hints, "--space", key, f"a field of {cls.__name__}: {sorted(hints)}")
    parts = text.split(":")
    if len(parts) == 2:
        spec = ("int" if hints[name] is int else "float", parts[0], parts[1])
    elif len(parts) == 3 and parts[0] in ("log", "int", "float"):
        spec = (parts[0], parts[1], parts[2])
    elif len(parts) == 1 and "," in text or choices(hints[name]) or hints[name] is bool:
        spec = ("choice", [v for v in text.split(",") if v])
    else:
        raise ConfigError(f"--space {key}", text, "lo:hi, log:lo:hi, int:lo:hi or a,b,c")
    try:
        _dim(key, spec, hints[name])  # validate now, before Ray starts
    except ConfigError as e:  # name the flag the user typed, with the range as typed
        raise ConfigError(f"--space {key}", text, e.allowed) from None
    return method, name, spec


def search_space(method: str, overrides: dict[str, tuple] | None = None) -> dict[str, SearchDim]:
    """The method's searched fields, from ``metadata["search"]`` of its config, plus ``overrides``."""
    cls = METHODS[method].config
    hints = get_type_hints(cls)
    specs = {f.name: f.metadata["search"] for f in dataclasses.fields(cls) if "search" in f.metadata}
    specs.update(overrides or {})
    return {name: _dim(f"{method}.{name}", spec, hints[name]) for name, spec in specs.items()}
