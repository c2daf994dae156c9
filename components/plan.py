"""Expands a resolved benchmark into content-keyed artifacts and cells (SPEC §7).

Every artifact is named by a hash of its *resolved inputs* and the *code version*, so a rerun finds
what already exists and changing one method's config changes only that method's cell keys:

    data     = H(dataset, data config)
    original = H(code, data, model config, training recipe, seed)
    forget   = H(code, data, forget config, seed [, original when the regime is adversarial])
    gold     = H(code, original, forget, gold recipe)            # retrain on D_r
    cell     = H(code, original, forget, gold, method, method config)

The code version is a hash of the source of ``sragu_core`` and the compute steps (``components/
datasets.py``, ``components/steps.py``, ``components/tasks.py``) — not of git metadata, which a
``ray job submit`` upload does not carry.  Editing reporting or tracking code keeps the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sragu_core.config import to_dict
from sragu_core.forget import ForgetConfig

from .presets import Resolved

__all__ = ["content_hash", "code_hash", "git_revision", "Artifact", "Cell", "plan_cells"]

ROOT = Path(__file__).resolve().parents[1]
_CODE = ("sragu_core", "components/datasets.py", "components/steps.py", "components/tasks.py")


def content_hash(obj: Any, n: int = 16) -> str:
    """sha256 of canonical JSON (sorted keys), truncated to ``n`` hex digits."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


@lru_cache(maxsize=1)
def code_hash() -> str:
    h = hashlib.sha256()
    for entry in _CODE:
        p = ROOT / entry
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            h.update(f.relative_to(ROOT).as_posix().encode())
            h.update(f.read_bytes())
    return "src-" + h.hexdigest()[:12]


def git_revision() -> str:
    """The checkout's git revision (``+dirty`` when modified), or ``unknown`` (e.g. in a Ray job upload)."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass(frozen=True)
class Artifact:
    kind: str  # original | forget | gold
    key: str
    inputs: dict


@dataclass(frozen=True)
class Cell:
    key: str
    dataset: str
    model: str
    seed: int
    forget: ForgetConfig
    method: str
    method_cfg: Any
    original: Artifact
    forget_set: Artifact
    gold: Artifact

    def coords(self) -> dict:
        return {"dataset": self.dataset, "model": self.model, "seed": self.seed, "regime": self.forget.label(),
                "regime_family": self.forget.regime, "method": self.method, "cell_key": self.key}


def plan_cells(resolved: Resolved, method_config) -> list[Cell]:
    """Every (dataset, model, seed, regime, method) cell of the grid, with its artifacts' keys.

    ``method_config(resolved, method, model)`` gives the frozen config a cell runs with (gold
    retraining takes the original's recipe for its model).
    """
    bench, code = resolved.bench, code_hash()
    cells = []
    for ds in bench.datasets:
        data = {"dataset": ds, **to_dict(bench.data)}
        for model in bench.models:
            model_cfg = to_dict(dataclasses.replace(bench.model, name=model))
            recipe = to_dict(bench.train_for(model))
            for seed in bench.seeds:
                o_in = {"code": code, "data": data, "model": model_cfg, "train": recipe, "seed": seed}
                original = Artifact("original", content_hash(o_in), o_in)
                for fcfg in bench.forget_configs():
                    f_in = {"code": code, "data": data, "forget": to_dict(fcfg), "seed": seed}
                    if fcfg.regime not in ("random", "class"):
                        f_in["original"] = original.key
                    forget = Artifact("forget", content_hash(f_in), f_in)
                    g_cfg = to_dict(method_config(resolved, "retrain", model))
                    g_in = {"code": code, "original": original.key, "forget": forget.key, "retrain": g_cfg}
                    gold = Artifact("gold", content_hash(g_in), g_in)
                    for method in bench.methods:
                        cfg = method_config(resolved, method, model)
                        c_in = {"code": code, "original": original.key, "forget": forget.key, "gold": gold.key,
                                "method": method, "config": to_dict(cfg)}
                        cells.append(Cell(content_hash(c_in), ds, model, seed, fcfg, method, cfg, original,
                                          forget, gold))
    return cells
