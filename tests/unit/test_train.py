"""Tests for initlab.train: clipping, normalisation, non-finite guard, progress, History, errors."""

import copy
import math
import sys

import numpy as np
import pytest
import torch
from torch import nn

import initlab.train as train
from initlab.data import adding_problem, digits, spirals
from initlab.models import mlp, rnn_regressor
from initlab.train import (
    History,
    NonFiniteError,
    clip_grad_agc_,
    clip_grads_,
    fit,
    normalize_grads_,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy():
    return spirals(n=240, classes=3, seed=0)


def _net(seed=0, **kwargs):
    torch.manual_seed(seed)
    args = {"in_features": 2, "width": 16, "depth": 2, "out_features": 3} | kwargs
    return mlp(**args)


def test_history_records_every_step(toy):
    net = _net()
    h = fit(net, toy, epochs=3, lr=0.1, batch_size=32, progress=False)
    steps = 3 * math.ceil(180 / 32)
    assert isinstance(h, History) and h.steps == steps and h.skipped == 0
    assert len(h.loss) == len(h.grad_norm) == len(h.clipped) == steps
    assert list(h.grad_norm_per_layer) == [n for n, _ in net.named_parameters()]
    per_layer = torch.tensor(list(h.grad_norm_per_layer.values()))
    assert per_layer.shape == (len(h.grad_norm_per_layer), steps)
    torch.testing.assert_close(per_layer.norm(dim=0), torch.tensor(h.grad_norm))
    assert len(h.epoch_loss) == len(h.train_accuracy) == len(h.test_accuracy) == 3
    assert len(h.test_loss) == 3 and h.clipped_fraction == 0.0 and h.seconds > 0
    assert all(0.0 <= a <= 1.0 for a in h.train_accuracy + h.test_accuracy)
    assert "steps=18" in repr(h)


def test_history_clipped_fraction():
    assert History().clipped_fraction == 0.0
    assert History(clipped=[True, False, False, True]).clipped_fraction == 0.5


def test_fit_is_reproducible(toy):
    a = fit(_net(1), toy, epochs=2, lr=0.1, optimizer="momentum", progress=False, seed=3)
    b = fit(_net(1), toy, epochs=2, lr=0.1, optimizer="momentum", progress=False, seed=3)
    c = fit(_net(1), toy, epochs=2, lr=0.1, optimizer="momentum", progress=False, seed=4)
    assert a.loss == b.loss and a.loss != c.loss


def test_clip_norm_matches_clip_grad_norm_step_by_step(toy):
    """fit(clip=("norm", c)) and a hand loop with clip_grad_norm_ stay identical."""
    max_norm, lr, batch, epochs, seed = 0.05, 0.2, 32, 3, 5
    net_a = _net(2)
    net_b = copy.deepcopy(net_a)
    h = fit(
        net_a,
        toy,
        epochs=epochs,
        lr=lr,
        batch_size=batch,
        clip=("norm", max_norm),
        seed=seed,
        progress=False,
    )
    opt = torch.optim.SGD(net_b.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    X, y = toy.X_train, toy.y_train
    norms, losses = [], []
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net_b(X[idx]), y[idx])
            loss.backward()
            losses.append(loss.item())
            norms.append(nn.utils.clip_grad_norm_(net_b.parameters(), max_norm).item())
            opt.step()
    assert h.loss == losses
    assert h.grad_norm == norms
    assert h.clipped == [n > max_norm for n in norms]
    assert h.clipped_fraction > 0.5  # the comparison exercised the clipping branch
    for pa, pb in zip(net_a.parameters(), net_b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def _with_grads(seed, shapes=((5, 4), (5,), (3, 5))):
    g = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = nn.Parameter(torch.randn(shape, generator=g))
        p.grad = 3 * torch.randn(shape, generator=g)
        params.append(p)
    return params


def test_clip_grads_norm_and_value_match_torch():
    for mode, value, reference in [
        ("norm", 1.0, lambda ps: nn.utils.clip_grad_norm_(ps, 1.0)),
        ("norm", 1e6, lambda ps: nn.utils.clip_grad_norm_(ps, 1e6)),
        ("value", 0.5, lambda ps: nn.utils.clip_grad_value_(ps, 0.5)),
        ("value", 1e6, lambda ps: nn.utils.clip_grad_value_(ps, 1e6)),
    ]:
        ours, theirs = _with_grads(0), _with_grads(0)
        clipped = clip_grads_(ours, (mode, value))
        reference(theirs)
        assert clipped == (value < 1e6)
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a.grad, b.grad)
    assert clip_grads_(_with_grads(0), None) is False


def test_agc_unitwise():
    factor, eps = 0.1, 1e-3
    w = nn.Parameter(torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]]))
    w.grad = torch.tensor([[6.0, 8.0], [1.0, 0.0], [0.05, 0.0]])
    b = nn.Parameter(torch.tensor([1.0, 1.0, 1.0, 1.0]))  # one unit, norm 2
    b.grad = torch.tensor([1.0, 0.0, 0.0, 0.0])
    before = w.grad.clone()
    assert clip_grad_agc_([w, b], factor, eps) is True
    # row 0: ||G||/||W|| = 2 > 0.1 -> rescaled to norm 0.1 * 5, same direction
    torch.testing.assert_close(w.grad[0], before[0] * 0.5 / 10)
    # row 1: zero weights -> max(||W||, eps) = eps, norm capped at factor * eps
    torch.testing.assert_close(w.grad[1], torch.tensor([factor * eps, 0.0]))
    # row 2: ratio 0.05 <= 0.1 -> untouched
    assert torch.equal(w.grad[2], before[2])
    # the 1-D parameter is one unit: capped at 0.1 * ||b|| = 0.2, not per element
    torch.testing.assert_close(b.grad, torch.tensor([0.2, 0.0, 0.0, 0.0]))
    # nothing over the threshold -> nothing changes
    w.grad = torch.full((3, 2), 1e-5)
    b.grad = torch.zeros(4)
    assert clip_grad_agc_([w, b], factor, eps) is False
    assert torch.equal(w.grad, torch.full((3, 2), 1e-5))
    with pytest.raises(ValueError, match="factor"):
        clip_grad_agc_([w], 0.0)


