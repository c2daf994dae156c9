"""Model zoo of the benchmark: ``mlp``, ``mlp_deep``, ``mlp_planted``, ``cnn_small`` and a CIFAR ``resnet18``,
behind one registry.

* ``mlp``: AGU's MNIST network, 784-128-64-10 by default (``mlp_hidden`` sets the widths); flattens any
  input, so it runs on every dataset.
* ``mlp_deep``: flatten · (Linear(→W) · ReLU) × ``deep_layers`` · Linear(W→classes), W = ``deep_width``;
  784-512-512-512-512-10 on MNIST by default: four layers with ≥ 512 eigenvalues each, so their α are
  well-determined fits (the output layer's 10 eigenvalues are not), and enough capacity to interpolate
  mnist_5k — a model with something to unlearn.
* ``mlp_planted``: ``mlp_deep`` with one Linear layer (``planted_layer``, its index among the Linear
  layers, 0 = the first) **held at its initialisation while θ0 and the gold are trained**: planted spectral
  heterogeneity.  Measured on mnist_5k after its 40 epochs, the held 512×512 layer keeps its init's
  random-like α (8.3, 6.0, 14.6 for seeds 0, 1, 2: a random matrix has no clean power-law tail, so the fit is
  large and noisy) while the trained hidden layers settle at 2.9–3.2.  The model carries ``held_at_init``,
  the names of the held parameters (e.g. ``("5.weight", "5.bias")``); :func:`sragu_core.training.train` —
  the original's recipe, which the gold retrains (``retrain``, ``retrain_indep``) also run — turns their
  ``requires_grad`` off while it trains and restores it afterwards.  Nothing else reads the attribute, so
  unlearning methods *can* move the layer.
* ``cnn_small``: AGU's small CIFAR CNN — conv(C→32, 3×3) · ReLU · maxpool · conv(32→64) · ReLU · maxpool ·
  fc(→128) · ReLU · fc(→classes) — with the first fc sized from the input shape, so it runs on 28×28 MNIST,
  8×8 digits and 32×32 CIFAR alike.
* ``resnet18``: the CIFAR variant of He et al. 2016 (3×3 stem, no max-pool; the version used by SalUn
  and most unlearning papers), written here because torchvision does not import beside the pinned torch.

Weights are initialised from a ``torch.Generator`` seeded by the caller, so a (model, seed) pair is
reproducible without touching global RNG state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .errors import check
from .registry import Registry

__all__ = ["ModelConfig", "MODELS", "build_model", "reinit_"]

@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"  # a name registered in MODELS
    mlp_hidden: tuple[int, ...] = (128, 64)
    cnn_channels: tuple[int, int] = (32, 64)
    cnn_fc: int = 128
    resnet_width: int = 64
    deep_width: int = 512  # mlp_deep / mlp_planted: width of every hidden layer
    deep_layers: int = 4  # mlp_deep / mlp_planted: number of hidden layers
    planted_layer: int = 2  # mlp_planted: index among the Linear layers (0..deep_layers) held at its init

    def __post_init__(self):
        check(self.name in MODELS, "model.name", self.name, f"one of {MODELS.names()}")
        check(len(self.mlp_hidden) >= 1 and all(h > 0 for h in self.mlp_hidden),
              "model.mlp_hidden", self.mlp_hidden, "one or more positive widths")
        check(len(self.cnn_channels) == 2 and all(c > 0 for c in self.cnn_channels),
              "model.cnn_channels", self.cnn_channels, "two positive channel counts")
        check(self.cnn_fc > 0, "model.cnn_fc", self.cnn_fc, "a positive width")
        check(self.resnet_width > 0, "model.resnet_width", self.resnet_width, "a positive width")
        check(self.deep_width > 0, "model.deep_width", self.deep_width, "a positive width")
        check(self.deep_layers >= 1, "model.deep_layers", self.deep_layers, "an integer >= 1")
        check(0 <= self.planted_layer <= self.deep_layers, "model.planted_layer", self.planted_layer,
              f"an index among the {self.deep_layers + 1} Linear layers: 0..deep_layers ({self.deep_layers})")


Builder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]
MODELS: Registry[Builder] = Registry("model")


def _mlp_of(input_shape: tuple[int, ...], hidden: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """flatten · (Linear · ReLU) per hidden width · Linear(→classes); Linear i sits at position 1 + 2i."""
    dims = [int(torch.tensor(input_shape).prod()), *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], num_classes))
    return nn.Sequential(*layers)


def _mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _mlp_of(input_shape, cfg.mlp_hidden, num_classes)


def _mlp_deep(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _mlp_of(input_shape, (cfg.deep_width,) * cfg.deep_layers, num_classes)


def _mlp_planted(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    model = _mlp_of(input_shape, (cfg.deep_width,) * cfg.deep_layers, num_classes)
    pos = 1 + 2 * cfg.planted_layer  # position of the planted Linear in the Sequential
    model.held_at_init = (f"{pos}.weight", f"{pos}.bias")  # read by training.train (module docstring)
    return model


def _cnn_small(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c, h, w = _image_shape(input_shape)
    c1, c2 = cfg.cnn_channels
    return nn.Sequential(
        nn.Conv2d(c, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * (h // 4) * (w // 4), cfg.cnn_fc), nn.ReLU(),
        nn.Linear(cfg.cnn_fc, num_classes),
    )


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class _ResNet18(nn.Module):
    def __init__(self, in_ch: int, num_classes: int, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2 ** i
            stages.append(nn.Sequential(_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def _resnet18(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c, _, _ = _image_shape(input_shape)
    return _ResNet18(c, num_classes, cfg.resnet_width)


def _image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    check(len(input_shape) == 3 and min(input_shape[1:]) >= 4, "input_shape", tuple(input_shape),
          "(channels, height, width) with height and width >= 4 for convolutional models")
    return int(input_shape[0]), int(input_shape[1]), int(input_shape[2])


MODELS.register("mlp", _mlp)
MODELS.register("mlp_deep", _mlp_deep)
MODELS.register("mlp_planted", _mlp_planted)
MODELS.register("cnn_small", _cnn_small)
MODELS.register("resnet18", _resnet18)


def reinit_(model: nn.Module, seed: int) -> nn.Module:
    """Re-initialise every parameterised module in place, deterministically for ``seed``.

    Uses each module's own ``reset_parameters`` (PyTorch's default init) under a forked global RNG,
    so the caller's RNG state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return model


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, *, seed: int) -> nn.Module:
    """A freshly initialised model of ``cfg.name`` for inputs of ``input_shape`` (without batch dim)."""
    check(num_classes >= 2, "num_classes", num_classes, "an integer >= 2")
    with torch.random.fork_rng(devices=[]):  # module constructors draw from the global RNG
        model = MODELS[cfg.name](cfg, tuple(input_shape), num_classes)
    return reinit_(model, seed)
