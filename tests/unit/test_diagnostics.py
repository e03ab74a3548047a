"""Tests for initlab.diagnostics: record, update_ratio, signal_propagation."""

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initlab import diagnostics
from initlab.residual import Residual


def pvar(t):
    return t.detach().double().var(unbiased=False).item()


def two_layer(act=nn.Tanh, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(linear1=nn.Linear(3, 4), act1=act(), head=nn.Linear(4, 2)))


def count_hooks(model):
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def test_record_matches_hand_computation_cross_entropy():
    net = two_layer()
    gen = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(10, 3, generator=gen)  # large inputs: some tanh units saturate
    y = torch.randint(0, 2, (10,), generator=gen)
    W1, b1, W2, b2 = (p.detach() for p in net.parameters())
    h = x @ W1.T + b1
    a = torch.tanh(h)
    out = a @ W2.T + b2
    d_out = (F.softmax(out, dim=1) - F.one_hot(y, 2)) / 10  # mean-reduced cross-entropy
    d_a = d_out @ W2
    d_h = d_a * (1 - a**2)
    expected = {
        "linear1": (h, d_h, W1, d_h.T @ x),
        "act1": (a, d_a, None, None),
        "head": (out, d_out, W2, d_out.T @ a),
    }
    recs = diagnostics.record(net, x, y)
    assert [r.name for r in recs] == ["linear1", "act1", "head"]
    assert [r.kind for r in recs] == ["linear", "activation", "linear"]
    for r in recs:
        val, grad, w, wgrad = expected[r.name]
        assert r.mean == pytest.approx(val.mean().item(), rel=1e-5, abs=1e-7)
        assert r.var == pytest.approx(pvar(val), rel=1e-5)
        assert r.grad_var == pytest.approx(pvar(grad), rel=1e-4)
        if w is None:
            assert math.isnan(r.weight_var) and math.isnan(r.weight_grad_var)
        else:
            assert r.weight_var == pytest.approx(pvar(w), rel=1e-5)
            assert r.weight_grad_var == pytest.approx(pvar(wgrad), rel=1e-4)
    act = recs[1]
    assert act.saturated == pytest.approx((a.abs() > 0.97).float().mean().item())
    assert 0 < act.saturated < 1 and math.isnan(act.dead)
    assert all(p.grad is None for p in net.parameters())  # record leaves .grad alone


def test_record_dead_relu_units_and_mse():
    net = two_layer(nn.ReLU)
    with torch.no_grad():
        net.linear1.bias[1] = -100.0  # unit 1 is never positive: dead
        net.linear1.bias[2] = 100.0  # unit 2 is always positive
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(2))
    target = torch.randn(16, 2, generator=torch.Generator().manual_seed(3))
    recs = diagnostics.record(net, x, target)
    h = net.linear1(x)
    dead = (h <= 0).all(dim=0).float().mean().item()
    assert recs[1].dead == pytest.approx(dead) and dead >= 0.25
    out = net(x)
    d_out = 2 * (out - target) / out.numel()  # mean squared error
    assert recs[2].grad_var == pytest.approx(pvar(d_out), rel=1e-4)
    assert math.isnan(recs[1].saturated)


def test_record_probe_gradient_and_custom_loss():
    net = two_layer()
    x = torch.randn(8, 3)
    recs = diagnostics.record(net, x)
    probe = torch.randn(8, 2, generator=torch.Generator().manual_seed(diagnostics.PROBE_SEED))
    assert recs[-1].grad_var == pytest.approx(pvar(probe), rel=1e-5)
    recs = diagnostics.record(net, x, loss=lambda out: out.sum())
    assert recs[-1].grad_var == 0.0  # d(sum)/d(out) = 1 everywhere
    recs = diagnostics.record(net, x, keep=True)
    assert recs[0].output.shape == (8, 4) and recs[0].grad.shape == (8, 4)


def test_record_conv_and_dead_channels():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
    with torch.no_grad():
        net[0].bias[0] = -50.0
    x = torch.randn(4, 2, 4, 4)
    recs = diagnostics.record(net, x)
    assert [r.kind for r in recs] == ["conv", "activation", "linear"]
    assert recs[1].dead == pytest.approx(1 / 3)


