"""Benchmark configuration: typed, frozen, validated before any work starts (docs/design.md §7, §10).

A benchmark is the grid datasets × models × seeds × forget regimes × methods.
:func:`resolve` turns a preset name plus ``--set key=value`` overrides into a validated
:class:`Resolved` config *before any work starts*.  Keys name existing fields: ``seeds=[0,1]``,
``train.lr=0.05``, ``data.max_train=500``, and per-method keys headed by the method's registry name,
``sragu.tau=2.0`` or ``agu.eta=0.02``.

Regimes are written as short strings, each regime's own syntax (``sragu_core.forget.REGIMES``):
``random:0.1`` (fraction), ``class:3`` (or ``class:3-5``), ``high_loss:0.1``, ``class_concentrated:3:0.5``
(class, then the fraction of its nearest class).  They are parsed once, by :func:`resolve`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sragu_core.config import override, to_dict
from sragu_core.errors import ConfigError, check
from sragu_core.forget import ForgetConfig, parse_regime
from sragu_core.methods import METHODS
from sragu_core.models import MODELS, ModelConfig
from sragu_core.training import TrainConfig

from .io.datasets import DATASETS

__all__ = ["BenchmarkConfig", "DataConfig", "EpochsConfig", "GoldConfig", "ShadowConfig", "RayConfig", "TaskResources",
           "Resolved", "resolve_config", "parse_overrides"]


@dataclass(frozen=True)
class DataConfig:
    val_fraction: float = 0.1
    test_fraction: float | None = None
    split_seed: int = 0  # fixed across model seeds, so every seed is scored on the same test set
    max_train: int | None = None  # keep only the first N (shuffled) training points; smoke runs
    data_dir: str | None = None
    download: bool = False

    def __post_init__(self):
        check(self.max_train is None or self.max_train >= 20, "data.max_train", self.max_train,
              "null or an integer >= 20")


@dataclass(frozen=True)
class EpochsConfig:
    """Training epochs of the original (and gold) model per architecture; AGU's recipe: 5 MLP, 10 CNN."""

    mlp: int = 5
    cnn_small: int = 10
    resnet18: int = 30
    # to interpolation on mnist_5k, measured: width 512 reaches train accuracy 1.000 by epoch 24-28 (mlp_deep) and
    # 0.9997-1.000 by 40 (mlp_planted, seeds 0-2); width 256 (the default and verdict presets) 1.000 by 35 and 45
    mlp_deep: int = 35
    mlp_planted: int = 45

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            check(isinstance(v, int) and v >= 1, f"epochs.{f.name}", v, "an integer >= 1")


