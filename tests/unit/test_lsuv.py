"""LSUV: every layer reaches the target std; order, modes, hooks and errors."""

import pytest
import torch
from torch import nn

from initlab.lsuv import lsuv_


def mlp(depth: int = 20, width: int = 64, act=nn.Tanh) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(16, width), act()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), act()]
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.5),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def output_stds(model: nn.Module, x: torch.Tensor) -> dict[nn.Module, float]:
    """Each weighted layer's output std in a plain forward pass (measured independently)."""
    stds = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o: stds.__setitem__(m, o.std().item()))
        for m in model.modules()
        if getattr(m, "weight", None) is not None and m.weight.dim() >= 2
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return stds


@pytest.mark.parametrize(("act", "target", "tol"), [(nn.Tanh, 1.0, 0.1), (nn.ReLU, 0.5, 0.02)])
def test_mlp_20_layers_every_layer_within_tol(act, target, tol):
    torch.manual_seed(0)
    model, x = mlp(20, act=act), torch.randn(256, 16)
    result = lsuv_(model, x, target_std=target, tol=tol, generator=torch.Generator().manual_seed(0))
    assert len(result) == 20
    assert all(abs(r.std - target) < tol for r in result)
    measured = output_stds(model, x)
    assert len(measured) == 20 and all(abs(s - target) < tol for s in measured.values())
    assert "iterations" in str(result)


def test_small_cnn_every_layer_within_tol_and_modes_restored():
    torch.manual_seed(1)
    model, x = cnn(), torch.randn(32, 3, 16, 16)
    model.train()
    model[1].eval()  # a mixed state must come back as it was
    running_mean = model[1].running_mean.clone()
    result = lsuv_(model, x)
    assert [r.name for r in result] == ["0", "3", "7", "11"]
    assert model.training and not model[1].training and model[6].training
    assert torch.equal(model[1].running_mean, running_mean)  # eval pass: BN stats untouched
    model.eval()
    assert all(abs(s - 1.0) < 0.1 for s in output_stds(model, x).values())


class Reordered(nn.Module):
    """Registration order (a, b) differs from execution order (b, a)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(32, 4)
        self.b = nn.Linear(8, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(torch.relu(self.b(x)))


class Custom(nn.Module):
    """Any module with a `weight` takes part."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T


def test_execution_order_and_custom_weight_modules():
    model = Reordered()
    result = lsuv_(model, torch.randn(64, 8))
    assert [r.name for r in result] == ["b", "a"]
    model = nn.Sequential(Custom(), nn.Tanh(), Custom())
    result = lsuv_(model, torch.randn(64, 8), orthogonal=False)
    assert [r.name for r in result] == ["0", "2"]
    assert all(abs(r.std - 1) < 0.1 for r in result)


def test_no_orthogonal_pre_init_and_generator():
    a, b = mlp(4), mlp(4)
    b.load_state_dict(a.state_dict())
    x = torch.randn(128, 16)
    lsuv_(a, x, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(99)
    lsuv_(b, x, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    c = mlp(4)
    before = c[0].weight.clone()
    res = lsuv_(c, x, orthogonal=False, tol=10.0)  # nothing to do: weights untouched
    assert torch.equal(c[0].weight, before) and all(r.iterations == 0 for r in res)


def test_tuple_batch_and_non_converging_warns():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x, y):
            return self.lin(x + y)

    res = lsuv_(Two(), (torch.randn(32, 4), torch.randn(32, 4)))
    assert len(res) == 1
    model = nn.Sequential(nn.Linear(8, 8))
    with torch.no_grad():
        model[0].bias.copy_(torch.linspace(-10, 10, 8))  # spread alone has std > 1
    with pytest.warns(RuntimeWarning, match="not within tol"):
        res = lsuv_(model, torch.randn(64, 8), max_iter=3, orthogonal=False)
    assert res[0].iterations == 3 and res[0].std > 1.1


def test_hooks_removed_and_mode_restored_on_error():
    model = mlp(4)
    model.train()
    with pytest.raises(ValueError, match="does not fit the model"):
        lsuv_(model, torch.randn(8, 5))
    assert model.training and all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())


def test_bad_input():
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        lsuv_("model", torch.randn(2, 2))
    with pytest.raises(ValueError, match="no module with a weight"):
        lsuv_(nn.Sequential(nn.ReLU()), torch.randn(2, 2))
    with pytest.raises(ValueError, match="target_std must be .* > 0"):
        lsuv_(mlp(3), torch.randn(8, 16), target_std=0.0)
    with pytest.raises(ValueError, match="tol must be"):
        lsuv_(mlp(3), torch.randn(8, 16), tol=-0.1)
    with pytest.raises(ValueError, match="max_iter must be an int >= 1"):
        lsuv_(mlp(3), torch.randn(8, 16), max_iter=0)
    with pytest.raises(TypeError, match="max_iter must be an int"):
        lsuv_(mlp(3), torch.randn(8, 16), max_iter=2.5)
    with pytest.raises(TypeError, match="batch must be a tensor"):
        lsuv_(mlp(3), [[1.0] * 16])
    with pytest.raises(TypeError, match="orthogonal must be a bool"):
        lsuv_(mlp(3), torch.randn(8, 16), orthogonal=1)
    with pytest.raises(ValueError, match="does not fit the model"):
        lsuv_(mlp(3), torch.randn(8, 15))
    dead = nn.Sequential(nn.Linear(4, 4, bias=False), nn.ReLU(), nn.Linear(4, 4))
    with pytest.raises(ValueError, match="output std"):
        lsuv_(dead, torch.zeros(16, 4), orthogonal=False)  # constant batch: std 0


def test_wide_mlp_one_rescaling_per_layer():
    """Without biases a Linear layer's std is linear in its weight: one rescaling suffices."""
    torch.manual_seed(0)
    model = nn.Sequential(
        *[m for _ in range(8) for m in (nn.Linear(128, 128, bias=False), nn.ReLU())]
    )
    result = lsuv_(model, torch.randn(256, 128), tol=1e-3)
    assert all(r.iterations <= 1 and abs(r.std - 1) < 1e-3 for r in result)
