"""Named benchmarks (configs as code), each with a smoke variant that runs the same grid shape in seconds.

    python pipelines/benchmark.py --preset default            # the full preset
    python pipelines/benchmark.py --preset default --smoke    # its smoke variant: same datasets, models,
                                                              # regimes and methods; one seed, tiny data, few epochs

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
from sragu_core.models import ModelConfig

from .config import BenchmarkConfig, DataConfig, EpochsConfig, GoldConfig, Resolved, ShadowConfig, resolve_config

__all__ = ["Preset", "PRESETS", "resolve", "smoke_variant"]


@dataclass(frozen=True)
class Preset:
    """A named benchmark: ``build()`` gives its config; ``smoke`` says how its smoke variant shrinks it."""

    name: str
    build: Callable[[], BenchmarkConfig]
    smoke_train: int = 300  # training points kept by the smoke variant
    # training epochs of the smoke variant's originals: enough that θ0 classifies the points the "fitted"
    # regimes need (a fraction of the training set, among the points θ0 gets right)
    smoke_epochs: int = 3

    def config(self, smoke: bool = False) -> BenchmarkConfig:
        bench = self.build()
        return smoke_variant(bench, self.smoke_train, self.smoke_epochs) if smoke else bench


def smoke_variant(bench: BenchmarkConfig, max_train: int, epochs: int = 3) -> BenchmarkConfig:
    """The same grid shape (datasets, models, regimes, methods) on one seed, ``max_train`` training points,
    ``epochs`` training epochs per architecture and at most 3 reference retrains and shadow originals (when the
    preset has them): it exercises every code path of the preset in seconds."""
    few = EpochsConfig(**{f.name: epochs for f in dataclasses.fields(EpochsConfig)})
    gold = dataclasses.replace(bench.gold, k=min(bench.gold.k, 3))
    shadow = dataclasses.replace(bench.shadow, n=min(bench.shadow.n, 3))
    return dataclasses.replace(bench, name=f"{bench.name}-smoke", seeds=bench.seeds[:1], epochs=few,
                               data=dataclasses.replace(bench.data, max_train=max_train), gold=gold, shadow=shadow)


def _smoke() -> BenchmarkConfig:
    """CI preset, ~15 s here: mnist_5k cut to 2,000 training points, mlp, one seed, two regimes."""
    return BenchmarkConfig(name="smoke", seeds=(0,), regimes=("random:0.1", "high_loss:0.05"),
                           data=DataConfig(max_train=2000))


def _default() -> BenchmarkConfig:
    """`make bench`: mnist_5k; AGU's small mlp (underfit: train 0.90) and the verdict's interpolating 5-layer MLP
    (784-256-256-256-256-10, 35 epochs, train 1.00); 3 seeds; four regimes (random 10%, a class, and two
    selection rules restricted to points θ0 fits); every method with the no-op and placebo controls, untuned
    defaults.  cnn_small (conv layers) is in the fashion and paper_cifar10 presets: its 10-epoch golds and
    competitors cost ~3 CPU-minutes per (seed, regime) here, which would put this preset past 15 minutes."""
    return BenchmarkConfig(name="default", models=("mlp", "mlp_deep"), seeds=(0, 1, 2),
                           regimes=("random:0.1", "class:3", "high_loss_fitted:0.1", "low_margin_fitted:0.1"),
                           model=ModelConfig(deep_width=256))




def _verdict() -> BenchmarkConfig:
    """Does SRAGU's α-reweighting help, and when?  The grid the committed verdict (docs/results/) comes from.

    mnist_5k; a 784-256-256-256-256-10 MLP trained to interpolation (100% train accuracy, 35 epochs) and its
    planted-heterogeneity twin (layer 5 held at its initialisation while θ0 trains: α ≈ 9.5 against 2.6–2.7
    for the trained layers; 45 epochs); 10 held-out seeds; one regime of every family (random, class, and the
    three selection rules restricted to points θ0 fits); every method and control.  Tune first on seed 1000
    (pipelines/tune.py --preset verdict), then run with --tuned: docs/protocol.md has the commands.
    Measured here: see docs/results/verdict.md.
    """
    return BenchmarkConfig(name="verdict", models=("mlp_deep", "mlp_planted"), seeds=tuple(range(10)),
                           regimes=("random:0.1", "class:3", "high_loss_fitted:0.1", "low_margin_fitted:0.1",
                                    "top_sensitivity_fitted:0.1"),
                           model=ModelConfig(deep_width=256))


def _verdict_ablation() -> BenchmarkConfig:
    """SRAGU's own knobs against an equal budget for free per-layer steps: the ``verdict`` grid with SRAGU and
    ``agu_layerwise`` both tuned by ``pipelines/tune.py --preset verdict_ablation --tune protocol=ablation``
    (plus the noise floor and the no-op).  Reuses the verdict's originals, forget sets and golds."""
    return dataclasses.replace(_verdict(), name="verdict_ablation",
                               methods=("retrain_indep", "original", "sragu", "agu_layerwise"))


