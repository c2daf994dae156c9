"""The tuned-config file a sweep writes and ``pipelines/benchmark.py --tuned`` reads (format ``sragu-tuned/1``).

It holds, per tuned method, the best configuration found on the tuning seed; the benchmark freezes those
configurations and evaluates only the seeds other than the tuning seed.  A sweep also records how it was
tuned: ``protocol`` (``shared`` or ``ablation``, docs/tuning.md), ``objective``, the tuning ``cells`` and, per
method, the ``space`` it searched (field → kind and range; ``{}`` for a method that ran one trial of its
defaults), its ``trials`` and ``default_objective``.  The benchmark needs only ``tuned_seed`` and the
``config`` entries; the rest is the record, checked here where present.  A vector field (``layer_steps``) is
a JSON list and becomes the config's tuple through ``override``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from sragu_core.config import override
from sragu_core.errors import ConfigError, check
from sragu_core.methods import METHODS

from ..config import Resolved
from .search_space import PROTOCOLS

__all__ = ["TUNED_FORMAT", "load_tuned", "apply_tuned"]

TUNED_FORMAT = "sragu-tuned/1"


def load_tuned(path: str | Path) -> dict:
    """Read and validate a tuned-config file; one ConfigError line when it is not one."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError("--tuned", str(path), f"a readable tuned-config JSON file ({type(e).__name__})") from None
    check(isinstance(doc, dict) and doc.get("format") == TUNED_FORMAT, "--tuned", str(path),
          f"a file written by pipelines/tune.py (format {TUNED_FORMAT})")
    check(isinstance(doc.get("tuned_seed"), int), "--tuned", str(path), "a file with an integer tuned_seed")
    methods = doc.get("methods")
    check(isinstance(methods, dict), "--tuned", str(path),
          "a file with a 'methods' mapping of method → {config: {...}}")
    check(doc.get("protocol", "shared") in PROTOCOLS, "--tuned", f"{path}: protocol={doc.get('protocol')!r}",
          f"a protocol among {list(PROTOCOLS)}")
    for m, entry in methods.items():
        check(m in METHODS, "--tuned", f"{path}: {m}", f"methods among {METHODS.names()}")
        check(isinstance(entry, dict) and isinstance(entry.get("config"), dict), "--tuned", f"{path}: {m}",
              "an entry {\"config\": {field: value, ...}} per method")
    return {**doc, "_path": str(path)}  # for error lines; not part of the format


def apply_tuned(resolved: Resolved, doc: dict) -> Resolved:
    """Freeze the tuned configs into the method configs and keep only held-out seeds."""
    methods = dict(resolved.methods)
    for m, entry in doc["methods"].items():
        try:
            methods[m] = override(methods[m], dict(entry["config"]), prefix=m)
        except ConfigError as e:  # the file is what the user gave: name it
            raise ConfigError("--tuned", f"{doc.get('_path', 'file')}: {e.field}={e.value!r}", e.allowed) from None
    held_out = tuple(s for s in resolved.bench.seeds if s != doc["tuned_seed"])
    check(bool(held_out), "seeds", resolved.bench.seeds, f"seeds other than the tuning seed {doc['tuned_seed']}")
    return Resolved(dataclasses.replace(resolved.bench, seeds=held_out), methods)
