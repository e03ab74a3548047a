"""Fans of Linear, grouped, depthwise and transposed convolutions; init_model_."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import initlab.init as I

# (module, hand-computed (fan_in, fan_out)); k = kernel volume
HAND = [
    (nn.Linear(7, 3), (7, 3)),
    (nn.Conv1d(4, 6, 5), (4 * 5, 6 * 5)),
    (nn.Conv2d(8, 12, 3, groups=4), (2 * 9, 3 * 9)),  # each output: 8/4 channels x 9
    (nn.Conv2d(16, 16, 3, groups=16), (9, 9)),  # depthwise
    (nn.Conv2d(16, 32, (3, 5), groups=16), (15, 2 * 15)),  # depthwise, multiplier 2
    (nn.Conv3d(6, 9, 2, groups=3), (2 * 8, 3 * 8)),
    (nn.ConvTranspose1d(4, 6, 5), (4 * 5, 6 * 5)),  # weight [4, 6, 5]
    (nn.ConvTranspose2d(16, 8, 3), (16 * 9, 8 * 9)),  # weight [16, 8, 3, 3]
    (nn.ConvTranspose2d(8, 6, 3, groups=2), (4 * 9, 3 * 9)),  # weight [8, 3, 3, 3]
    (nn.ConvTranspose3d(4, 4, 2, groups=4), (8, 8)),  # depthwise transposed
]


@pytest.mark.parametrize(("module", "expected"), HAND, ids=lambda v: str(v).split("(")[0])
def test_fans_hand_computed(module, expected):
    assert I.fans(module) == expected
    groups = getattr(module, "groups", 1)
    transposed = bool(getattr(module, "transposed", False))
    assert I.fan_in_and_fan_out(module.weight, groups, transposed) == expected


def test_default_fans_equal_torch():
    from torch.nn.init import _calculate_fan_in_and_fan_out as torch_fans

    for shape in [(3, 5), (7, 2, 3), (8, 4, 3, 3), (2, 3, 1, 4, 5)]:
        assert I.fan_in_and_fan_out(torch.empty(shape)) == torch_fans(torch.empty(shape))


def test_torch_helper_is_wrong_for_grouped_and_transposed():
    from torch.nn.init import _calculate_fan_in_and_fan_out as torch_fans

    grouped = nn.Conv2d(8, 12, 3, groups=4)
    assert torch_fans(grouped.weight) == (18, 108) != I.fans(grouped)  # fan_out over-counted
    tconv = nn.ConvTranspose2d(16, 8, 3)
    assert torch_fans(tconv.weight) == (72, 144) == I.fans(tconv)[::-1]  # swapped


def _rademacher_(w: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    # +-1 weights: the conditional variance of a unit is exactly its number of connections.
    with torch.no_grad():
        return w.copy_(torch.randint(0, 2, w.shape, generator=g).float() * 2 - 1)


@pytest.mark.parametrize(
    ("module", "interior"),
    [
        (nn.Conv2d(8, 12, 3, groups=4, bias=False), "input"),
        (nn.ConvTranspose2d(8, 6, 3, groups=2, bias=False), "output"),
    ],
    ids=["grouped_conv", "grouped_conv_transpose"],
)
def test_fans_monte_carlo(module, interior):
    """Var[y] = fan_in Var[x] forward and Var[dx] = fan_out Var[dy] backward, measured."""
    g = torch.Generator().manual_seed(0)
    _rademacher_(module.weight, g)
    fan_in, fan_out = I.fans(module)
    x = torch.randn(64, module.in_channels, 9, 9, generator=g, requires_grad=True)
    y = module(x)
    y.backward(torch.randn(y.shape, generator=g))
    # Units away from the border see (or feed) the whole kernel.
    if interior == "output":  # transposed: outputs 2..8 gather a full 3x3
        y_in, dx_in = y[..., 2:-2, 2:-2], x.grad
    else:  # conv: inputs 2..6 are seen by a full 3x3
        y_in, dx_in = y, x.grad[..., 2:-2, 2:-2]
    # Sample variances of ~2e4 unit-variance-scaled values: relative error ~1e-2.
    assert math.isclose(y_in.var().item(), fan_in, rel_tol=0.06)
    assert math.isclose(dx_in.var().item(), fan_out, rel_tol=0.06)


def test_fans_bad_input():
    with pytest.raises(TypeError, match="module must be an nn.Linear"):
        I.fans(nn.ReLU())
    with pytest.raises(TypeError, match="tensor must be a torch.Tensor"):
        I.fan_in_and_fan_out([[1.0]])
    with pytest.raises(ValueError, match="groups must be an int >= 1"):
        I.fan_in_and_fan_out(torch.empty(4, 2, 3), groups=0)
    with pytest.raises(ValueError, match="groups=3 must divide"):
        I.fan_in_and_fan_out(torch.empty(4, 2, 3), groups=3)
    with pytest.raises(TypeError, match="transposed must be a bool"):
        I.fan_in_and_fan_out(torch.empty(4, 2, 3), transposed="yes")
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        I.fan_in_and_fan_out(torch.empty(4))


def test_variance_scaling_uses_true_fans():
    conv = nn.Conv2d(64, 64, 3, groups=64)  # depthwise: fan_in = fan_out = 9
    w = I.variance_scaling_(
        torch.empty(4096, 1, 3, 3), 2.0, "fan_out", groups=4096, generator=torch.Generator()
    )
    n = w.numel()  # sample variance: relative std sqrt(2/n)
    assert abs(w.var().item() / (2 / 9) - 1) < 5 * math.sqrt(2 / n)
    assert I.fans(conv) == (9, 9)


# ----------------------------------------------------------------- init_model_


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, groups=32),
        nn.ReLU(),
        nn.ConvTranspose2d(32, 16, 3, groups=4),
        nn.Flatten(),
        nn.Linear(16 * 10 * 10, 256),
    )


@pytest.mark.parametrize(
    ("scheme", "nonlinearity", "gain"),
    [
        ("kaiming_normal", "relu", math.sqrt(2)),
        ("kaiming_uniform", "leaky_relu", math.sqrt(2 / 1.0001)),
        ("kaiming_truncated_normal", "relu", math.sqrt(2)),
        ("xavier_uniform", "tanh", 5 / 3),
        ("xavier_normal", None, 1.0),
        ("xavier_uniform", None, 1.0),  # the default: plain Glorot & Bengio, no ReLU gain
        ("kaiming_normal", None, math.sqrt(2)),  # the default: He et al.'s ReLU case
        ("kaiming_uniform", "linear", 1.0),
        ("lecun_normal", "relu", 1.0),  # LeCun ignores the nonlinearity
        ("lecun_uniform", torch.tanh, 1.0),
    ],
)
def test_init_model_std_and_summary(scheme, nonlinearity, gain):
    net = _net()
    summary = I.init_model_(net, scheme, nonlinearity, bias=0.1, generator=torch.Generator())
    assert [r.name for r in summary] == ["0", "2", "4", "6"]
    layers = [net[0], net[2], net[4], net[6]]
    for row, m in zip(summary, layers, strict=True):
        fi, fo = I.fans(m)
        assert (row.fan_in, row.fan_out, row.shape) == (fi, fo, tuple(m.weight.shape))
        fan = (fi + fo) / 2 if scheme.startswith("xavier") else fi
        assert math.isclose(row.std, gain / math.sqrt(fan), rel_tol=1e-12)
        n = m.weight.numel()
        assert abs(m.weight.var().item() / row.std**2 - 1) < 6 * math.sqrt(2 / n) + 1e-3
        assert torch.equal(m.bias, torch.full_like(m.bias, 0.1))
    assert "fan_in" in str(summary)


def test_init_model_orthogonal_and_callable_gain():
    net = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 64))
    g = I.gain_for(torch.tanh)
    summary = I.init_model_(net, "orthogonal", torch.tanh, bias=None)
    w = net[0].weight.detach()
    torch.testing.assert_close(w @ w.T, g**2 * torch.eye(32), atol=1e-5, rtol=1e-5)
    assert math.isclose(summary[0].std, g / math.sqrt(64))
    assert math.isclose(w.std().item(), summary[0].std, rel_tol=0.05)


def test_init_model_generator_and_bias_none():
    a, b = _net(), _net()
    bias_before = b[0].bias.clone()
    I.init_model_(a, generator=torch.Generator().manual_seed(4), bias=None)
    torch.manual_seed(123)
    I.init_model_(b, generator=torch.Generator().manual_seed(4), bias=None)
    assert all(torch.equal(a[i].weight, b[i].weight) for i in (0, 2, 4, 6))
    assert torch.equal(b[0].bias, bias_before)


def test_init_model_bad_input():
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        I.init_model_("net")
    with pytest.raises(ValueError, match="scheme must be one of"):
        I.init_model_(_net(), "he")
    with pytest.raises(ValueError, match="no nn.Linear, nn.Conv"):
        I.init_model_(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        I.init_model_(_net(), nonlinearity="swish")
    with pytest.raises(TypeError, match="nonlinearity must be"):
        I.init_model_(_net(), nonlinearity=3)
    with pytest.raises(TypeError, match="bias must be a real number"):
        I.init_model_(_net(), bias="0")


def test_functional_sanity_kaiming_keeps_relu_signal():
    """He init keeps the second moment of a deep ReLU stack (He et al. 2015, eq. 10)."""
    torch.manual_seed(0)
    layers = [nn.Linear(256, 256, bias=False) for _ in range(20)]
    I.init_model_(nn.Sequential(*layers), "kaiming_normal", "relu")
    x = torch.randn(512, 256)
    h = x
    for lin in layers:
        h = F.relu(lin(h))
    # E[relu(y)^2] = Var[y] / 2 = E[x^2]: each layer keeps the second moment
    ratio = h.pow(2).mean().item() / x.pow(2).mean().item()
    assert 0.5 < ratio < 2.0  # a 20-layer product of random gains; 1 in expectation
