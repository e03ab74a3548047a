"""Residual schemes: zero-init-residual, Fixup, ReZero, SkipInit (and the existing Residual)."""

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

import initlab.init as I
from initlab.residual import (
    Residual,
    ReZero,
    SkipInit,
    fixup_,
    fixup_scale,
    zero_init_residual_,
)


def branch(width: int = 16, norm: str | None = None) -> nn.Sequential:
    layers = OrderedDict(linear1=nn.Linear(width, width))
    if norm == "batch":
        layers["norm1"] = nn.BatchNorm1d(width)
    layers["act"] = nn.ReLU()
    layers["linear2"] = nn.Linear(width, width)
    if norm == "batch":
        layers["norm2"] = nn.BatchNorm1d(width)
    elif norm == "layer":
        layers["norm2"] = nn.LayerNorm(width)
    return nn.Sequential(layers)


def resnet(blocks: int = 4, norm: str | None = None, width: int = 16) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            stem=nn.Linear(8, width),
            **{f"block{i + 1}": Residual(branch(width, norm)) for i in range(blocks)},
        )
    )


def test_residual_behaviour_kept():
    block = Residual(branch(), branch_scale=0.5)
    x = torch.randn(4, 16)
    torch.testing.assert_close(block(x), x + 0.5 * block.branch(x))
    assert "branch_scale=0.5" in repr(block)
    with pytest.raises(TypeError, match="branch must be an nn.Module"):
        Residual(lambda x: x)


@pytest.mark.parametrize("norm", [None, "batch", "layer"])
def test_zero_init_residual_identity_at_init(norm):
    model = resnet(3, norm)
    model.train()
    names = zero_init_residual_(model)
    last = "norm2" if norm else "linear2"
    assert names == [f"block{i}.branch.{last}" for i in (1, 2, 3)]
    x = torch.randn(32, 8)
    h = model.stem(x)
    assert torch.equal(model(x), h)  # every block is exactly the identity
    for i in (1, 2, 3):
        zeroed = getattr(getattr(model, f"block{i}").branch, last)
        assert torch.count_nonzero(zeroed.weight) == 0
        if norm:  # the linear before the norm keeps its init
            assert torch.count_nonzero(getattr(model, f"block{i}").branch.linear2.weight) > 0


def test_zero_init_residual_gradients_reach_zeroed_weights():
    model = resnet(2, "batch")
    zero_init_residual_(model)
    model(torch.randn(16, 8)).pow(2).sum().backward()
    assert model.block1.branch.norm2.weight.grad.abs().sum() > 0


def test_zero_init_residual_norm_then_activation_and_conv():
    conv_branch = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    model = nn.Sequential(Residual(conv_branch), Residual(nn.Sequential(nn.Conv2d(4, 4, 1))))
    assert zero_init_residual_(model) == ["0.branch.1", "1.branch.0"]
    x = torch.randn(2, 4, 5, 5)
    model.eval()
    assert torch.equal(model(x), x)


def test_zero_init_residual_bad_input():
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        zero_init_residual_([1])
    with pytest.raises(ValueError, match="no initlab.residual.Residual"):
        zero_init_residual_(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="no normalisation, Linear or Conv"):
        zero_init_residual_(nn.Sequential(Residual(nn.ReLU())))


@pytest.mark.parametrize(
    ("L", "m", "expected"),
    [(16, 2, 0.25), (1, 2, 1.0), (8, 3, 8**-0.25), (100, 2, 0.1), (27, 4, 1 / math.sqrt(3))],
)
def test_fixup_scale_values(L, m, expected):
    assert math.isclose(fixup_scale(L, m), expected, rel_tol=1e-12)


def test_fixup_scale_bad_input():
    with pytest.raises(ValueError, match="layers_per_branch must be an int >= 2"):
        fixup_scale(4, 1)
    with pytest.raises(ValueError, match="num_blocks must be an int >= 1"):
        fixup_scale(0, 2)
    with pytest.raises(TypeError, match="num_blocks must be an int"):
        fixup_scale(4.0, 2)
    with pytest.raises(TypeError, match="layers_per_branch must be an int"):
        fixup_scale(4, True)


def test_fixup_applies_scale_zeroes_last_and_biases():
    torch.manual_seed(0)
    model = resnet(9)
    I.init_model_(model, "kaiming_normal", "relu", bias=0.3)
    before = {n: p.clone() for n, p in model.named_parameters()}
    scales = fixup_(model)
    assert scales == {f"block{i}": pytest.approx(9**-0.5) for i in range(1, 10)}
    for i in range(1, 10):
        b = getattr(model, f"block{i}").branch
        pre = f"block{i}.branch."
        torch.testing.assert_close(b.linear1.weight, before[pre + "linear1.weight"] / 3)
        assert torch.count_nonzero(b.linear1.bias) == 0
        assert (
            torch.count_nonzero(b.linear2.weight) == 0 and torch.count_nonzero(b.linear2.bias) == 0
        )
    assert torch.equal(model.stem.weight, before["stem.weight"])  # outside the branches
    x = torch.randn(4, 8)
    assert torch.equal(model(x), model.stem(x))


def test_fixup_bad_input():
    with pytest.raises(ValueError, match="no initlab.residual.Residual"):
        fixup_(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="layers_per_branch must be >= 2"):
        fixup_(nn.Sequential(Residual(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))))


def test_rezero_identity_at_init_and_alpha_learns():
    block = ReZero(branch())
    assert isinstance(block.alpha, nn.Parameter) and block.alpha.item() == 0.0
    x = torch.randn(8, 16)
    y = block(x)
    assert torch.equal(y, x)
    y.pow(2).sum().backward()
    # d/d alpha sum((x + a F)^2) at a = 0 is 2 <x, F(x)>
    expected = 2 * (x * block.branch(x)).sum()
    torch.testing.assert_close(block.alpha.grad, expected.detach())
    assert ReZero(branch(), alpha=0.5).alpha.item() == 0.5
    with pytest.raises(TypeError, match="branch must be an nn.Module"):
        ReZero("branch")
    with pytest.raises(TypeError, match="alpha must be a real number"):
        ReZero(branch(), alpha="0")


def test_skipinit_gate_in_residual_branch():
    gate = SkipInit()
    block = Residual(nn.Sequential(nn.Linear(16, 16), nn.ReLU(), gate))
    x = torch.randn(8, 16)
    y = block(x)
    assert torch.equal(y, x)
    y.sum().backward()
    assert gate.alpha.grad is not None and gate.alpha.grad.abs() > 0
    # the zero gate blocks the gradient to the branch weights until alpha moves
    assert torch.count_nonzero(block.branch[0].weight.grad) == 0
    assert "alpha=0" in repr(gate)
    with pytest.raises(TypeError, match="alpha must be a real number"):
        SkipInit(alpha=None)


def test_rezero_and_skipinit_count_as_blocks():
    model = nn.Sequential(ReZero(branch()), ReZero(branch()))
    assert len(fixup_(model)) == 2
    assert zero_init_residual_(model) == ["0.branch.linear2", "1.branch.linear2"]
