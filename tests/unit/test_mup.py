"""Tests for initlab.mup: layer types, init variances, learning rates, the coordinate check,
errors, and agreement with Microsoft's reference package ``mup`` when it is installed."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initlab.data import digits
from initlab.models import gpt, mlp
from initlab.mup import coord_check, loglog_slope, mup_init_, mup_param_groups, mup_params

pytestmark = pytest.mark.usefixtures("one_thread")


def kinds(model, base):
    return {p.name: (p.kind, p.width_mult) for p in mup_params(model, base)}


def test_mlp_layer_types():
    got = kinds(mlp(10, 256, 3, 4), mlp(10, 64, 3, 4))
    assert got["linear1.weight"] == ("input", 4.0)
    assert got["linear1.bias"] == ("input", 4.0)
    assert got["linear2.weight"] == ("hidden", 4.0)
    assert got["linear3.weight"] == ("hidden", 4.0)
    assert got["head.weight"] == ("output", 4.0)
    assert got["head.bias"] == ("fixed", 1.0)


def test_same_width_is_all_fixed():
    net = mlp(10, 32, 2, 4)
    assert {k for k, _ in kinds(net, net).values()} == {"fixed"}


def test_gpt_layer_types():
    got = kinds(gpt(50, 16, 64, 2, heads=4), gpt(50, 16, 32, 2, heads=4))
    assert got["tok_emb.weight"] == ("input", 2.0)  # vocab -> width
    assert got["pos_emb.weight"] == ("input", 2.0)
    assert got["blocks.0.attn.qkv.weight"] == ("hidden", 2.0)
    assert got["blocks.1.mlp.proj.weight"] == ("hidden", 2.0)  # 4n -> n
    assert got["blocks.0.ln1.weight"] == ("input", 2.0)  # a vector of length n
    assert got["head.weight"] == ("output", 2.0)


def test_init_variances():
    # 1024 x 1024 hidden weights: sample variance has relative std sqrt(2 / 1024^2) ~ 0.0014;
    # 10 x 1024 output weights: sqrt(2 / 10240) ~ 0.014. Allow 5 standard errors.
    gen = torch.Generator().manual_seed(0)
    net = mup_init_(mlp(64, 1024, 2, 10), mlp(64, 64, 2, 10), gain=math.sqrt(2), generator=gen)
    m = 1024 / 64
    assert abs(net.linear2.weight.var().item() * 1024 / 2 - 1) < 5 * math.sqrt(2 / 1024**2)
    assert abs(net.linear1.weight.var().item() * 64 / 2 - 1) < 5 * math.sqrt(2 / (64 * 1024))
    assert abs(net.head.weight.var().item() * 1024 * m - 1) < 5 * math.sqrt(2 / 10240)
    assert torch.equal(net.linear1.bias, torch.zeros(1024))
    assert torch.equal(net.head.bias, torch.zeros(10))


def test_init_at_base_width_is_standard():
    gen = torch.Generator().manual_seed(1)
    net = mlp(64, 512, 2, 10)
    mup_init_(net, net, generator=gen)  # every m = 1: LeCun variances everywhere
    assert abs(net.head.weight.var().item() * 512 - 1) < 5 * math.sqrt(2 / 5120)


def test_init_is_reproducible_and_in_place():
    a, b = mlp(8, 32, 1, 2), mlp(8, 32, 1, 2)
    base = mlp(8, 16, 1, 2)
    assert mup_init_(a, base, generator=torch.Generator().manual_seed(3)) is a
    mup_init_(b, base, generator=torch.Generator().manual_seed(3))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_init_layernorm_gains_are_one():
    net = mup_init_(gpt(20, 8, 32, 1), gpt(20, 8, 16, 1))
    assert torch.equal(net.blocks[0].ln1.weight, torch.ones(32))
    assert torch.equal(net.blocks[0].ln1.bias, torch.zeros(32))


@pytest.mark.parametrize(
    ("optimizer", "want"),
    [
        ("adam", {"input": 1.0, "hidden": 1 / 8, "output": 1 / 8, "fixed": 1.0}),
        ("sgd", {"input": 8.0, "hidden": 1.0, "output": 1 / 8, "fixed": 1.0}),
    ],
)
def test_learning_rates(optimizer, want):
    net, base = mlp(16, 256, 2, 3), mlp(16, 32, 2, 3)
    groups = mup_param_groups(net, base, lr=0.01, optimizer=optimizer)
    types = kinds(net, base)
    assert [g["name"] for g in groups] == [n for n, _ in net.named_parameters()]
    for g in groups:
        assert g["lr"] == pytest.approx(0.01 * want[types[g["name"]][0]], rel=1e-12)
    # The groups go straight into torch's optimizers.
    cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    assert len(cls(groups).param_groups) == len(list(net.parameters()))


def test_lr_halves_when_hidden_width_doubles():
    base = mlp(16, 32, 2, 3)
    lr = {
        n: {g["name"]: g["lr"] for g in mup_param_groups(mlp(16, n, 2, 3), base, 1.0)}
        for n in (128, 256)
    }
    assert lr[256]["linear2.weight"] == pytest.approx(lr[128]["linear2.weight"] / 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(lr=0.0), ValueError, "lr"),
        (dict(lr=True), ValueError, "lr"),
        (dict(lr=1e-3, optimizer="rmsprop"), ValueError, "optimizer"),
    ],
)
def test_param_group_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        mup_param_groups(mlp(4, 8, 1, 2), mlp(4, 4, 1, 2), **kwargs)


def test_errors_name_the_argument():
    with pytest.raises(TypeError, match="model"):
        mup_params("net", mlp(4, 4, 1, 2))
    with pytest.raises(TypeError, match="base"):
        mup_params(mlp(4, 4, 1, 2), None)
    with pytest.raises(ValueError, match="same parameters"):
        mup_params(mlp(4, 8, 2, 2), mlp(4, 4, 1, 2))
    with pytest.raises(ValueError, match="gain"):
        mup_init_(mlp(4, 8, 1, 2), mlp(4, 4, 1, 2), gain=-1.0)
    build = lambda n: mlp(4, n, 1, 2)  # noqa: E731
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    with pytest.raises(ValueError, match="widths"):
        coord_check(build, [], x, y, lr=0.1, base_width=4)
    with pytest.raises(ValueError, match="steps"):
        coord_check(build, [4], x, y, lr=0.1, base_width=4, steps=0)
    with pytest.raises(ValueError, match="optimizer"):
        coord_check(build, [4], x, y, lr=0.1, base_width=4, optimizer="lion")
    with pytest.raises(TypeError, match="build"):
        coord_check(3, [4], x, y, lr=0.1, base_width=4)
    with pytest.raises(ValueError, match="values"):
        loglog_slope([1.0], [1.0])


def test_loglog_slope_recovers_powers():
    n = np.array([64, 128, 256, 512])
    values = np.stack([np.ones(4), n, n**-0.5], axis=1)
    np.testing.assert_allclose(loglog_slope(n, values), [0.0, 1.0, -0.5], atol=1e-12)


WIDTHS = [64, 128, 256, 512]
SEEDS = (0, 1, 2)


def _slopes(base_width, optimizer, lr):
    """Per seed: log-log slope of each layer's change against width (3 full-batch steps on
    128 digits; real data: with i.i.d. random inputs the batch gradient is barely aligned
    with any one input, and the width at which μP's scaling takes over grows with the batch)."""
    data = digits()
    x, y = data.X_train[:128], data.y_train[:128]
    out = []
    for seed in SEEDS:
        cc = coord_check(
            lambda n: mlp(64, n, 2, 10),
            WIDTHS,
            x,
            y,
            lr=lr,
            base_width=base_width,
            optimizer=optimizer,
            steps=3,
            seeds=(seed,),
            gain=math.sqrt(2),
        )
        out.append(loglog_slope(WIDTHS, cc.delta))
    return np.array(out)


