"""Typed, frozen configuration (docs/design.md §10): overrides, presets, regimes and the command-line errors."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from components.config import BenchmarkConfig
from components.presets import PRESETS, resolve
from sragu_core.config import flatten, from_dict, override, parse_value, to_dict
from sragu_core.errors import ConfigError, check
from sragu_core.forget import ForgetConfig, parse_regime
from sragu_core.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    steps: int = 10
    mode: Literal["fast", "slow"] = "fast"

    def __post_init__(self):
        check(self.lr > 0, "inner.lr", self.lr, "a number > 0")


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    flag: bool = False
    ids: tuple[int, ...] = (0,)
    tags: tuple[str, ...] = ("t",)
    limit: int | None = 5
    frac: float | None = None
    inner: Inner = field(default_factory=Inner)


def _config_error(fn, *args, **kwargs) -> str:
    """The one-line message of the ConfigError that ``fn`` raises."""
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------------ override
def test_override_coerces_every_declared_type():
    cfg = Outer()
    new = override(cfg, {"inner.lr": "2.0", "inner.steps": "3", "inner.mode": "slow", "flag": "true",
                         "ids": "[0,1]", "tags": "a,b", "limit": "null", "frac": "0.5", "name": "y"})
    assert new == Outer(name="y", flag=True, ids=(0, 1), tags=("a", "b"), limit=None, frac=0.5,
                        inner=Inner(lr=2.0, steps=3, mode="slow"))
    assert type(new.inner.lr) is float and type(new.inner.steps) is int and new.flag is True
    assert [type(i) for i in new.ids] == [int, int]
    assert cfg == Outer()  # the original is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.flag = True  # type: ignore[misc]
    assert override(cfg, {}) is cfg


@pytest.mark.parametrize("raw, tp, expected", [
    ("2.0", float, 2.0), ("3", float, 3.0), ("3", int, 3), (" 4 ", int, 4),
    ("true", bool, True), ("false", bool, False), ("1", bool, True), ("no", bool, False),
    ("[0,1]", tuple[int, ...], (0, 1)), ("0,1", tuple[int, ...], (0, 1)), ("[2]", tuple[int, ...], (2,)),
    ("a,b", tuple[str, ...], ("a", "b")), ('["a","b"]', tuple[str, ...], ("a", "b")),
    ("slow", Literal["fast", "slow"], "slow"),
    ("null", int | None, None), ("None", float | None, None), ("7", int | None, 7), ("0.5", float | None, 0.5),
])
def test_parse_value(raw, tp, expected):
    got = parse_value("k", raw, tp)
    assert got == expected and type(got) is type(expected)
    if isinstance(expected, tuple):
        assert [type(g) for g in got] == [type(e) for e in expected]


@pytest.mark.parametrize("raw, tp, shown", [
    ("abc", float, "abc"), ("2.5", int, "2.5"), ("true", int, "true"), ("maybe", bool, "maybe"),
    ("medium", Literal["fast", "slow"], "medium"), ("0,x", tuple[int, ...], "'x'"),  # names the bad item
    ("abc", int | None, "abc"), ("null", int, "null"),
])
def test_parse_value_refuses_wrong_types(raw, tp, shown):
    msg = _config_error(parse_value, "inner.k", raw, tp)
    assert "inner.k" in msg and shown in msg


def test_parse_value_reads_a_bracketed_list_of_bare_words():
    assert parse_value("k", "[a,b]", tuple[str, ...]) == ("a", "b")


def test_parse_value_refuses_malformed_list_with_config_error():
    with pytest.raises(ConfigError):
        parse_value("seeds", "[0,", tuple[int, ...])


@pytest.mark.parametrize("updates, field_name, allowed", [
    ({"nope": "1"}, "nope", ["flag", "ids", "inner", "limit", "name"]),
    ({"inner.nope": "1"}, "inner.nope", ["lr", "mode", "steps"]),
])
def test_override_refuses_unknown_keys_and_lists_allowed_ones(updates, field_name, allowed):
    msg = _config_error(override, Outer(), updates)
    assert field_name in msg and all(a in msg for a in allowed)


@pytest.mark.parametrize("updates, field_name, value", [
    ({"inner.lr": "abc"}, "inner.lr", "abc"),  # wrong type
    ({"inner.lr": "-1"}, "inner.lr", "-1"),  # rejected by __post_init__
    ({"inner.mode": "medium"}, "inner.mode", "medium"),  # not a Literal choice
    ({"flag.x": "1"}, "flag.x", "1"),  # sub-key of a non-dataclass field
    ({"inner": "3"}, "inner", "3"),  # a scalar for a nested config
])
def test_override_refuses_bad_values_with_the_field_name(updates, field_name, value):
    cfg = Outer()
    msg = _config_error(override, cfg, updates)
    assert field_name in msg and value in msg
    assert cfg == Outer()


def test_from_dict_builds_nested_configs_and_refuses_unknown_keys():
    cfg = from_dict(Outer, {"inner": {"lr": "0.5", "steps": 2}, "ids": [1, 2], "limit": None})
    assert cfg == Outer(inner=Inner(lr=0.5, steps=2), ids=(1, 2), limit=None)
    msg = _config_error(from_dict, Outer, {"inner": {"zzz": 1}})
    assert "inner.zzz" in msg


# -------------------------------------------------------------------------------------- to_dict/flatten
def test_flatten_by_hand():
    assert flatten({"a": {"b": 1, "c": {"d": [2]}}, "e": "x"}) == {"a.b": 1, "a.c.d": [2], "e": "x"}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_to_dict_and_flatten_are_json_able_and_round_trip(preset):
    bench = PRESETS[preset].config()
    flat = flatten(to_dict(bench))
    assert json.loads(json.dumps(flat)) == flat
    assert not any(isinstance(v, (dict, tuple)) for v in flat.values())
    assert flat["train.lr"] == bench.train.lr and flat["model.name"] == bench.model.name
    assert flat["data.max_train"] == bench.data.max_train and flat["seeds"] == list(bench.seeds)
    assert from_dict(BenchmarkConfig, to_dict(bench)) == bench


# --------------------------------------------------------------------------------------------- resolve
def test_resolve_routes_method_overrides_to_that_method_only():
    base = resolve("smoke")
    r = resolve("smoke", {"sragu.tau": "2.0", "seeds": "[0,1]", "train.lr": "0.05"})
    assert r.methods["sragu"].tau == 2.0
    assert r.methods["sragu"] == dataclasses.replace(base.methods["sragu"], tau=2.0)
    assert r.methods["agu"] == base.methods["agu"] == METHODS["agu"].config()
    assert {k: v for k, v in r.methods.items() if k != "sragu"} == {k: v for k, v in base.methods.items()
                                                                    if k != "sragu"}
    assert r.bench.seeds == (0, 1) and r.bench.train.lr == 0.05
    assert base.bench == PRESETS["smoke"].config()


def test_gold_retrains_run_with_the_effective_recipe_of_their_model():
    r = resolve("default", {"epochs.mlp_deep": "7", "train.lr": "0.05"})
    for model, epochs in (("mlp", 5), ("mlp_deep", 7)):
        for m in ("retrain", "retrain_indep"):  # METHODS[m].retrains: the recipe is the original's
            cfg = r.config_for(m, model)
            assert METHODS[m].retrains and cfg.epochs == epochs and cfg.lr == 0.05
        assert r.config_for("agu", model) == r.methods["agu"]  # unlearning methods keep their own config
        # config.json shows what the cells ran with, per model, not the registry defaults
        shown = r.as_dict()["effective_configs"][model]
        assert shown["retrain"]["epochs"] == epochs and set(shown) == {"retrain", *r.bench.methods}
    assert not any(METHODS[m].retrains for m in METHODS if m not in ("retrain", "retrain_indep"))


def test_dead_keys_are_refused_not_ignored():
    # train.epochs used to be accepted and silently overridden by epochs.<model>
    msg = _config_error(resolve, "smoke", {"train.epochs": "9"})
    assert "train.epochs" in msg and "epochs.mlp" in msg
    # model.name was accepted and ignored: the grid builds `models`
    msg = _config_error(resolve, "smoke", {"model.name": "mlp_deep"})
    assert "model.name" in msg and "models=[mlp_deep]" in msg
    msg = _config_error(resolve, "smoke", {"retrain.epochs": "9"})  # the gold always takes the original's recipe
    assert "retrain.epochs" in msg and "train.*" in msg


def test_a_model_without_an_epochs_entry_is_a_config_error(monkeypatch):
    from sragu_core.models import MODELS

    monkeypatch.setitem(MODELS._items, "tiny_vit", MODELS["mlp"])  # registered, but EpochsConfig lacks it
    msg = _config_error(resolve, "smoke", {"models": "[tiny_vit]"})
    assert "models" in msg and "tiny_vit" in msg and "epochs" in msg


def test_regimes_are_parsed_once_at_the_boundary():
    r = resolve("smoke", {"regimes": "[random:0.2,class:3-5]"})
    assert [f.label() for f in r.forget] == ["random_20pct", "class_3-5"]
    assert _config_error(resolve, "smoke", {"regimes": "[random:0.1,random:0.1]"}).startswith("regimes=")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_resolves(preset):
    r = resolve(preset)
    assert r.bench.name == preset
    assert set(r.methods) == set(METHODS.names())
    assert all(isinstance(r.methods[n], METHODS[n].config) for n in METHODS.names())
    assert len(r.forget) == len(r.bench.regimes) >= 1
    assert json.loads(json.dumps(r.as_dict()))["name"] == preset


@pytest.mark.parametrize("preset, overrides, field_name, value", [
    ("smoke", {"sragu.nope": "1"}, "sragu.nope", "1"),
    ("smoke", {"nope": "1"}, "nope", "1"),
    ("smoke", {"seeds": "x"}, "seeds", "x"),
    ("smoke", {"seeds": "[0,0]"}, "seeds", "(0, 0)"),
    ("smoke", {"methods": "agu,unknown"}, "methods", "unknown"),
    ("smoke", {"methods": "[agu,unknown]"}, "methods", "unknown"),
    # the message names the `regimes` key the user typed, with the regime's syntax and the allowed range
    ("smoke", {"regimes": "random:1.5"}, "fraction", "1.5"),
    ("smoke", {"regimes": "bogus:0.1"}, "regimes", "bogus:0.1"),
    ("smoke", {"datasets": "imagenet"}, "datasets", "imagenet"),
    ("smoke", {"datasets": "[imagenet]"}, "datasets", "imagenet"),
    ("smoke", {"models": "vgg"}, "models", "vgg"),
    ("smoke", {"model.name": "vgg"}, "model.name", "vgg"),
    ("smoke", {"retrain.lr": "0.1"}, "retrain.lr", "0.1"),
    ("smoke", {"sragu": "1"}, "sragu", "1"),
    ("smoke", {"sragu.tau": "-1"}, "tau", "-1"),
    ("smoke", {"sragu.tau": "abc"}, "sragu.tau", "abc"),
    ("smoke", {"sragu.omega_map": "bogus"}, "sragu.omega_map", "bogus"),
    ("smoke", {"train.lr": "abc"}, "train.lr", "abc"),
    ("smoke", {"data.max_train": "5"}, "data.max_train", "5"),
    ("nope", {}, "preset", "nope"),
])
def test_resolve_refuses_bad_input_naming_the_field(preset, overrides, field_name, value):
    msg = _config_error(resolve, preset, overrides)
    assert field_name in msg and value in msg


# ------------------------------------------------------------------------------------------- regimes
@pytest.mark.parametrize("spec, expected", [
    ("random:0.1", ForgetConfig(regime="random", fraction=0.1)),
    ("high_loss:0.05", ForgetConfig(regime="high_loss", fraction=0.05)),
    ("class:3", ForgetConfig(regime="class", classes=(3,))),
    ("class:3-5", ForgetConfig(regime="class", classes=(3, 5))),
    ("class_concentrated:3:0.5", ForgetConfig(regime="class_concentrated", classes=(3,), neighbor_fraction=0.5)),
])
def test_parse_regime(spec, expected):
    assert parse_regime(spec) == expected


def test_parse_regime_labels():
    assert [parse_regime(s).label() for s in ("random:0.1", "class:3-5", "class_concentrated:3:0.5")] == \
        ["random_10pct", "class_3-5", "class_concentrated_3"]


@pytest.mark.parametrize("spec", ["random", "class:x", "bogus:0.1", "random:0.1:2", "class_concentrated:3",
                                  "random:abc", "class:"])
def test_parse_regime_refuses_bad_forms(spec):
    with pytest.raises(ConfigError) as info:
        parse_regime(spec)
    assert info.value.field == "regimes"
    assert f"regimes={spec!r}" in str(info.value)


# ------------------------------------------------------------------------------------------ command line
# the full bad-input table runs in-process (tests/test_bad_input.py); these rows prove the same through a real
# interpreter, as a user sees it: one for argparse, one refused by config validation, one by preflight
@pytest.mark.parametrize("args, words", [
    (["--preset", "smoke", "--set", "sragu.tau=inf"], ["sragu.tau=", "inf", "finite"]),
    (["--preset", "smoke", "--set", "regimes=[class:11]"], ["regimes=", "class:11", "[0, 9]", "mnist_5k"]),
    (["--preset", "smoke", "--resume"], ["unrecognized", "--resume"]),
])
def test_command_line_bad_input_is_one_error_line_and_exit_2(tmp_path, args, words):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run([sys.executable, "pipelines/benchmark.py", *args, "--out", str(tmp_path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert proc.stdout == ""  # the resolved config is printed only once it is valid
    assert list(tmp_path.iterdir()) == []  # nothing half-written