def test_agc_ratio_bound_in_fit(toy):
    """After fit's AGC, every unit obeys ||G_i|| <= factor * max(||W_i||, eps) before the step."""
    factor = 0.01
    net = _net(3)
    h = fit(net, toy, epochs=1, lr=0.1, clip=("agc", factor), progress=False)
    assert h.clipped_fraction > 0
    X, y = toy.X_train[:64], toy.y_train[:64]
    net.zero_grad()
    nn.functional.cross_entropy(net(X), y).backward()
    clip_grad_agc_(net.parameters(), factor)
    for p in net.parameters():
        dims = tuple(range(1, p.dim())) if p.dim() > 1 else None
        g_norm = torch.linalg.vector_norm(p.grad, dim=dims)
        w_norm = torch.linalg.vector_norm(p, dim=dims).clamp_min(1e-3)
        assert (g_norm <= factor * w_norm * (1 + 1e-5)).all()


def test_normalize_grads_unit_variance():
    params = _with_grads(1, shapes=((64, 32), (64,), (10, 64)))
    for p in params:
        p.grad.mul_(7.0).add_(2.0)
    raw = [p.grad.clone() for p in params]
    normalize_grads_(params)
    for p, g in zip(params, raw, strict=True):
        std, mean = torch.std_mean(p.grad, correction=0)
        assert abs(mean.item()) < 1e-5 and abs(std.item() - 1) < 1e-5
        # still a descent direction: <normalised, raw> = n * std(raw) > 0
        inner = (p.grad * g).sum()
        torch.testing.assert_close(inner, g.numel() * g.std(correction=0))
    single = nn.Parameter(torch.zeros(1))
    single.grad = torch.tensor([5.0])
    normalize_grads_([single])
    assert single.grad.item() == 0.0


