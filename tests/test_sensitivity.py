"""AGU sensitivity against a hand computation on a linear softmax model."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from torch import nn

from sragu_core.data import Split
from sragu_core.sensitivity import forget_sensitivity, normalise_global_max


def test_sensitivity_matches_hand_computation():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    # by hand: for a batch B with mean CE, dL/dW = (softmax − onehot)ᵀ x / |B|, dL/db = mean(softmax − onehot)
    expected_w = torch.zeros(2, 3, dtype=torch.float64)
    expected_b = torch.zeros(2, dtype=torch.float64)
    for sl in (slice(0, 2), slice(2, 4), slice(4, 5)):  # batch_size 2 → batches of 2, 2, 1
        xb, yb = x[sl], y[sl]
        with torch.no_grad():
            err = torch.softmax(model(xb), 1) - nn.functional.one_hot(yb, 2).double()
        expected_w += (err.T @ xb / len(xb)) ** 2
        expected_b += (err.mean(0)) ** 2
    sens = forget_sensitivity(model, Split(x, y), batch_size=2, device="cpu")
    torch.testing.assert_close(sens["weight"], expected_w)
    torch.testing.assert_close(sens["bias"], expected_b)
    s_hat = normalise_global_max(sens)
    top = max(expected_w.max(), expected_b.max())
    torch.testing.assert_close(s_hat["weight"], expected_w / top)
    assert max(float(v.max()) for v in s_hat.values()) == 1.0  # one global max, not per tensor
    assert min(float(v.max()) for v in s_hat.values()) < 1.0


def test_sensitivity_leaves_model_mode_and_weights():
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.Linear(3, 2))
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    forget_sensitivity(model, Split(torch.randn(6, 4), torch.tensor([0, 1, 0, 1, 0, 1])), batch_size=4, device="cpu")
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_all_zero_sensitivity_stays_zero():
    s = normalise_global_max({"w": torch.zeros(3)})
    assert torch.equal(s["w"], torch.zeros(3))
