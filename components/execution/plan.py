"""Expands a resolved benchmark into content-keyed build specs and cells (docs/design.md §7).

Every artifact is named by a hash of its *resolved inputs* and the *code version*, so a rerun finds
what already exists and changing one method's config changes only that method's cell keys:

    data     = H(dataset, data config)
    original = H(code, data, model config, training recipe, seed)
    forget   = H(code, data, forget config, seed [, original when the regime scores with θ0])
    gold     = H(code, original, forget, gold recipe, gold init)  # retrain on D_r
    ensemble = H(code, original, forget, gold recipe, k)          # gold.k independent retrains (gold.k >= 2)
    shadows  = H(code, original, n)                               # shadow.n - 1 more originals (shadow.n >= 2)
    sequence = H(code, original, forget, gold recipe, gold seed, T)  # a retrain per request (``<regime>@<T>``)
    cell     = H(code, original, forget, gold, [ensemble, shadows, shadow settings,] [sequence,] method, config)

A sequential regime (``random:0.2@4``) selects the same forget set as its one-request form and shares its forget
set, gold and ensemble (they do not depend on how the set is split into requests); its cells differ by the
sequence of per-request retrains.

A regime that changes the training data before θ0 is trained (``mislabelled``, ``duplicates``: its
``RegimeSpec.alter``) gets originals of its own, keyed with the regime's parameters (``alter``).

The code version is a hash of the source of ``sragu_core`` and of the compute steps (``components/io/
datasets.py``, ``components/execution/compute.py``, ``components/execution/tasks.py``,
``components/execution/artifacts.py``) — not of git metadata, which a ``ray job submit`` upload does not
carry.  Editing reporting or tracking code keeps the cache.
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

from ..config import Resolved

__all__ = ["content_hash", "code_hash", "git_revision", "member_seed", "OriginalSpec", "ForgetSpec", "GoldSpec",
           "EnsembleSpec", "ShadowSpec", "SequenceSpec", "Cell", "plan_cells"]

ROOT = Path(__file__).resolve().parents[2]
_CODE = ("sragu_core", "components/io/datasets.py", "components/execution/compute.py",
         "components/execution/tasks.py", "components/execution/artifacts.py", "components/execution/ensembles.py",
         "components/execution/sequential.py")


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


def member_seed(seed: int, role: str, i: int) -> int:
    """The init and batch-order seed of member ``i`` of an ensemble (``role``: ``gold``, ``shadow``, ``memo``,
    ``gold_indep``) for the grid seed ``seed``: a hash, so members never share a seed with θ0 (seed itself),
    with each other, or with another role's members."""
    return int(content_hash({"seed": seed, "role": role, "member": i}, 8), 16) % 2 ** 31


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
class OriginalSpec:
    """θ0 to train: ``model`` on ``dataset`` with the recipe in ``inputs``, initialised and shuffled by ``seed``;
    ``alter``: the regime whose data change (flipped labels, duplicates) the training set carries, if any."""

    key: str
    inputs: dict
    dataset: str
    model: str
    seed: int
    alter: ForgetConfig | None = None


@dataclass(frozen=True)
class ForgetSpec:
    """A forget set to select; ``original`` is set when the regime scores points with θ0."""

    key: str
    inputs: dict
    config: ForgetConfig
    seed: int
    original: OriginalSpec | None


@dataclass(frozen=True)
class GoldSpec:
    """The gold to retrain on D_r of ``forget`` with the original's recipe ``config``, initialised and shuffled
    by ``seed`` (θ0's seed when ``gold.init`` is ``shared``)."""

    key: str
    inputs: dict
    original: OriginalSpec
    forget: ForgetSpec
    config: Any
    seed: int = 0


@dataclass(frozen=True)
class EnsembleSpec:
    """``gold.k`` retrains on D_r of ``forget`` with the original's recipe, member i initialised and shuffled by
    ``seeds[i]`` (independent of θ0's): the reference distribution and its noise-floor band."""

    key: str
    inputs: dict
    original: OriginalSpec
    forget: ForgetSpec
    config: Any
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class ShadowSpec:
    """``shadow.n - 1`` more originals next to θ0: the same data and recipe, member i initialised and shuffled by
    ``seeds[i]``.  Each cell unlearns them too (KLoM, U-LiRA)."""

    key: str
    inputs: dict
    original: OriginalSpec
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class SequenceSpec:
    """The forget set of ``forget`` deleted in ``steps`` successive requests (:func:`sragu_core.forget.
    request_chunks`, drawn from ``seed``), and after each request t a retrain on D minus requests 1..t with the
    gold's recipe ``config`` and init ``gold_seed``: the reference each request's model is compared with."""

    key: str
    inputs: dict
    original: OriginalSpec
    forget: ForgetSpec
    config: Any
    gold_seed: int
    steps: int
    seed: int