def test_fit_grad_normalize_applies_unit_variance_update(toy):
    """One full-batch SGD step: the update divided by -lr is zero-mean, unit-variance."""
    net = _net(4)
    before = [p.detach().clone() for p in net.parameters()]
    lr = 0.01
    h = fit(net, toy, epochs=1, lr=lr, batch_size=10_000, grad_normalize=True, progress=False)
    assert h.steps == 1
    for p, p0 in zip(net.parameters(), before, strict=True):
        step = (p0 - p.detach()) / lr
        std, mean = torch.std_mean(step, correction=0)
        assert abs(mean.item()) < 1e-3 and abs(std.item() - 1) < 1e-3


def test_grad_normalize_then_clip_sees_normalised_norm(toy):
    net = _net(5)
    h = fit(
        net,
        toy,
        epochs=1,
        lr=0.01,
        grad_normalize=True,
        clip=("norm", 1.0),
        progress=False,
    )
    # normalised gradients have norm sqrt(#params) >> 1, so every step is clipped
    assert h.clipped_fraction == 1.0


def _poison(param, at_call):
    """Make ``param``'s gradient NaN on its ``at_call``-th backward (0-based)."""
    calls = {"n": 0}

    def hook(grad):
        calls["n"] += 1
        return grad * float("nan") if calls["n"] - 1 == at_call else grad

    return param.register_hook(hook)


def test_nonfinite_raise_names_step_loss_and_parameter(toy):
    net = _net(6)
    _poison(net.linear2.weight, at_call=2)
    with pytest.raises(NonFiniteError) as info:
        fit(net, toy, epochs=1, lr=0.1, progress=False)
    err = info.value
    assert err.step == 2 and math.isfinite(err.loss)
    assert err.parameter == "linear2.weight"
    assert "step 2" in str(err) and "'linear2.weight'" in str(err) and f"{err.loss}" in str(err)


def test_nonfinite_raise_on_exploding_net(toy):
    net = _net(7)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1e20)  # an exploding net: three layers of 1e20 overflow float32
    with pytest.raises(NonFiniteError, match="step 0") as info:
        fit(net, toy, epochs=1, lr=0.1, progress=False)
    assert not math.isfinite(info.value.loss) or info.value.parameter is not None


def test_nonfinite_raise_with_huge_learning_rate(toy):
    with pytest.raises(NonFiniteError) as info:
        fit(_net(8), toy, epochs=20, lr=1e12, progress=False)
    assert info.value.step >= 1  # the first step was fine, the updates blew up


def test_nonfinite_skip_counts_and_warns(toy):
    net = _net(9)
    _poison(net.head.bias, at_call=1)
    with pytest.warns(RuntimeWarning, match="skipped 1 of"):
        h = fit(net, toy, epochs=2, lr=0.1, on_nonfinite="skip", progress=False)
    assert h.skipped == 1 and h.steps == len(h.loss) and not math.isfinite(h.grad_norm[1])
    assert h.clipped[1] is False and all(math.isfinite(v) for v in h.epoch_loss)


def test_nonfinite_skip_leaves_weights_untouched(toy):
    net = _net(10)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1e20)
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.warns(RuntimeWarning, match="skipped"):
        h = fit(net, toy, epochs=1, lr=0.1, on_nonfinite="skip", progress=False)
    assert h.skipped == h.steps > 0
    for p, p0 in zip(net.parameters(), before, strict=True):
        assert torch.equal(p, p0)