def _verdict_full() -> BenchmarkConfig:
    """The verdict against distributions of retrained models (docs/reference_metrics.md).

    SRAGU, AGU, the permuted placebo, the no-op, the noise-floor retrain and the verdict's strongest competitor
    (ℓ1-sparse).  Each cell is scored against a gold whose init is independent of θ0's and against ``gold.k`` = 8
    independent retrains (the noise-floor band, the ``*_ens`` metrics), and its method also runs on
    ``shadow.n`` - 1 = 7 more originals (KLoM, U-LiRA).  The planted-heterogeneity MLP (the model on which SRAGU
    and AGU differ), 10 seeds, a random deletion, θ0's hardest fitted points and the literature's hard
    deletions: memorised points, mislabelled points, duplicates (one copy forgotten, its twin kept) and a
    subpopulation of one class.  Class deletion is left to the ``verdict`` preset.  Untuned defaults.
    """
    return BenchmarkConfig(name="verdict_full", models=("mlp_planted",), seeds=tuple(range(10)),
                           regimes=("random:0.1", "high_loss_fitted:0.1", "memorised:0.05", "mislabelled:0.05",
                                    "duplicates:0.05:one", "subpopulation:3:5"),
                           methods=("retrain_indep", "original", "agu", "sragu", "sragu_permuted", "l1_sparse"),
                           model=ModelConfig(deep_width=256), gold=GoldConfig(init="independent", k=8),
                           shadow=ShadowConfig(n=8))


def _verdict_sequential() -> BenchmarkConfig:
    """Sequential deletions (docs/reference_metrics.md): ``verdict_full``'s model, methods and references, on a
    20% random deletion made at once and the same points deleted in 4 successive requests (5% each), each
    request's model compared with a retrain without everything removed so far.  The one-request regime and the
    sequence share their forget set, gold and reference ensemble, so the two rows compare directly."""
    return dataclasses.replace(_verdict_full(), name="verdict_sequential", regimes=("random:0.2", "random:0.2@4"))


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
    Preset("smoke", _smoke, smoke_train=2000), Preset("default", _default, smoke_train=600, smoke_epochs=5),
    Preset("verdict", _verdict, smoke_train=1000, smoke_epochs=20),
    Preset("verdict_ablation", _verdict_ablation, smoke_train=1000, smoke_epochs=20),
    Preset("verdict_full", _verdict_full, smoke_train=600, smoke_epochs=10),
    Preset("verdict_sequential", _verdict_sequential, smoke_train=600, smoke_epochs=10),
    Preset("paper_mnist", _paper_mnist),
    Preset("paper_cifar10", _paper_cifar10), Preset("fashion", _fashion),
)}


def resolve(preset: str, overrides: dict[str, str] | None = None, *, smoke: bool = False) -> Resolved:
    """Preset (or its smoke variant) + dotted overrides → validated Resolved; ConfigError on any bad input."""
    if preset not in PRESETS:
        raise ConfigError("preset", preset, f"one of {sorted(PRESETS)}")
    return resolve_config(PRESETS[preset].config(smoke), overrides)