@dataclass(frozen=True)
class TaskResources:
    """Ray resources of one task (``memory_mb`` 0 = no reservation)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_mb: int = 0

    def __post_init__(self):
        check(self.num_cpus > 0, "num_cpus", self.num_cpus, "a number > 0")
        check(self.num_gpus >= 0, "num_gpus", self.num_gpus, "a number >= 0")
        check(self.memory_mb >= 0, "memory_mb", self.memory_mb, "an integer >= 0 (MiB)")


@dataclass(frozen=True)
class RayConfig:
    """Where and how the grid runs.  ``address`` null: join RAY_ADDRESS if set (``ray job submit`` sets it),
    else start a local instance with ``num_cpus`` CPUs (null = all)."""

    address: str | None = None
    num_cpus: int | None = None
    train: TaskResources = field(default_factory=TaskResources)  # originals, forget sets, golds
    cell: TaskResources = field(default_factory=TaskResources)  # one method + its evaluation
    # cells submitted at once; null: twice the cells the cluster's alive CPUs run at once (at least 16)
    max_in_flight: int | None = None
    max_retries: int = 1
    # no cell finished for this long (seconds; 0 = wait forever): the cells left become failed rows with a
    # "stalled" error and the run ends with exit code 1.  Longer than the slowest cell plus its upstream tasks.
    stall_timeout_s: float = 1800.0
    # a driver's claim on the cells it runs lapses this long (seconds) after its last heartbeat in the store,
    # so another driver may take them over; a driver that died on this machine releases them at once
    lease_ttl_s: float = 120.0

    def __post_init__(self):
        check(self.num_cpus is None or self.num_cpus >= 1, "ray.num_cpus", self.num_cpus, "null or >= 1")
        check(self.max_in_flight is None or self.max_in_flight >= 1, "ray.max_in_flight", self.max_in_flight,
              "null (from the cluster) or an integer >= 1")
        check(self.max_retries >= 0, "ray.max_retries", self.max_retries, "an integer >= 0")
        check(self.stall_timeout_s >= 0, "ray.stall_timeout_s", self.stall_timeout_s, "seconds >= 0 (0 = off)")
        check(self.lease_ttl_s >= 5, "ray.lease_ttl_s", self.lease_ttl_s, "seconds >= 5")


@dataclass(frozen=True)
class TrackingConfig:
    """How the driver logs cells to MLflow (docs/design.md §8, "Tracking at scale").

    ``mode``: ``async`` logs each finished cell on ``threads`` background threads (one for a SQLite store, which
    takes one writer at a time) from a queue of ``queue_size`` cells; past that the cell's key waits and its row is
    logged from the store, so the grid never waits for MLflow.  ``sync`` logs each cell as it finishes, the driver
    waiting (the simple path; the same runs).  After the grid the driver waits at most ``drain_timeout_s`` for the
    logging to finish (null: no limit); the cells not logged by then are logged from the store by the next run.

    ``cells`` chooses per-cell child runs or per-group ones (:meth:`cell_runs`)."""

    mode: str = "async"
    threads: int = 4
    queue_size: int = 256
    drain_timeout_s: float | None = 1800.0
    # what a child run is: one per cell (`runs`: 3 requests a cell, ~1,000 cells/min on a 2-core server), one per
    # dataset × model × regime × method with the group's mean metrics and its cells' rows as `cells.parquet`
    # (`groups`: a few requests per group, logged from the consolidated table), or `auto`: runs up to
    # `max_cell_runs` cells in the grid, groups above
    cells: str = "auto"
    max_cell_runs: int = 2000

    def __post_init__(self):
        check(self.cells in ("auto", "runs", "groups"), "tracking.cells", self.cells, "auto, runs or groups")
        check(isinstance(self.max_cell_runs, int) and self.max_cell_runs >= 0, "tracking.max_cell_runs",
              self.max_cell_runs, "an integer >= 0")
        check(self.mode in ("async", "sync"), "tracking.mode", self.mode, "async or sync")
        check(isinstance(self.threads, int) and self.threads >= 1, "tracking.threads", self.threads,
              "an integer >= 1")
        check(isinstance(self.queue_size, int) and self.queue_size >= 1, "tracking.queue_size", self.queue_size,
              "an integer >= 1")
        check(self.drain_timeout_s is None or self.drain_timeout_s >= 0, "tracking.drain_timeout_s",
              self.drain_timeout_s, "null (no limit) or seconds >= 0")

    def cell_runs(self, n_cells: int) -> bool:
        """Whether a grid of ``n_cells`` cells logs one child run per cell (else one per group)."""
        return self.cells == "runs" or (self.cells == "auto" and n_cells <= self.max_cell_runs)


@dataclass(frozen=True)
class GoldConfig:
    """The reference of every gold-distance metric (docs/reference_metrics.md).

    ``init``: the single gold every cell is scored against retrains from θ0's initialisation (``shared``, the
    published protocol: gold and θ0 differ only in their data) or from an independent one (``independent``).
    ``k``: a reference *ensemble* of k more retrains on D_r, each with its own init and batch order, both
    independent of θ0 (0 = off, else >= 2).  Every gold-distance metric is then also computed against each
    member (columns ``<metric>_ens``: the mean, ``<metric>_ens_sd``: the spread) and the noise floor is the band
    of pairwise distances inside the ensemble (``<metric>_floor_lo`` / ``_mean`` / ``_hi``)."""

    init: Literal["shared", "independent"] = "shared"
    k: int = 0
    floor_quantiles: tuple[float, float] = (0.05, 0.95)  # the band's ends, over the ensemble's pairwise distances

    def __post_init__(self):
        check(self.k == 0 or self.k >= 2, "gold.k", self.k, "0 (off) or an integer >= 2")
        q = self.floor_quantiles
        check(len(q) == 2 and 0 <= q[0] < q[1] <= 1, "gold.floor_quantiles", self.floor_quantiles,
              "two quantiles [lo, hi] with 0 <= lo < hi <= 1")


@dataclass(frozen=True)
class ShadowConfig:
    """Shadow models for the per-example metrics KLoM and U-LiRA (docs/reference_metrics.md).

    ``n``: unlearned models per cell — θ0 and n − 1 more originals (own init and batch order, same data), each
    unlearned by the cell's method on the cell's forget set; their margins on the query points are compared
    with the ``gold.k`` retrained members' (0 = off; else >= 2, and ``gold.k`` >= 2).  The query points are
    all of D_f plus ``query_points`` sampled points of D_r and of D_val."""

    n: int = 0
    query_points: int = 500
    klom_bins: int | None = None  # null: ⌈√min(n, k)⌉ within [2, 20] (sragu_core.reference.auto_bins)
    klom_eps: float = 1e-5
    klom_percentile: float = 95.0
    ulira_fixed_variance: bool = False
    # margins are clipped to ±margin_clip (a diverged model's non-finite logits land at the histogram's ends);
    # 50 = logit of p_y ≈ 1 − 2e-22, beyond anything a float32 softmax resolves
    margin_clip: float = 50.0

    def __post_init__(self):
        check(self.n == 0 or self.n >= 2, "shadow.n", self.n, "0 (off) or an integer >= 2")
        check(self.query_points >= 10, "shadow.query_points", self.query_points, "an integer >= 10")
        check(self.klom_bins is None or self.klom_bins >= 2, "shadow.klom_bins", self.klom_bins,
              "null (auto) or an integer >= 2")
        check(self.klom_eps > 0, "shadow.klom_eps", self.klom_eps, "a number > 0")
        check(self.margin_clip > 0, "shadow.margin_clip", self.margin_clip, "a number > 0")
        check(0 < self.klom_percentile < 100, "shadow.klom_percentile", self.klom_percentile,
              "a number in (0, 100)")


@dataclass(frozen=True)
class BenchmarkConfig:
    name: str = "custom"
    datasets: tuple[str, ...] = ("mnist_5k",)
    models: tuple[str, ...] = ("mlp",)
    seeds: tuple[int, ...] = (0,)
    regimes: tuple[str, ...] = ("random:0.1",)
    # the noise floor and the no-op, the method under test, its baseline and its placebo controls, then the
    # competitors researchers report (agu_layerwise, the control of the tuned ablation, is added where tuned)
    methods: tuple[str, ...] = ("retrain_indep", "original", "agu", "sragu", "sragu_permuted", "sragu_random",
                                "sragu_uniform", "grad_ascent", "finetune", "neggrad_plus", "random_label", "salun",
                                "scrub", "ssd", "l1_sparse")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # the original's recipe; its epochs come from `epochs`
    epochs: EpochsConfig = field(default_factory=EpochsConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    device: str = "auto"
    # BatchNorm (any norm layer with running statistics) stays in eval mode while a method unlearns, so its
    # running mean/variance are not re-estimated on forget-only batches; gold retrains train from scratch as usual
    freeze_norm: bool = True
    gold: GoldConfig = field(default_factory=GoldConfig)
    shadow: ShadowConfig = field(default_factory=ShadowConfig)

    def __post_init__(self):
        check(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name)), "name", self.name,
              "letters, digits, '_', '.' and '-' (it names the MLflow experiment, run folders and files)")
        for d in self.datasets:
            check(d in DATASETS, "datasets", d, f"one of {list(DATASETS)}")
        epochs = [f.name for f in dataclasses.fields(EpochsConfig)]
        for m in self.models:
            check(m in MODELS, "models", m, f"one of {MODELS.names()}")
            check(m in epochs, "models", m, f"a model with an epochs.<model> entry: one of {epochs}")
        for m in self.methods:
            check(m in METHODS, "methods", m, f"one of {METHODS.names()}")
        check(len(self.methods) >= 1, "methods", self.methods, f"one or more of {METHODS.names()}")
        check(len(self.methods) == len(set(self.methods)), "methods", self.methods, "distinct names")
        check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "seeds", self.seeds,
              "one or more distinct integers")
        for key in ("datasets", "models", "regimes"):
            check(len(getattr(self, key)) >= 1, key, getattr(self, key), f"at least one of the {key}")
        check(len(set(self.regimes)) == len(self.regimes), "regimes", self.regimes, "distinct regimes")
        for r in self.regimes:
            parse_regime(r)
        check(self.shadow.n == 0 or self.gold.k >= 2, "shadow.n", self.shadow.n,
              f"0 while gold.k={self.gold.k}: KLoM and U-LiRA compare the unlearned models with gold.k >= 2 retrains")
        check(self.device == "auto" or self.device.startswith(("cpu", "cuda")), "device", self.device,
              "auto, cpu or cuda[:N]")

    def train_for(self, model: str) -> TrainConfig:
        """The original's (and the gold's) training recipe for ``model``: ``train`` with ``epochs.<model>``."""
        return dataclasses.replace(self.train, epochs=getattr(self.epochs, model))


@dataclass(frozen=True)
class Resolved:
    """A validated benchmark: the grid, its regimes parsed once, and one frozen config per registered method."""

    bench: BenchmarkConfig
    methods: dict[str, Any]
    forget: tuple[ForgetConfig, ...] = ()

    def __post_init__(self):
        if not self.forget:  # parsed here, once: everything downstream uses the ForgetConfigs
            object.__setattr__(self, "forget", tuple(parse_regime(r) for r in self.bench.regimes))

    def config_for(self, method: str, model: str) -> Any:
        """The config a ``method`` cell on ``model`` runs with: a gold retrain takes the original's recipe."""
        cfg = self.methods[method]
        if METHODS[method].retrains:
            cfg = dataclasses.replace(cfg, **dataclasses.asdict(self.bench.train_for(model)))
        return cfg

    def gold_config(self, model: str) -> Any:
        return self.config_for(GOLD, model)

    def with_bench(self, bench: BenchmarkConfig) -> Resolved:
        return Resolved(bench, self.methods)

    def as_dict(self) -> dict:
        """The resolved grid and the *effective* config of every method it runs, per model (the gold included)."""
        run = dict.fromkeys([GOLD, *self.bench.methods])
        return {**to_dict(self.bench), "effective_configs": {
            model: {m: to_dict(self.config_for(m, model)) for m in run} for model in self.bench.models}}