@dataclass(frozen=True)
class Cell:
    """One method run on one (original, forget set), scored against its gold; with ``sequence``, the method
    runs once per request of the sequence, each on the model the previous request left."""

    key: str
    method: str
    method_cfg: Any
    gold: GoldSpec
    ensemble: EnsembleSpec | None = None
    shadow: ShadowSpec | None = None
    sequence: SequenceSpec | None = None

    @property
    def original(self) -> OriginalSpec:
        return self.gold.original

    @property
    def forget_set(self) -> ForgetSpec:
        return self.gold.forget

    @property
    def forget(self) -> ForgetConfig:
        """The regime as written (``steps`` included); the forget set's own config has steps = 1."""
        cfg = self.gold.forget.config
        return dataclasses.replace(cfg, steps=self.sequence.steps) if self.sequence is not None else cfg

    @property
    def dataset(self) -> str:
        return self.original.dataset

    @property
    def model(self) -> str:
        return self.original.model

    @property
    def seed(self) -> int:
        return self.original.seed

    def coords(self) -> dict:
        return {"dataset": self.dataset, "model": self.model, "seed": self.seed, "regime": self.forget.label(),
                "regime_family": self.forget.family, "method": self.method, "cell_key": self.key}


def plan_cells(resolved: Resolved) -> list[Cell]:
    """Every (dataset, model, seed, regime, method) cell of the grid, with the specs of what it depends on."""
    bench, code = resolved.bench, code_hash()
    k, n = bench.gold.k, bench.shadow.n
    cells = []
    for ds in bench.datasets:
        data = {"dataset": ds, **to_dict(bench.data)}
        for model in bench.models:
            model_cfg = to_dict(dataclasses.replace(bench.model, name=model))
            recipe = to_dict(bench.train_for(model))
            g_cfg = resolved.gold_config(model)
            for seed in bench.seeds:
                originals: dict[str, OriginalSpec] = {}
                for request in resolved.forget:
                    fcfg = dataclasses.replace(request, steps=1)  # what is selected; steps split it into requests
                    alter = fcfg if fcfg.spec.alter is not None else None
                    o_in = {"code": code, "data": data, "model": model_cfg, "train": recipe, "seed": seed}
                    if alter is not None:
                        o_in["alter"] = to_dict(alter)
                    original = OriginalSpec(content_hash(o_in), o_in, ds, model, seed, alter)
                    original = originals.setdefault(original.key, original)
                    f_in = {"code": code, "data": data, "forget": to_dict(fcfg), "seed": seed}
                    scored = fcfg.spec.needs_model or fcfg.spec.needs_trainer or alter is not None
                    if scored:
                        f_in["original"] = original.key
                    forget = ForgetSpec(content_hash(f_in), f_in, fcfg, seed, original if scored else None)
                    g_seed = seed if bench.gold.init == "shared" else member_seed(seed, "gold_indep", 0)
                    g_in = {"code": code, "original": original.key, "forget": forget.key, "retrain": to_dict(g_cfg)}
                    if bench.gold.init != "shared":
                        g_in["seed"] = g_seed
                    gold = GoldSpec(content_hash(g_in), g_in, original, forget, g_cfg, g_seed)
                    ensemble = shadow = None
                    if k:
                        seeds = tuple(member_seed(seed, "gold", i) for i in range(k))
                        e_in = {"code": code, "original": original.key, "forget": forget.key,
                                "retrain": to_dict(g_cfg), "seeds": seeds}
                        ensemble = EnsembleSpec(content_hash(e_in), e_in, original, forget, g_cfg, seeds)
                    if n:
                        seeds = tuple(member_seed(seed, "shadow", i) for i in range(n - 1))
                        s_in = {"code": code, "original": original.key, "seeds": seeds}
                        shadow = ShadowSpec(content_hash(s_in), s_in, original, seeds)
                    sequence = None
                    if request.steps > 1:
                        q_in = {"code": code, "original": original.key, "forget": forget.key,
                                "retrain": to_dict(g_cfg), "gold_seed": g_seed, "steps": request.steps}
                        sequence = SequenceSpec(content_hash(q_in), q_in, original, forget, g_cfg, g_seed,
                                                request.steps, seed)
                    for method in bench.methods:
                        cfg = resolved.config_for(method, model)
                        c_in = {"code": code, "original": original.key, "forget": forget.key, "gold": gold.key,
                                "method": method, "config": to_dict(cfg)}
                        if ensemble is not None:
                            c_in["ensemble"] = ensemble.key
                            c_in["floor_quantiles"] = list(bench.gold.floor_quantiles)
                        if shadow is not None:
                            c_in["shadow"] = {"key": shadow.key, **to_dict(bench.shadow)}
                        if sequence is not None:
                            c_in["sequence"] = sequence.key
                        cells.append(Cell(content_hash(c_in), method, cfg, gold, ensemble, shadow, sequence))
    return cells