@pytest.mark.parametrize(("optimizer", "lr"), [("adam", 1e-2), ("sgd", 0.1)])
def test_coordinate_check_mup_is_flat(optimizer, lr):
    """μP: every layer's change after 3 steps is constant in width (slope 0).

    Tolerance: the mean slope over len(SEEDS) seeds has standard error s / sqrt(len(SEEDS)),
    s the seed-to-seed spread of one slope (fitted over len(WIDTHS) widths, a factor 8);
    allow 4 of those plus 0.1 for the finite-width correction at the smallest width.
    """
    slopes = _slopes(64, optimizer, lr)
    mean = slopes.mean(0)
    se = slopes.std(0, ddof=1) / math.sqrt(len(SEEDS))
    assert np.all(np.abs(mean) < 0.1 + 4 * se), (mean, se)


def test_coordinate_check_sp_adam_grows():
    """SP with Adam: the hidden and output layers' changes grow like the width (slope ~1)."""
    slopes = _slopes(None, "adam", 1e-2)
    mean = slopes.mean(0)
    se = slopes.std(0, ddof=1) / math.sqrt(len(SEEDS))
    assert np.all(mean[1:] > 1 - 0.3 - 4 * se[1:]), (mean, se)


# --- agreement with Microsoft's reference implementation, mup 1.0.0 -------------------------


