"""Model zoo (the recipe models of docs/design.md §4): registry-driven contract tests plus per-architecture shapes."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sragu_core.data import Split
from sragu_core.errors import ConfigError
from sragu_core.models import MODELS, ModelConfig, build_model, reinit_
from sragu_core.registry import Registry
from sragu_core.spectral import layer_alphas, spectral_layers
from sragu_core.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
# An input shape each model is meant for; resnet18 is built 8 wide (not 64) and the deep MLPs 64 wide (not
# 512) to stay fast.
SHAPES = {"mlp": (1, 28, 28), "mlp_deep": (1, 28, 28), "mlp_planted": (1, 28, 28), "cnn_small": (1, 28, 28),
          "resnet18": (3, 32, 32)}


def _cfg(name: str) -> ModelConfig:
    return ModelConfig(name=name, resnet_width=8, deep_width=64)


def _shape(name: str) -> tuple[int, ...]:
    return SHAPES.get(name, (3, 32, 32))


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------- registry contract
def test_model_config_accepts_exactly_the_registered_models():
    # the allowed names come from the registry itself (no re-listed Literal that could drift from it)
    assert {"mlp", "cnn_small", "resnet18"} <= set(MODELS.names())
    for name in MODELS.names():
        assert ModelConfig(name=name).name == name
    with pytest.raises(ConfigError) as info:
        ModelConfig(name="vgg")
    assert info.value.field == "model.name" and all(n in str(info.value) for n in MODELS.names())


@pytest.mark.parametrize("name", MODELS.names())
def test_forward_gives_finite_batch_by_classes_logits(name):
    model = build_model(_cfg(name), _shape(name), 7, seed=0)
    x = torch.rand(5, *_shape(name), generator=torch.Generator().manual_seed(0))
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            out = model(x)
        assert out.shape == (5, 7)
        assert out.dtype == torch.float32
        assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("name", MODELS.names())
def test_seed_determines_the_weights(name):
    a = build_model(_cfg(name), _shape(name), 10, seed=0)
    b = build_model(_cfg(name), _shape(name), 10, seed=0)
    c = build_model(_cfg(name), _shape(name), 10, seed=1)
    assert _same(_weights(a), _weights(b))
    for (_, la), (_, lc) in zip(spectral_layers(a), spectral_layers(c)):
        assert not torch.equal(la.weight, lc.weight)  # every random layer differs, not just one


@pytest.mark.parametrize("name", MODELS.names())
def test_reinit_is_seeded_and_leaves_global_rng_alone(name):
    fresh = _weights(build_model(_cfg(name), _shape(name), 10, seed=3))
    model = build_model(_cfg(name), _shape(name), 10, seed=0)
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    assert reinit_(model, 3) is model
    assert torch.equal(torch.get_rng_state(), state)
    assert _same(_weights(model), fresh)  # reinit_(m, s) == build_model(..., seed=s)


def test_build_model_leaves_global_rng_alone():
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    build_model(_cfg("mlp"), (1, 8, 8), 10, seed=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_no_torchvision_import():
    code = ("import sys, torch\n"
            "from sragu_core.models import MODELS, ModelConfig, build_model\n"
            "for n in MODELS.names():\n"
            "    build_model(ModelConfig(name=n, resnet_width=8), (3, 32, 32), 10, seed=0)\n"
            "assert 'torchvision' not in sys.modules, 'torchvision was imported'\n"
            "print('ok')\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# ------------------------------------------------------------------------------------ architectures
def test_mlp_default_is_agus_784_128_64_10():
    model = build_model(ModelConfig("mlp"), (1, 28, 28), 10, seed=0)
    shapes = [(m.in_features, m.out_features) for _, m in spectral_layers(model)]
    assert shapes == [(784, 128), (128, 64), (64, 10)]
    small = build_model(ModelConfig("mlp", mlp_hidden=(16,)), (1, 8, 8), 10, seed=0)
    assert [(m.in_features, m.out_features) for _, m in spectral_layers(small)] == [(64, 16), (16, 10)]


@pytest.mark.parametrize("name", ["mlp_deep", "mlp_planted"])
def test_deep_mlps_are_784_then_four_512_wide_layers_by_default(name):
    model = build_model(ModelConfig(name), (1, 28, 28), 10, seed=0)
    shapes = [(m.in_features, m.out_features) for _, m in spectral_layers(model)]
    assert shapes == [(784, 512), (512, 512), (512, 512), (512, 512), (512, 10)]
    assert [type(m).__name__ for m in model][:3] == ["Flatten", "Linear", "ReLU"]
    assert sum(isinstance(m, nn.ReLU) for m in model) == 4  # after every hidden layer, not after the output
    small = build_model(ModelConfig(name, deep_width=16, deep_layers=2), (1, 8, 8), 3, seed=0)
    assert [(m.in_features, m.out_features) for _, m in spectral_layers(small)] == [(64, 16), (16, 16), (16, 3)]
    with torch.no_grad():
        assert small(torch.zeros(4, 1, 8, 8)).shape == (4, 3)


@pytest.mark.parametrize("planted, names", [(0, ("1.weight", "1.bias")), (2, ("5.weight", "5.bias")),
                                            (4, ("9.weight", "9.bias"))])
def test_mlp_planted_names_the_planted_linear(planted, names):
    model = build_model(ModelConfig("mlp_planted", deep_width=16, planted_layer=planted), (1, 8, 8), 10, seed=0)
    assert model.held_at_init == names
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert f"{linears[planted]}.weight" == names[0]
    # mlp_deep is the same network (same weights for a seed) without the attribute
    deep = build_model(ModelConfig("mlp_deep", deep_width=16), (1, 8, 8), 10, seed=0)
    assert not hasattr(deep, "held_at_init") and _same(_weights(deep), _weights(model))


def _digits(n: int = 300, seed: int = 0) -> Split:
    """A learnable 10-class problem on 1×8×8 inputs: class means plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    means = torch.randn(10, 64, generator=torch.Generator().manual_seed(1))
    return Split((means[y] + 0.8 * torch.randn(n, 64, generator=g)).reshape(n, 1, 8, 8), y)


