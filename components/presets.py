"""Benchmark configuration and presets (configs as code, STYLE §3–4).

A benchmark is the grid datasets × models × seeds × forget regimes × methods (SPEC §7).
:func:`resolve` turns a preset name plus ``--set key=value`` overrides into a validated
:class:`Resolved` config *before any work starts*.  Keys name existing fields: ``seeds=[0,1]``,
``train.lr=0.05``, ``data.max_train=500``, and per-method keys headed by the method's registry name,
``sragu.tau=2.0`` or ``agu.eta=0.02``.

Regimes are written as short strings: ``random:0.1`` (fraction), ``class:3`` (or ``class:3-5``),
``top_sensitivity:0.1``, ``high_loss:0.1``, ``low_margin:0.1``, ``class_concentrated:3:0.5``
(class, then the fraction of its nearest class).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sragu_core.config import override, to_dict
from sragu_core.errors import ConfigError, check
from sragu_core.forget import REGIMES, ForgetConfig
from sragu_core.methods import METHODS
from sragu_core.models import MODELS, ModelConfig
from sragu_core.training import TrainConfig

from .datasets import DATASETS

__all__ = ["BenchmarkConfig", "DataConfig", "EpochsConfig", "RayConfig", "TaskResources", "Resolved", "PRESETS",
           "resolve", "parse_regime", "parse_overrides"]


def parse_regime(spec: str) -> ForgetConfig:
    """``"random:0.1"`` → ForgetConfig(regime="random", fraction=0.1), etc. (see module docstring)."""
    head, *rest = spec.split(":")
    check(head in REGIMES, "regimes", spec, f"regime:params with regime one of {list(REGIMES)}")
    try:
        if head == "class":
            check(len(rest) == 1, "regimes", spec, "class:<c> or class:<c1>-<c2>")
            return ForgetConfig(regime="class", classes=tuple(int(c) for c in rest[0].split("-")))
        if head == "class_concentrated":
            check(len(rest) == 2, "regimes", spec, "class_concentrated:<class>:<neighbour fraction>")
            return ForgetConfig(regime=head, classes=(int(rest[0]),), neighbor_fraction=float(rest[1]))
        check(len(rest) == 1, "regimes", spec, f"{head}:<fraction in (0, 1)>")
        return ForgetConfig(regime=head, fraction=float(rest[0]))
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError("regimes", spec, "numbers after the regime name, e.g. random:0.1 or class:3") from None


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
    max_in_flight: int = 64
    max_retries: int = 1

    def __post_init__(self):
        check(self.num_cpus is None or self.num_cpus >= 1, "ray.num_cpus", self.num_cpus, "null or >= 1")
        check(self.max_in_flight >= 1, "ray.max_in_flight", self.max_in_flight, "an integer >= 1")
        check(self.max_retries >= 0, "ray.max_retries", self.max_retries, "an integer >= 0")


@dataclass(frozen=True)
class BenchmarkConfig:
    name: str = "custom"
    datasets: tuple[str, ...] = ("mnist_5k",)
    models: tuple[str, ...] = ("mlp",)
    seeds: tuple[int, ...] = (0,)
    regimes: tuple[str, ...] = ("random:0.1",)
    methods: tuple[str, ...] = ("retrain_indep", "agu", "sragu", "grad_ascent", "finetune", "neggrad_plus",
                                "random_label")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    epochs: EpochsConfig = field(default_factory=EpochsConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    device: str = "auto"

    def __post_init__(self):
        for d in self.datasets:
            check(d in DATASETS, "datasets", d, f"one of {list(DATASETS)}")
        for m in self.models:
            check(m in MODELS, "models", m, f"one of {MODELS.names()}")
        for m in self.methods:
            check(m in METHODS, "methods", m, f"one of {METHODS.names()}")
        check(len(self.methods) == len(set(self.methods)), "methods", self.methods, "distinct names")
        check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "seeds", self.seeds,
              "one or more distinct integers")
        check(len(self.datasets) >= 1 and len(self.models) >= 1 and len(self.regimes) >= 1, "grid",
              (self.datasets, self.models, self.regimes), "at least one dataset, model and regime")
        for r in self.regimes:
            parse_regime(r)
        check(self.device == "auto" or self.device.startswith(("cpu", "cuda")), "device", self.device,
              "auto, cpu or cuda[:N]")

    def forget_configs(self) -> list[ForgetConfig]:
        return [parse_regime(r) for r in self.regimes]

    def train_for(self, model: str) -> TrainConfig:
        return dataclasses.replace(self.train, epochs=getattr(self.epochs, model))


@dataclass(frozen=True)
class Resolved:
    """A validated benchmark: the grid plus one frozen config per registered method."""

    bench: BenchmarkConfig
    methods: dict[str, Any]

    def as_dict(self) -> dict:
        return {**to_dict(self.bench), "method_configs": {k: to_dict(v) for k, v in sorted(self.methods.items())}}


def _smoke() -> BenchmarkConfig:
    """CI preset, ~15 s here: mnist_5k cut to 2,000 training points, mlp, one seed, two regimes."""
    return BenchmarkConfig(name="smoke", seeds=(0,), regimes=("random:0.1", "high_loss:0.05"),
                           data=DataConfig(max_train=2000))


def _default() -> BenchmarkConfig:
    """`make bench`: mnist_5k, mlp and cnn_small, 3 seeds, five regimes, seven methods (~11 min here)."""
    return BenchmarkConfig(name="default", models=("mlp", "cnn_small"), seeds=(0, 1, 2),
                           regimes=("random:0.1", "random:0.5", "class:3", "top_sensitivity:0.1", "high_loss:0.1"))


def _paper_mnist() -> BenchmarkConfig:
    """Full MNIST (data dir or download), mlp, 3 seeds, random 1/10/30/50% and a class (hours on CPU)."""
    return BenchmarkConfig(name="paper_mnist", datasets=("mnist",), seeds=(0, 1, 2),
                           regimes=("random:0.01", "random:0.1", "random:0.3", "random:0.5", "class:3"))


def _paper_cifar10() -> BenchmarkConfig:
    """CIFAR-10 (data dir or download), cnn_small, 3 seeds, random 10% and a class (GPU workers advised)."""
    return BenchmarkConfig(name="paper_cifar10", datasets=("cifar10",), models=("cnn_small",), seeds=(0, 1, 2),
                           regimes=("random:0.1", "class:3", "high_loss:0.1"))


def _fashion() -> BenchmarkConfig:
    """Full Fashion-MNIST (data dir or Debian's dataset-fashion-mnist), mlp and cnn_small, 3 seeds."""
    return BenchmarkConfig(name="fashion", datasets=("fashion_mnist",), models=("mlp", "cnn_small"),
                           seeds=(0, 1, 2), regimes=("random:0.1", "class:3", "low_margin:0.1"))


PRESETS: dict[str, Callable[[], BenchmarkConfig]] = {
    "smoke": _smoke, "default": _default, "paper_mnist": _paper_mnist, "paper_cifar10": _paper_cifar10,
    "fashion": _fashion,
}


def parse_overrides(items: list[str], flag: str = "--set") -> dict[str, str]:
    """``["a.b=1", "c=[x,y]"]`` → ``{"a.b": "1", "c": "[x,y]"}``; a malformed item is a ConfigError."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(flag, item, "KEY=VALUE, e.g. sragu.tau=2.0")
        out[key.strip()] = value.strip()
    return out


def resolve(preset: str, overrides: dict[str, str] | None = None) -> Resolved:
    """Preset + dotted overrides → validated :class:`Resolved`; raises ConfigError on any bad key/value."""
    if preset not in PRESETS:
        raise ConfigError("preset", preset, f"one of {sorted(PRESETS)}")
    bench_updates, method_updates = {}, {}
    for key, value in (overrides or {}).items():
        head, _, rest = key.partition(".")
        if head in METHODS:
            if not rest:
                raise ConfigError(key, value, f"{head}.<field>, e.g. {head}.batch_size=32")
            if head in ("retrain", "retrain_indep") and rest in {f.name for f in dataclasses.fields(TrainConfig)}:
                raise ConfigError(key, value, "train.* instead: gold retraining always uses the original's recipe")
            method_updates.setdefault(head, {})[rest] = value
        else:
            bench_updates[key] = value
    bench = override(PRESETS[preset](), bench_updates)
    methods = {name: override(METHODS[name].config(), method_updates.get(name, {}), prefix=name)
               for name in METHODS}
    return Resolved(bench, methods)