GOLD = "retrain"  # the registered method every cell is scored against


def parse_overrides(items: list[str], flag: str = "--set") -> dict[str, str]:
    """``["a.b=1", "c=[x,y]"]`` → ``{"a.b": "1", "c": "[x,y]"}``; a malformed item is a ConfigError."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(flag, item, "KEY=VALUE, e.g. sragu.tau=2.0")
        out[key.strip()] = value.strip()
    return out


def resolve_config(bench: BenchmarkConfig, overrides: dict[str, str] | None = None) -> Resolved:
    """A benchmark + dotted overrides → validated :class:`Resolved`; raises ConfigError on any bad key/value.

    ``<method>.<field>`` keys go to that method's config; every other key to the benchmark.  Keys that would
    be silently ignored are refused: ``model.name`` (``models`` decides), ``train.epochs`` (``epochs.<model>``
    decides) and a gold retrain's
    recipe fields (it always uses the original's recipe, ``train.*``).
    """
    bench_updates, method_updates = {}, {}
    recipe = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in (overrides or {}).items():
        head, _, rest = key.partition(".")
        if head in METHODS:
            if not rest:
                raise ConfigError(key, value, f"{head}.<field>, e.g. {head}.batch_size=32")
            if METHODS[head].retrains and rest in recipe:
                raise ConfigError(key, value, "train.* instead: gold retraining always uses the original's recipe")
            method_updates.setdefault(head, {})[rest] = value
        elif key == "model.name":  # the grid builds every entry of `models`; model.name would be ignored
            raise ConfigError(key, value, f"models=[{value}] instead: the grid's models come from `models` "
                                          f"(one or more of {MODELS.names()})")
        elif key == "train.epochs":
            epochs = [f"epochs.{f.name}" for f in dataclasses.fields(EpochsConfig)]
            raise ConfigError(key, value, f"epochs.<model> instead, one of {epochs}: the epochs are per architecture")
        else:
            bench_updates[key] = value
    bench = override(bench, bench_updates)
    methods = {name: override(METHODS[name].config(), method_updates.get(name, {}), prefix=name)
               for name in METHODS}
    return Resolved(bench, methods)
