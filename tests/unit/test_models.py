"""Tests for initlab.models: names, shapes, activations, errors."""

import pytest
import torch
from torch import nn

from initlab.models import (
    ACTIVATIONS,
    MLP,
    ScaledSigmoid,
    activation,
    mlp,
    rnn_regressor,
)
from initlab.residual import Residual

NAMES = ["linear", "tanh", "sigmoid", "relu", "leaky_relu", "gelu", "selu", "scaled_sigmoid"]


def test_activation_names_match_contract():
    assert sorted(ACTIVATIONS) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_activation_module_matches_function(name):
    x = torch.linspace(-4, 4, 101)
    module = activation(name)
    assert isinstance(module, nn.Module)
    torch.testing.assert_close(module(x), ACTIVATIONS[name](x))


def test_activation_specifics():
    assert isinstance(activation("linear"), nn.Identity)
    assert isinstance(activation("scaled_sigmoid"), ScaledSigmoid)
    assert activation("leaky_relu", negative_slope=0.1).negative_slope == 0.1
    x = torch.linspace(-3, 3, 61)
    torch.testing.assert_close(ACTIVATIONS["scaled_sigmoid"](x), 4 * torch.sigmoid(x) - 2)
    # zero at 0, slope 1 at 0
    x0 = torch.zeros(1, requires_grad=True)
    ACTIVATIONS["scaled_sigmoid"](x0).backward()
    assert x0.grad.item() == pytest.approx(1.0)


def test_activation_errors():
    with pytest.raises(ValueError, match="activation.*relu.*'swish'"):
        activation("swish")
    with pytest.raises(TypeError, match="relu"):
        activation("relu", negative_slope=0.1)


@pytest.mark.parametrize("norm", [None, "batch", "layer"])
def test_mlp_plain_names_and_shapes(norm):
    net = mlp(5, 7, 3, 2, activation="tanh", norm=norm)
    assert isinstance(net, MLP) and isinstance(net, nn.Sequential)
    assert net.activation_name == "tanh"
    expected = []
    for i in (1, 2, 3):
        expected += [f"linear{i}"] + ([f"norm{i}"] if norm else []) + [f"act{i}"]
    expected.append("head")
    assert [n for n, _ in net.named_children()] == expected
    assert (net.linear1.in_features, net.linear1.out_features) == (5, 7)
    assert (net.linear3.in_features, net.linear3.out_features) == (7, 7)
    assert (net.head.in_features, net.head.out_features) == (7, 2)
    assert isinstance(net.act2, nn.Tanh)
    if norm == "batch":
        assert isinstance(net.norm1, nn.BatchNorm1d)
    if norm == "layer":
        assert isinstance(net.norm1, nn.LayerNorm)
    assert net(torch.randn(4, 5)).shape == (4, 2)


@pytest.mark.parametrize("norm", [None, "layer"])
def test_mlp_residual_structure(norm):
    net = mlp(5, 6, 2, 3, activation="relu", residual=True, norm=norm)
    assert [n for n, _ in net.named_children()] == ["stem", "block1", "block2", "head"]
    assert isinstance(net.block1, Residual)
    branch_names = [n for n, _ in net.block1.branch.named_children()]
    expected = ["linear1"] + (["norm1"] if norm else []) + ["act", "linear2"]
    expected += ["norm2"] if norm else []
    assert branch_names == expected
    x = torch.randn(3, 5)
    assert net(x).shape == (3, 3)
    # the block is x + F(x), with no activation after the sum
    h = torch.randn(3, 6)
    torch.testing.assert_close(net.block2(h), h + net.block2.branch(h))


def test_mlp_bias_and_default_init():
    net = mlp(10, 20, 1, 3, bias=False)
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Linear))
    # default PyTorch init kept: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert net.linear1.weight.abs().max() <= 1 / 10**0.5


def test_mlp_activation_kwargs():
    net = mlp(3, 4, 2, 1, activation="leaky_relu", activation_kwargs={"negative_slope": 0.2})
    assert net.act1.negative_slope == 0.2 and net.act2 is not net.act1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_features": 0}, "in_features"),
        ({"width": -1}, "width"),
        ({"depth": 0}, "depth"),
        ({"out_features": 2.5}, "out_features"),
        ({"activation": "softplus2"}, "activation"),
        ({"norm": "group"}, "norm"),
    ],
)
def test_mlp_errors(kwargs, match):
    args = {"in_features": 3, "width": 4, "depth": 2, "out_features": 1} | kwargs
    with pytest.raises(ValueError, match=match):
        mlp(**args)


@pytest.mark.parametrize("cell, cls", [("rnn", nn.RNN), ("lstm", nn.LSTM), ("gru", nn.GRU)])
def test_rnn_models(cell, cls):
    net = rnn_regressor(2, 8, 3, cell=cell, num_layers=2)
    assert isinstance(net.rnn, cls) and net.rnn.batch_first and net.rnn.num_layers == 2
    assert isinstance(net.head, nn.Linear)
    x = torch.randn(4, 9, 2)
    assert net(x).shape == (4, 3)
    # read-out is the head applied to the last time step
    out, _ = net.rnn(x)
    torch.testing.assert_close(net(x), net.head(out[:, -1]))
    reg = rnn_regressor(2, 8, cell=cell)
    assert reg(x).shape == (4,)
    assert rnn_regressor(2, 8, 2, cell=cell)(x).shape == (4, 2)