def test_train_holds_the_planted_layer_at_its_init_and_restores_requires_grad():
    # 128 wide: enough eigenvalues for α to separate a trained layer (≈ 2.3 here) from a random one (8.1)
    model = build_model(ModelConfig("mlp_planted", deep_width=128, deep_layers=3, planted_layer=1), (1, 8, 8), 10,
                        seed=0)
    held = model.held_at_init
    assert held == ("3.weight", "3.bias")
    before = _weights(model)
    train(model, _digits(600), TrainConfig(epochs=10, lr=0.05, weight_decay=1e-4), seed=0)
    after = _weights(model)
    for k in before:
        if k in held:  # bit-identical, weight decay included
            assert torch.equal(before[k], after[k]), k
        else:  # every other tensor was trained
            assert not torch.equal(before[k], after[k]), k
    assert all(p.requires_grad for p in model.parameters())  # restored for the unlearning methods
    # ... which can move the planted layer: a plain SGD step on the whole model changes it
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    d = _digits(20, seed=1)
    nn.functional.cross_entropy(model(d.x), d.y).backward()
    opt.step()
    assert not torch.equal(dict(model.named_parameters())["3.weight"], before["3.weight"])
    # the trained layers' α left the random-matrix level; the held layer's stayed there
    alphas = {r.name: r.alpha for r in layer_alphas(model)}
    trained = [alphas[n] for n in ("1", "5")]  # the trained hidden layers; the 10-wide output is small_n
    assert alphas["3"] > max(trained) + 2, alphas


def test_train_restores_requires_grad_when_training_fails():
    model = build_model(ModelConfig("mlp_planted", deep_width=16), (1, 8, 8), 10, seed=0)
    with pytest.raises(ConfigError):
        train(model, Split(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.int64)), TrainConfig(), seed=0)
    bad = Split(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 2, 99]))  # a label out of range: torch raises
    with pytest.raises((IndexError, RuntimeError)):
        train(model, bad, TrainConfig(epochs=1), seed=0)
    assert all(p.requires_grad for p in model.parameters())


def test_held_at_init_naming_an_unknown_parameter_is_refused():
    model = build_model(ModelConfig("mlp_deep", deep_width=16), (1, 8, 8), 10, seed=0)
    model.held_at_init = ("3.wieght",)  # a typo must not silently train the layer it meant to hold
    with pytest.raises(ConfigError) as info:
        train(model, _digits(20), TrainConfig(epochs=1), seed=0)
    assert info.value.field == "model.held_at_init" and "3.wieght" in str(info.value)


@pytest.mark.parametrize("shape, fc_in", [((1, 8, 8), 64 * 2 * 2), ((1, 28, 28), 64 * 7 * 7),
                                          ((3, 32, 32), 64 * 8 * 8), ((3, 30, 22), 64 * 7 * 5)])