def test_hooks_removed_after_exception():
    net = two_layer()
    before = count_hooks(net)

    def bad_loss(out, target):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        diagnostics.record(net, torch.randn(4, 3), torch.zeros(4), loss=bad_loss)
    assert count_hooks(net) == before
    with pytest.raises(ValueError, match="x"):
        diagnostics.record(net, torch.randn(4, 5))
    assert count_hooks(net) == before
    with pytest.raises(ValueError, match="x"):
        diagnostics.signal_propagation(net, torch.randn(4, 5))
    assert count_hooks(net) == before == 0


def test_record_bad_input():
    net = two_layer()
    with pytest.raises(ValueError, match="x of shape"):
        diagnostics.record(net, torch.randn(4, 7))
    with pytest.raises(ValueError, match="x must be a batch"):
        diagnostics.record(net, torch.randn(1, 3))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        diagnostics.record(net, [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="target"):
        diagnostics.record(net, torch.randn(4, 3), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="target"):
        diagnostics.record(net, torch.randn(4, 3), torch.zeros(4, 3))
    with pytest.raises(TypeError, match="model"):
        diagnostics.record("net", torch.randn(4, 3))


def test_records_table_and_numpy():
    recs = diagnostics.record(two_layer(), torch.randn(8, 3))
    text = str(recs)
    for word in ("name", "grad_var", "saturated", "linear1", "act1", "head"):
        assert word in text
    assert repr(recs) == text
    var = recs.to_numpy("var")
    assert var.dtype == np.float64 and var.shape == (3,)
    assert np.isnan(recs.to_numpy("dead")).all()
    assert recs.select("linear").column("name") == ["linear1", "head"]
    with pytest.raises(ValueError, match="field"):
        recs.to_numpy("name")
    with pytest.raises(ValueError, match="kind"):
        recs.select("conv2d")


def test_update_ratio_lr_and_step():
    net = two_layer()
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    with pytest.raises(ValueError, match="backward"):
        diagnostics.update_ratio(net, 0.1)
    F.cross_entropy(net(x), y).backward()
    ratios = diagnostics.update_ratio(net, 0.1)
    assert list(ratios) == ["linear1.weight", "head.weight"]
    W = net.linear1.weight
    assert ratios["linear1.weight"] == pytest.approx(0.1 * W.grad.norm().item() / W.norm().item())
    before = W.detach().clone()
    stepped = diagnostics.update_ratio(net, torch.optim.SGD(net.parameters(), lr=0.1).step)
    assert not torch.equal(before, W.detach())  # the step was applied
    for name in ratios:
        assert stepped[name] == pytest.approx(ratios[name], rel=1e-4)
    for bad in (0.0, -1.0, "0.1", True):
        with pytest.raises(ValueError, match="step"):
            diagnostics.update_ratio(net, bad)


def test_signal_propagation_plain_residual_and_conv():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh())
    x = torch.randn(32, 5)
    pts = diagnostics.signal_propagation(plain, x)
    assert [p.name for p in pts] == ["1", "3"]
    a = plain[1](plain[0](x))
    assert pts[0].sq_mean == pytest.approx(a.mean(0).pow(2).mean().item(), rel=1e-6)
    assert pts[0].var == pytest.approx(a.var(0, unbiased=False).mean().item(), rel=1e-6)
    name, sq_mean, var = pts[1]  # a plain tuple too

    res = nn.Sequential(
        nn.Linear(5, 6),
        *[Residual(nn.Sequential(nn.ReLU(), nn.Linear(6, 6))) for _ in range(3)],
    )
    pts = diagnostics.signal_propagation(res, x)
    assert [p.name for p in pts] == ["1", "2", "3"]

    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    xc = torch.randn(8, 3, 5, 5)
    (pt,) = diagnostics.signal_propagation(conv, xc)
    y = conv(xc).detach().double()
    assert pt.sq_mean == pytest.approx(y.mean(dim=(0, 2, 3)).pow(2).mean().item(), rel=1e-9)
    assert pt.var == pytest.approx(y.var(dim=(0, 2, 3), unbiased=False).mean().item(), rel=1e-9)
    assert count_hooks(conv) == 0