def test_rnn_relu_and_errors():
    assert rnn_regressor(2, 4, 2, nonlinearity="relu").rnn.nonlinearity == "relu"
    with pytest.raises(ValueError, match="cell"):
        rnn_regressor(2, 4, 2, cell="transformer")
    with pytest.raises(ValueError, match="nonlinearity"):
        rnn_regressor(2, 4, 2, nonlinearity="gelu")
    with pytest.raises(ValueError, match="nonlinearity"):
        rnn_regressor(2, 4, cell="lstm", nonlinearity="relu")
    with pytest.raises(ValueError, match="hidden"):
        rnn_regressor(2, 0)
    with pytest.raises(ValueError, match="batch, time, features"):
        rnn_regressor(2, 4)(torch.zeros(3, 2))


# --- the small GPT (initlab.models.gpt, gpt2_init_) -------------------------------------


def _tokens(batch=3, time=16, vocab=50, seed=0):
    return torch.randint(0, vocab, (batch, time), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_gpt_shapes_and_names(norm):
    from initlab.models import GPT, gpt

    net = gpt(50, 16, 32, depth=2, heads=4, norm=norm)
    assert isinstance(net, GPT)
    assert net(_tokens()).shape == (3, 16, 50)
    names = {n for n, _ in net.named_modules()}
    assert {
        "blocks.0.attn.qkv",
        "blocks.0.attn.proj",
        "blocks.1.mlp.fc",
        "blocks.1.mlp.proj",
    } <= names
    assert isinstance(net.ln_f, nn.LayerNorm if norm == "pre" else nn.Identity)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_gpt_is_causal(norm):
    """Changing token t changes no logit at positions before t."""
    from initlab.models import gpt

    torch.manual_seed(0)
    net = gpt(50, 16, 32, depth=2, heads=4, norm=norm)
    x = _tokens()
    x2 = x.clone()
    x2[:, 10] = (x2[:, 10] + 1) % 50
    with torch.no_grad():
        a, b = net(x), net(x2)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_gpt_attention_matches_explicit_formula():
    """softmax(q k^T / sqrt(d_k) + causal mask) v, written out, for one head."""
    from initlab.models import gpt

    torch.manual_seed(0)
    net = gpt(20, 8, 16, depth=1, heads=1)
    attn = net.blocks[0].attn
    h = torch.randn(2, 8, 16)
    q, k, v = attn.qkv(h).split(16, dim=2)
    scores = q @ k.transpose(1, 2) / 4.0  # d_k = 16
    scores = scores.masked_fill(torch.ones(8, 8).triu(1).bool(), float("-inf"))
    want = attn.proj(torch.softmax(scores, -1) @ v)
    torch.testing.assert_close(attn(h), want, rtol=1e-5, atol=1e-6)


def test_gpt_tied_embedding():
    from initlab.models import gpt

    net = gpt(50, 16, 32, depth=1, tie=True)
    assert net.head.weight is net.tok_emb.weight
    assert gpt(50, 16, 32, depth=1).head.weight is not gpt(50, 16, 32, depth=1).tok_emb.weight


def test_gpt2_init_stds():
    """0.02 everywhere, 0.02 / sqrt(2L) on the residual projections; biases 0, LN gains 1.
    Each std is estimated from >= 64^2 samples: relative standard error <= 1 / sqrt(2 * 4096)
    = 0.011; allow 5."""
    from initlab.models import gpt, gpt2_init_

    depth = 8
    net = gpt(100, 16, 64, depth=depth)
    assert gpt2_init_(net, generator=torch.Generator().manual_seed(0)) is net
    for name, p in net.named_parameters():
        if name.endswith("proj.weight"):
            want = 0.02 / (2 * depth) ** 0.5
        elif name.startswith("blocks") and name.endswith(("ln1.weight", "ln2.weight")):
            assert torch.equal(p, torch.ones_like(p))
            continue
        elif name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
            continue
        elif name == "ln_f.weight":
            continue
        else:
            want = 0.02
        assert abs(p.std().item() / want - 1) < 5 / (2 * p.numel()) ** 0.5, name
    flat = gpt2_init_(gpt(100, 16, 64, depth=depth), residual_scaling=False)
    assert abs(flat.blocks[0].mlp.proj.weight.std().item() / 0.02 - 1) < 5 / (2 * 64 * 256) ** 0.5


def test_gpt_errors():
    from initlab.models import gpt, gpt2_init_

    with pytest.raises(ValueError, match="norm"):
        gpt(10, 4, 8, 1, norm="sandwich")
    with pytest.raises(ValueError, match="divisible"):
        gpt(10, 4, 10, 1, heads=4)
    with pytest.raises(ValueError, match="depth"):
        gpt(10, 4, 8, 0)
    with pytest.raises(TypeError, match="tie"):
        gpt(10, 4, 8, 1, tie=1)
    with pytest.raises(ValueError, match="context"):
        gpt(10, 4, 8, 1)(torch.zeros(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="idx"):
        gpt(10, 4, 8, 1)(torch.zeros(2, 4))
    with pytest.raises(TypeError, match="model"):
        gpt2_init_(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="std"):
        gpt2_init_(gpt(10, 4, 8, 1), std=0.0)
