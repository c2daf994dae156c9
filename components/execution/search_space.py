"""Search spaces for Ray Tune, read from the methods' typed configs (docs/tuning.md).

A config field declares its range once, as ``field(default=…, metadata={"search": …})``: ``("float", lo, hi)``,
``("log", lo, hi)``, ``("int", lo, hi)`` (inclusive), ``("choice",)`` (every value of the field's ``Literal``
type, which itself derives from a registry where one exists, or ``("choice", [values])``) or
``("vector", lo, hi, length)`` for a ``tuple[float, ...]`` field: ``length`` independent uniform entries in
[lo, hi], searched as the flat Tune keys ``<field>.0`` … ``<field>.<length-1>`` and put back together into
one tuple when a trial's config is built (:func:`assemble`).

Two protocols choose the fields (``tune.protocol``):

* ``shared``: only the knobs every method has in common, marked ``metadata["shared"]`` by
  ``sragu_core.methods._shared`` (a step size and an epoch budget), each with the one range its role has
  in every method — so every method searches the same space;
* ``ablation``: every field with ``metadata["search"]`` (the method's own knobs too).

``--space sragu.tau=0.5:3`` narrows or adds a range for one run and is validated against the field's type
before Ray starts; ``--space agu_layerwise.layer_steps=0.2:0.9`` narrows every entry of a vector (its length
stays).  Under ``shared`` only shared fields can be given a range.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_origin, get_type_hints

from sragu_core.config import choices, parse_value
from sragu_core.errors import ConfigError, check
from sragu_core.methods import METHODS

__all__ = ["PROTOCOLS", "Protocol", "SearchDim", "search_space", "parse_space_override", "shared_fields", "to_tune",
           "flat_point", "assemble", "describe"]

PROTOCOLS = ("shared", "ablation")
Protocol = Literal[PROTOCOLS]


@dataclass(frozen=True)
class SearchDim:
    """One searched field: ``kind`` in float | log | int | choice | vector (``length`` uniform entries)."""

    kind: str
    low: float | None = None
    high: float | None = None
    values: tuple = ()
    length: int = 0

    def to_tune(self):
        """The Tune domain of a scalar dimension (a vector has one per entry: :func:`to_tune`)."""
        from ray import tune

        if self.kind in ("float", "vector"):
            return tune.uniform(self.low, self.high)
        if self.kind == "log":
            return tune.loguniform(self.low, self.high)
        if self.kind == "int":
            return tune.randint(int(self.low), int(self.high) + 1)
        return tune.choice(list(self.values))

    def keys(self, name: str) -> list[str]:
        """The flat Tune keys of field ``name``: itself, or ``name.0`` … for a vector."""
        return [f"{name}.{i}" for i in range(self.length)] if self.kind == "vector" else [name]

    def as_dict(self) -> dict:
        """JSON description (the tuned file records every method's searched space)."""
        if self.kind == "choice":
            return {"kind": "choice", "values": list(self.values)}
        out = {"kind": self.kind, "low": self.low, "high": self.high}
        return {**out, "length": self.length} if self.kind == "vector" else out


def _is_vector_type(tp: Any) -> bool:
    return get_origin(tp) is tuple


def _dim(key: str, spec: tuple, tp: Any) -> SearchDim:
    kind = spec[0]
    if kind == "choice":
        values = tuple(spec[1]) if len(spec) > 1 else choices(tp)
        check(bool(values), key, spec, "a non-empty list of choices")
        return SearchDim("choice", values=tuple(parse_value(key, v, tp) for v in values))
    if kind == "vector":
        check(len(spec) == 4 and _is_vector_type(tp), key, spec, "(vector, low, high, length) on a tuple field")
        low, high = parse_value(key, spec[1], float), parse_value(key, spec[2], float)
        length = parse_value(key, spec[3], int)
        check(low < high, key, f"{spec[1]}:{spec[2]}", "a non-empty range low < high")
        check(length >= 1, key, spec, "a vector length >= 1")
        return SearchDim("vector", low, high, length=length)
    check(kind in ("float", "log", "int") and len(spec) == 3, key, spec,
          "(float|log|int, low, high), (vector, low, high, length) or (choice, ...)")
    number = int if kind == "int" else float
    low, high = parse_value(key, spec[1], number), parse_value(key, spec[2], number)
    raw = f"{spec[1]}:{spec[2]}"  # as the user wrote it
    check(low < high, key, raw, "a non-empty range low < high")
    check(kind != "log" or low > 0, key, raw, "a log range with low > 0")
    return SearchDim(kind, low, high)


def shared_fields(method: str) -> dict[str, str]:
    """Field → shared role (``step``, ``epochs``) of the method's config: what ``shared`` searches."""
    return {f.name: f.metadata["shared"] for f in dataclasses.fields(METHODS[method].config)
            if "shared" in f.metadata}


def _spec_text(spec: tuple) -> str:
    """A range spec as ``--space`` spells it (for error lines)."""
    if spec[0] == "choice":
        return ",".join(map(str, spec[1])) if len(spec) > 1 else "(every choice)"
    lo_hi = f"{spec[1]}:{spec[2]}"
    return lo_hi if spec[0] in ("float", "vector") else f"{spec[0]}:{lo_hi}"


def parse_space_override(key: str, text: str) -> tuple[str, str, tuple]:
    """``("sragu.tau", "0.5:3")`` → (method, field, spec).  Forms: ``lo:hi``, ``log:lo:hi``, ``int:lo:hi``,
    ``a,b,c`` (choices); on a vector field ``lo:hi`` (every entry, length kept).  Unknown methods or fields
    and malformed ranges are ConfigErrors (whether the protocol searches the field: :func:`search_space`)."""
    method, _, name = key.partition(".")
    check(method in METHODS, "--space", key, f"<method>.<field> with method one of {METHODS.names()}")
    cls = METHODS[method].config
    hints = get_type_hints(cls)
    check(name in hints, "--space", key, f"a field of {cls.__name__}: {sorted(hints)}")
    parts = text.split(":")
    if _is_vector_type(hints[name]):
        declared = next(f.metadata.get("search", ()) for f in dataclasses.fields(cls) if f.name == name)
        if not (declared and declared[0] == "vector"):
            raise ConfigError(f"--space {key}", text, "a scalar field, or a tuple field declared with a "
                              "(vector, low, high, length) range")
        if len(parts) != 2:
            raise ConfigError(f"--space {key}", text, f"lo:hi (every one of the {declared[3]} entries is uniform "
                              "in [lo, hi])")
        spec = ("vector", parts[0], parts[1], declared[3])
        try:
            ends = [parse_value(key, end, float) for end in parts]
        except ConfigError as e:
            raise ConfigError(f"--space {key}", text, e.allowed) from None
        try:  # both ends must make a legal config (e.g. agu_layerwise refuses negative steps)
            for end in ends:
                cls(**{name: (end,) * declared[3]})
        except ConfigError as e:
            raise ConfigError(f"--space {key}", text, f"entries that are legal {name} values ({e.allowed})") from None
    elif len(parts) == 2:
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


def search_space(method: str, overrides: dict[str, tuple] | None = None,
                 protocol: Protocol = "ablation") -> dict[str, SearchDim]:
    """The method's searched fields under ``protocol`` (from its config's metadata), plus ``overrides``.

    ``ablation`` (the default here): every field with ``metadata["search"]``; ``shared``: only those with
    ``metadata["shared"]`` (an override of any other field is a ConfigError)."""
    check(protocol in PROTOCOLS, "tune.protocol", protocol, f"one of {list(PROTOCOLS)}")
    cls = METHODS[method].config
    hints = get_type_hints(cls)
    specs = {f.name: f.metadata["search"] for f in dataclasses.fields(cls)
             if "search" in f.metadata and (protocol == "ablation" or "shared" in f.metadata)}
    shared = sorted(shared_fields(method))
    for name, spec in (overrides or {}).items():
        check(protocol == "ablation" or name in shared, f"--space {method}.{name}", _spec_text(spec),
              f"a shared knob of {method} under tune.protocol=shared ({', '.join(shared) or 'none'}); "
              "--tune protocol=ablation searches a method's own knobs")
        specs[name] = spec
    return {name: _dim(f"{method}.{name}", spec, hints[name]) for name, spec in specs.items()}


def to_tune(space: dict[str, SearchDim]) -> dict:
    """Tune's ``param_space``: one flat key per scalar field and per vector entry."""
    return {k: d.to_tune() for name, d in space.items() for k in d.keys(name)}


def flat_point(space: dict[str, SearchDim], cfg: Any) -> dict:
    """``cfg``'s values of the searched fields as one flat Tune point (the first trial = the defaults).

    A vector value shorter than its length is padded with its last entry (layer ℓ takes entry
    min(ℓ, len − 1)); an empty one, which means "all ones" (``agu_layerwise``: plain AGU), becomes all 1.0."""
    out = {}
    for name, d in space.items():
        value = getattr(cfg, name)
        if d.kind == "vector":
            v = tuple(value) or (1.0,)
            v = (v + (v[-1],) * d.length)[:d.length]
            out.update({k: float(x) for k, x in zip(d.keys(name), v)})
        else:
            out[name] = value
    return out


def assemble(space: dict[str, SearchDim], flat: dict) -> dict:
    """A trial's flat Tune config → field values for ``dataclasses.replace`` (vector entries → one tuple)."""
    out = {}
    for name, d in space.items():
        if d.kind == "vector":
            out[name] = tuple(float(flat[k]) for k in d.keys(name))
        else:
            value = flat[name]
            out[name] = value.item() if hasattr(value, "item") else value  # numpy scalars → JSON-able
    return out


def describe(space: dict[str, SearchDim]) -> dict:
    return {name: d.as_dict() for name, d in space.items()}