def test_cnn_small_sizes_its_fc_from_the_input_shape(shape, fc_in):
    model = build_model(ModelConfig("cnn_small"), shape, 10, seed=0)
    layers = [m for _, m in spectral_layers(model)]
    convs = [(m.in_channels, m.out_channels, m.kernel_size) for m in layers if isinstance(m, nn.Conv2d)]
    fcs = [(m.in_features, m.out_features) for m in layers if isinstance(m, nn.Linear)]
    assert convs == [(shape[0], 32, (3, 3)), (32, 64, (3, 3))]
    assert fcs == [(fc_in, 128), (128, 10)]
    with torch.no_grad():
        assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_resnet18_has_21_spectral_layers():
    # stem conv (1) + 4 stages x 2 basic blocks x 2 convs (16) + 1x1 shortcut convs where the stage
    # changes width/stride: stages 2, 3, 4 (3) + fc (1) = 21; i.e. 20 Conv2d and 1 Linear.
    model = build_model(_cfg("resnet18"), (3, 32, 32), 10, seed=0)
    layers = [m for _, m in spectral_layers(model)]
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert len(layers) == 21
    assert len(convs) == 20 and isinstance(layers[-1], nn.Linear)
    assert sum(m.kernel_size == (1, 1) for m in convs) == 3
    assert (convs[0].in_channels, convs[0].out_channels, convs[0].kernel_size) == (3, 8, (3, 3))
    assert (layers[-1].in_features, layers[-1].out_features) == (8 * 8, 10)


def test_resnet18_default_width_is_the_standard_cifar_resnet18():
    # 11,173,962 parameters: the CIFAR ResNet-18 of kuangliu/pytorch-cifar used by SalUn et al.
    model = build_model(ModelConfig("resnet18"), (3, 32, 32), 10, seed=0)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962


# ------------------------------------------------------------------------------------------ registry
def test_registry_refuses_duplicates_and_lists_known_names():
    reg: Registry[int] = Registry("widget")
    reg.register("beta", 2)
    reg.register("alpha", 1)
    with pytest.raises(ValueError, match="beta"):
        reg.register("beta", 3)
    assert reg["beta"] == 2  # the refused registration changed nothing
    assert reg.names() == list(reg) == ["alpha", "beta"] and len(reg) == 2 and "alpha" in reg
    with pytest.raises(ConfigError) as info:
        reg["gamma"]
    assert info.value.field == "widget"
    assert all(s in str(info.value) for s in ("gamma", "alpha", "beta"))


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        MODELS["vgg"]
    assert all(n in str(info.value) for n in ["vgg", *MODELS.names()])


# ----------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, field, value", [
    ({"name": "vgg"}, "model.name", "vgg"),
    ({"mlp_hidden": ()}, "model.mlp_hidden", "()"),
    ({"mlp_hidden": (16, 0)}, "model.mlp_hidden", "(16, 0)"),
    ({"cnn_channels": (32,)}, "model.cnn_channels", "(32,)"),
    ({"cnn_fc": 0}, "model.cnn_fc", "0"),
    ({"resnet_width": -8}, "model.resnet_width", "-8"),
    ({"deep_width": 0}, "model.deep_width", "0"),
    ({"deep_layers": 0}, "model.deep_layers", "0"),
    ({"planted_layer": 5}, "model.planted_layer", "5"),  # 4 hidden layers: Linear indices 0..4
    ({"planted_layer": -1}, "model.planted_layer", "-1"),
    ({"deep_layers": 1}, "model.planted_layer", "2"),  # the default planted layer no longer exists
])
def test_bad_model_config_is_refused(kwargs, field, value):
    with pytest.raises(ConfigError) as info:
        ModelConfig(**kwargs)
    assert info.value.field == field
    assert field in str(info.value) and value in str(info.value)


def test_unknown_model_name_message_lists_the_choices():
    with pytest.raises(ConfigError) as info:
        ModelConfig(name="vgg")
    assert all(n in str(info.value) for n in MODELS.names())


@pytest.mark.parametrize("name", ["cnn_small", "resnet18"])
@pytest.mark.parametrize("shape", [(8, 8), (64,), (1, 2, 2)])
def test_conv_models_refuse_non_image_shapes(name, shape):
    with pytest.raises(ConfigError) as info:
        build_model(_cfg(name), shape, 10, seed=0)
    assert info.value.field == "input_shape"
    assert str(shape) in str(info.value)


def test_mlp_flattens_any_input_shape():
    model = build_model(ModelConfig("mlp", mlp_hidden=(16,)), (8, 8), 3, seed=0)
    with torch.no_grad():
        assert model(torch.zeros(4, 8, 8)).shape == (4, 3)


def test_fewer_than_two_classes_is_refused():
    with pytest.raises(ConfigError) as info:
        build_model(ModelConfig("mlp"), (1, 8, 8), 1, seed=0)
    assert info.value.field == "num_classes" and "num_classes=1" in str(info.value)
