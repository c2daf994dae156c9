"""Named benchmarks (configs as code), each with a smoke variant that runs the same grid shape in seconds.

    python pipelines/benchmark.py --preset default            # the full preset
    python pipelines/benchmark.py --preset default --smoke    # its smoke variant: same datasets, models,
                                                              # regimes and methods; one seed, tiny data, 1 epoch

:func:`resolve` turns a preset name plus ``--set key=value`` overrides into a validated
:class:`~components.config.Resolved` *before any work starts*.  Keys name existing fields: ``seeds=[0,1]``,
``train.lr=0.05``, ``data.max_train=500``, and per-method keys headed by the method's registry name,
``sragu.tau=2.0`` or ``agu.eta=0.02``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from sragu_core.errors import ConfigError

from .config import BenchmarkConfig, DataConfig, EpochsConfig, Resolved, resolve_config

__all__ = ["Preset", "PRESETS", "resolve", "smoke_variant"]


@dataclass(frozen=True)
class Preset:
    """A named benchmark: ``build()`` gives its config; ``smoke`` says how its smoke variant shrinks it."""

    name: str
    build: Callable[[], BenchmarkConfig]
    smoke_train: int = 300  # training points kept by the smoke variant

    def config(self, smoke: bool = False) -> BenchmarkConfig:
        bench = self.build()
        return smoke_variant(bench, self.smoke_train) if smoke else bench


def smoke_variant(bench: BenchmarkConfig, max_train: int) -> BenchmarkConfig:
    """The same grid shape (datasets, models, regimes, methods) on one seed, ``max_train`` training points
    and one training epoch per architecture: it exercises every code path of the preset in seconds."""
    one_epoch = EpochsConfig(**{f.name: 1 for f in dataclasses.fields(EpochsConfig)})
    return dataclasses.replace(bench, name=f"{bench.name}-smoke", seeds=bench.seeds[:1], epochs=one_epoch,
                               data=dataclasses.replace(bench.data, max_train=max_train))


def _smoke() -> BenchmarkConfig:
    """CI preset, ~15 s here: mnist_5k cut to 2,000 training points, mlp, one seed, two regimes."""
    return BenchmarkConfig(name="smoke", seeds=(0,), regimes=("random:0.1", "high_loss:0.05"),
                           data=DataConfig(max_train=2000))


def _default() -> BenchmarkConfig:
    """`make bench`: mnist_5k, mlp and cnn_small, 3 seeds, five regimes, eleven methods."""
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


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("smoke", _smoke, smoke_train=2000), Preset("default", _default), Preset("paper_mnist", _paper_mnist),
    Preset("paper_cifar10", _paper_cifar10), Preset("fashion", _fashion),
)}


def resolve(preset: str, overrides: dict[str, str] | None = None, *, smoke: bool = False) -> Resolved:
    """Preset (or its smoke variant) + dotted overrides → validated Resolved; ConfigError on any bad input."""
    if preset not in PRESETS:
        raise ConfigError("preset", preset, f"one of {sorted(PRESETS)}")
    return resolve_config(PRESETS[preset].config(smoke), overrides)