class _MuMLP(nn.Module):
    def __init__(self, width):
        super().__init__()
        from mup import MuReadout

        self.linear1 = nn.Linear(16, width)
        self.linear2 = nn.Linear(width, width)
        self.head = MuReadout(width, 5)

    def forward(self, x):
        return self.head(torch.relu(self.linear2(torch.relu(self.linear1(x)))))


class _Plain(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.linear1 = nn.Linear(16, width)
        self.linear2 = nn.Linear(width, width)
        self.head = nn.Linear(width, 5)

    def forward(self, x):
        return self.head(torch.relu(self.linear2(torch.relu(self.linear1(x)))))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_same_training_as_reference_mup(optimizer):
    """Same effective network, 5 steps of mup.MuAdam / mup.MuSGD vs our parameter groups.

    mup's MuReadout divides its input by m and keeps a weight m times larger; our output layer
    holds the effective weight W / m directly (Tensor Programs V, Table 8 vs Table 3). The
    two parametrizations must then follow the same function through training.
    """
    mup = pytest.importorskip("mup")
    torch.manual_seed(0)
    width, base_width, lr = 256, 32, (3e-3 if optimizer == "adam" else 0.05)
    ref = _MuMLP(width)
    mup.set_base_shapes(ref, _MuMLP(base_width), rescale_params=True)
    ours = _Plain(width)
    m = width / base_width
    with torch.no_grad():
        for name, p in ours.named_parameters():
            q = dict(ref.named_parameters())[name]
            p.copy_(q / m if name == "head.weight" else q)
    opt_ref = (mup.MuAdam if optimizer == "adam" else mup.MuSGD)(ref.parameters(), lr=lr)
    groups = mup_param_groups(ours, _Plain(base_width), lr, optimizer)
    opt_ours = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(groups)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 16, generator=gen), torch.randint(0, 5, (64,), generator=gen)
    torch.testing.assert_close(ours(x), ref(x))
    for _ in range(5):
        for net, opt in ((ref, opt_ref), (ours, opt_ours)):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    # Adam's eps acts on gradients m times smaller in mup's readout: agreement to ~1e-5.
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(ref(x), _Plain(width)(x))  # the test compares something


def test_readout_init_scales_like_reference_mup():
    """mup's effective readout weight (weight / m) has variance proportional to 1 / (n m),
    as our output layer: the ratio between two widths is the same."""
    mup = pytest.importorskip("mup")
    torch.manual_seed(0)

    def effective_var(width):
        net = _MuMLP(width)
        mup.set_base_shapes(net, _MuMLP(64), rescale_params=True)
        return (net.head.weight / (width / 64)).var().item()

    ours = {
        n: mup_init_(mlp(16, n, 2, 5), mlp(16, 64, 2, 5)).head.weight.var().item()
        for n in (64, 1024)
    }
    ratio_ref = effective_var(1024) / effective_var(64)
    ratio_ours = ours[1024] / ours[64]
    # Both ~ (64 / 1024)^2; each variance of 5 x n uniform/normal samples has relative std
    # <= sqrt(2 / 320) = 0.08, so each ratio is within ~25 % of it.
    assert ratio_ref == pytest.approx((64 / 1024) ** 2, rel=0.35)
    assert ratio_ours == pytest.approx((64 / 1024) ** 2, rel=0.35)