def test_progress_bar(toy, capsys, monkeypatch):
    fit(_net(), toy, epochs=1, lr=0.1, progress=False)
    assert capsys.readouterr().err == ""
    fit(_net(), toy, epochs=1, lr=0.1, progress=True)
    assert "fit" in capsys.readouterr().err

    class Tty:
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    monkeypatch.delenv("INITLAB_PROGRESS", raising=False)
    assert train._progress_on(None) is True
    monkeypatch.setenv("INITLAB_PROGRESS", "0")
    assert train._progress_on(None) is False
    assert train._progress_on(True) is True
    monkeypatch.setattr(sys, "stderr", None)
    monkeypatch.delenv("INITLAB_PROGRESS")
    assert train._progress_on(None) is False


def test_data_forms_and_mode_restored(toy):
    net = _net(11)
    net.eval()
    h = fit(net, (toy.X_train.numpy(), toy.y_train.numpy()), epochs=1, lr=0.1, progress=False)
    assert not net.training and h.test_accuracy == [] and len(h.train_accuracy) == 1
    X64 = np.asarray(toy.X_train, dtype=np.float64)
    h = fit(net, (X64, toy.y_train, toy.X_test, toy.y_test), epochs=1, lr=0.1, progress=False)
    assert len(h.test_accuracy) == 1


def test_regression_with_rnn():
    d = adding_problem(n=64, seq_len=8, seed=0)
    torch.manual_seed(0)
    h = fit(rnn_regressor(2, 8, cell="gru"), d, epochs=2, lr=1e-2, optimizer="adam", progress=False)
    assert h.train_accuracy == [] and h.test_accuracy == [] and len(h.test_loss) == 2
    assert all(math.isfinite(v) for v in h.loss)
    custom = fit(
        _net(), spirals(n=60), epochs=1, lr=0.1, loss=nn.CrossEntropyLoss(), progress=False
    )
    assert custom.steps == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"clip": ("norm", 0.0)}, "max_norm"),
        ({"clip": ("norm", -1.0)}, "max_norm"),
        ({"clip": ("value", 0)}, "clip value"),
        ({"clip": ("agc", -0.01)}, "agc factor"),
        ({"clip": ("scale", 1.0)}, "clip mode"),
        ({"clip": 1.0}, "clip"),
        ({"on_nonfinite": "ignore"}, "on_nonfinite"),
        ({"loss": "hinge"}, "loss"),
        ({"loss": lambda out, y: out.sum(1)}, "loss must return a scalar"),
    ],
)
def test_bad_arguments(toy, kwargs, match):
    args = {"epochs": 1, "lr": 0.1, "progress": False} | kwargs
    with pytest.raises(ValueError, match=match):
        fit(_net(), toy, **args)


@pytest.mark.parametrize(
    "data, match",
    [
        ((torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)), "empty"),
        ((torch.zeros(5, 2), torch.zeros(4, dtype=torch.long)), "same number of samples"),
        ((torch.zeros(5, 3), torch.zeros(5, dtype=torch.long)), "data: the model cannot take"),
        ((torch.zeros(5, 2), torch.full((5,), 7)), "loss"),
        ((torch.zeros(5, 2), torch.zeros(5, 2)), "loss"),
        ((torch.zeros(5, 2),), "data must be"),
        (
            (torch.zeros(5, 2), torch.zeros(5), torch.zeros(3, 4), torch.zeros(3)),
            "X_test",
        ),
    ],
)
def test_bad_data(data, match):
    with pytest.raises(ValueError, match=match):
        fit(_net(), data, epochs=1, lr=0.1, progress=False)


def test_bad_model():
    with pytest.raises(TypeError, match="model"):
        fit("net", spirals(n=30), epochs=1, lr=0.1)
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit(nn.ReLU(), spirals(n=30), epochs=1, lr=0.1)


def test_digits_two_layer_mlp_reaches_95_percent():
    torch.manual_seed(0)
    net = mlp(64, 128, depth=1, out_features=10)  # linear1 + head: a 2-layer MLP
    h = fit(net, digits(), epochs=20, lr=0.05, optimizer="momentum", progress=False)
    assert h.test_accuracy[-1] >= 0.95
