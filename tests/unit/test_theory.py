"""Tests for initlab.theory: mean-field predictions vs Monte Carlo, and the phase diagram."""

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from initlab import theory
from initlab.diagnostics import record
from initlab.residual import Residual

pytestmark = pytest.mark.usefixtures("one_thread")


ACT = {"linear": nn.Identity, "tanh": nn.Tanh, "relu": nn.ReLU}
# Weight variance of each scheme for a layer (fan_in, fan_out); Kaiming = He et al. 2015's
# 2/fan_in for every activation (the scheme is fixed, the activation varies).
SCHEME = {
    "xavier": lambda fi, fo: 2.0 / (fi + fo),
    "kaiming": lambda fi, fo: 2.0 / fi,
    "lecun": lambda fi, fo: 1.0 / fi,
}


def make_mlp(in_f, width, depth, out_f, act, scheme, gen, bias_std=0.0):
    """The layout of initlab.models.mlp(residual=False): linear1, act1, ..., head."""
    layers = OrderedDict()
    dims = [in_f] + [width] * depth
    for k in range(depth):
        layers[f"linear{k + 1}"] = nn.Linear(dims[k], width)
        layers[f"act{k + 1}"] = ACT[act]()
    layers["head"] = nn.Linear(width, out_f)
    net = nn.Sequential(layers)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                std = math.sqrt(SCHEME[scheme](m.in_features, m.out_features))
                m.weight.normal_(0.0, std, generator=gen)
                m.bias.normal_(0.0, 1.0, generator=gen).mul_(bias_std)
    return net


WIDTH, BATCH, DEPTH, IN, OUT = 512, 32, 50, 64, 10
# Per-layer relative variance of a layer's mean square over its units that compounds with
# depth: Var[phi(h)^2] / E[phi(h)^2]^2 = 2 for Gaussian h (linear; tanh is lighter-tailed,
# so <= 2) and 5 for ReLU (E[relu^4] = 3q^2/2, E[relu^2] = q/2).
KURT = {"linear": 2.0, "tanh": 2.0, "relu": 5.0}


@pytest.mark.parametrize("scheme", ["xavier", "kaiming", "lecun"])
@pytest.mark.parametrize("act", ["linear", "tanh", "relu"])
def test_predict_matches_monte_carlo(act, scheme):
    r"""Predicted vs measured per-layer variances, depth 1..50, width 512, batch 32.

    Tolerance on |log(measured / predicted)| at the l-th layer (forward) is 4 standard
    deviations of two independent noise sources:

    * sampling: a variance estimated from n = batch*width roughly independent Gaussian
      entries has relative std sqrt(2/n) (for the gradient at the output, n = batch*10);
    * finite width: each layer's mean square over its n_k output units fluctuates with
      relative variance kappa/n_k (kappa = 2 linear/tanh, 5 ReLU; see KURT), compounding
      multiplicatively over the layers between the input (or the output, backward) and
      the layer: Var[log] ~ kappa * sum_k 1/n_k (Hanin 2018 for ReLU); the head has only
      OUT = 10 units, so its own term is large. This is the single-input bound; a batch of
      inputs only averages it further. (Over 30 seeds at width 256 the ReLU log-ratio sd at
      depth 30 was 0.68 against this bound's 0.77; the mean ratio 1.14, standard error 0.14.)

    sigma_w^2 is read from the realised weights, so the weight-norm fluctuation is not noise.
    """
    gen = torch.Generator().manual_seed(1234)
    net = make_mlp(IN, WIDTH, DEPTH, OUT, act, scheme, gen)
    x = torch.randn(BATCH, IN, generator=gen)
    c = theory.compare(net, x, verbose=False)
    assert c.names == [f"linear{k}" for k in range(1, DEPTH + 1)] + ["head"]
    units = np.array([WIDTH] * DEPTH + [OUT])  # output units of each measured layer
    depth_from_output = np.arange(DEPTH, -1, -1)
    k = KURT[act]
    tol_f = 4 * np.sqrt(2 / (BATCH * units) + k * np.cumsum(1 / units))
    tol_b = 4 * np.sqrt(2 / (BATCH * OUT) + k * depth_from_output / WIDTH)
    assert np.all(np.isfinite(c.forward_ratio)) and np.all(np.isfinite(c.backward_ratio))
    assert np.all(np.abs(np.log(c.forward_ratio)) <= tol_f), c
    assert np.all(np.abs(np.log(c.backward_ratio)) <= tol_b), c


def test_predict_exact_recursions_from_spec():
    """The recursion itself, against closed forms (no sampling)."""
    # ReLU at sigma_w^2 = 2 keeps q constant after the first layer (He et al. 2015).
    p = theory.predict([(100, 100, 2.0, 0.0, "relu")] * 5, input_var=0.5)
    np.testing.assert_allclose(p.forward, 1.0, rtol=1e-12)
    np.testing.assert_allclose(p.backward, 0.5, rtol=1e-12)  # E[relu'^2] = 1/2 at each layer
    # Linear stack: q_l = prod(sigma_w2) * input_second_moment + biases, gradient by fan_out/fan_in.
    spec = [(10, 20, 1.5, 0.1, "linear"), {"fan_in": 20, "fan_out": 5, "sigma_w2": 0.5}]
    p = theory.predict(spec, input_var=2.0, input_mean=1.0, grad_var=3.0)
    np.testing.assert_allclose(p.forward, [1.5 * 3.0 + 0.1, 0.5 * (1.5 * 3.0 + 0.1)])
    np.testing.assert_allclose(p.backward, [3.0 * 5 * 0.5 / 20, 3.0])
    assert p.names == ["layer1", "layer2"]
    # tanh: q_2 = sigma_w2 * E[tanh(sqrt(q_1) z)^2] by an independent Monte Carlo integral.
    z = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    p = theory.predict([(5, 5, 1.7, 0.0, torch.tanh)] * 2)
    expected = 1.7 * torch.tanh(math.sqrt(1.7) * z).pow(2).mean().item()
    assert p.forward[1] == pytest.approx(expected, rel=5 * math.sqrt(2 / 2e6) * 3)


def test_predict_residual_and_norm_match_monte_carlo():
    """Residual sums add variances (q_out = q_in + q_branch); LayerNorm resets to 1.

    Tolerance as in test_predict_matches_monte_carlo with kappa = 5 and l = 2 * blocks.
    """
    gen = torch.Generator().manual_seed(7)
    w, blocks, batch = 256, 6, 256

    def branch():
        return nn.Sequential(
            OrderedDict(
                linear1=nn.Linear(w, w),
                norm1=nn.LayerNorm(w),
                act=nn.ReLU(),
                linear2=nn.Linear(w, w),
            )
        )

    net = nn.Sequential(
        OrderedDict(
            stem=nn.Linear(32, w),
            **{f"block{k + 1}": Residual(branch(), branch_scale=0.5) for k in range(blocks)},
            head=nn.Linear(w, 4),
        )
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, generator=gen)
                nn.init.normal_(m.bias, std=0.1, generator=gen)
            if isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.5)
    x = torch.randn(batch, 32, generator=gen)
    c = theory.compare(net, x, verbose=False)
    assert c.names[1] == "block1.branch.linear1"
    tol = 4 * math.sqrt(2 / (batch * 4) + 5 * 2 * blocks / w)
    assert np.all(np.abs(np.log(c.forward_ratio)) <= tol), c
    assert np.all(np.abs(np.log(c.backward_ratio)) <= tol), c
    # Sanity of the algebra: each block adds 0.25 * q_branch to q.
    p = theory.predict(net, input_var=1.0)
    assert p.forward[-1] > p.forward[0]


def test_predict_on_initlab_models_mlp():
    models = pytest.importorskip("initlab.models")
    net = models.mlp(16, 64, 3, 5, activation="tanh")
    p = theory.predict(net)
    assert p.names == ["linear1", "linear2", "linear3", "head"]
    res = models.mlp(16, 64, 2, 5, activation="relu", residual=True)
    p = theory.predict(res)
    assert p.names[0] == "stem" and p.names[1] == "block1.branch.linear1"


@pytest.mark.parametrize(
    "phi, sigma_b2, expected", [("tanh", 0.0, 1.0), ("relu", 0.0, 2.0), (torch.relu, 0.3, 2.0)]
)
def test_critical_sigma_w2(phi, sigma_b2, expected):
    assert theory.critical_sigma_w2(phi, sigma_b2) == pytest.approx(expected, abs=1e-6)


def test_fixed_point_edges_and_chi1():
    assert theory.fixed_point("tanh", 0.8) == 0.0  # collapses to 0 ...
    assert theory.fixed_point("tanh", 1.0) == 0.0  # ... also (slowly) at sigma_w2 = 1
    assert theory.fixed_point("relu", 2.0, q0=3.0) == 3.0  # every q is a fixed point
    assert theory.fixed_point("relu", 2.5) == math.inf
    assert theory.fixed_point("relu", 1.0, 0.5) == pytest.approx(0.5 / (1 - 0.5), rel=1e-9)
    q = theory.fixed_point("tanh", 2.0, 0.1)
    from initlab._quadrature import gaussian_expectation

    mapped = 2.0 * gaussian_expectation(lambda h: torch.tanh(h) ** 2, std=math.sqrt(q)) + 0.1
    assert mapped == pytest.approx(q, rel=1e-8)
    # chi1 = sigma_w2 * phi'(0)^2 at q* = 0; sigma_w2 / 2 for ReLU at any q.
    assert theory.chi1("tanh", 0.7) == pytest.approx(0.7, rel=1e-9)
    assert theory.chi1("relu", 1.2) == pytest.approx(0.6, rel=1e-12)
    assert theory.chi1(np.tanh, 2.0, 0.1) == pytest.approx(theory.chi1("tanh", 2.0, 0.1), rel=1e-6)


def test_depth_scale():
    # Ordered phase: xi_c = -1/log(chi1).
    assert theory.depth_scale("tanh", 0.5) == pytest.approx(-1 / math.log(0.5), rel=1e-9)
    assert theory.depth_scale("tanh", 1.0) == math.inf
    crit = theory.critical_sigma_w2("tanh", 0.05)
    near = theory.depth_scale("tanh", crit * 0.99, 0.05)
    far = theory.depth_scale("tanh", crit * 0.7, 0.05)
    assert near > far > 0  # diverges at the edge of chaos (Schoenholz et al. 2017, Fig. 2)
    chaotic = theory.depth_scale("tanh", crit * 1.5, 0.05)
    assert 0 < chaotic < math.inf


def test_bad_input():
    with pytest.raises(TypeError, match="model_or_spec"):
        theory.predict("not a model")
    with pytest.raises(ValueError, match=r"spec\[1\]"):
        theory.predict([(4, 8, 1.0), (7, 3, 1.0)])
    with pytest.raises(ValueError, match="input_var"):
        theory.predict([(4, 8, 1.0)], input_var=-1.0)
    with pytest.raises(ValueError, match="phi"):
        theory.chi1("no_such_activation", 1.0)
    with pytest.raises(ValueError, match="sigma_w2"):
        theory.fixed_point("tanh", -1.0)
    with pytest.raises(TypeError, match="Conv"):
        theory.predict(nn.Sequential(nn.LSTM(3, 3)))
    net = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="x"):
        theory.compare(net, torch.randn(16, 9), verbose=False)


def test_compare_prints_table(capsys):
    net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 2))
    c = theory.compare(net, torch.randn(64, 8, generator=torch.Generator().manual_seed(0)))
    out = capsys.readouterr().out
    assert "fwd pred" in out and "ratio" in out and str(c) in out
    assert c.forward_ratio.shape == (2,) and c.backward_ratio.shape == (2,)


def test_compare_with_a_real_loss_starts_from_the_measured_output_gradient():
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 4)
    )
    x = torch.randn(512, 16, generator=gen)
    y = torch.randint(0, 4, (512,), generator=gen)
    c = theory.compare(net, x, y, verbose=False)
    recs = [r for r in record(net, x, y) if r.kind == "linear"]
    assert c.measured_backward[-1] == recs[-1].grad_var == c.predicted_backward[-1]
    assert np.array_equal(
        c.measured_forward, theory.compare(net, x, verbose=False).measured_forward
    )
    # the cross-entropy gradient is far from unit variance (mean-field: 1 / batch scale)
    assert c.predicted_backward[-1] < 1e-3
    # the theory's backward ratios then hold for the real gradient too (64 units: 25 %)
    assert np.all(np.abs(np.log(c.backward_ratio[:-1])) < 0.25), c.backward_ratio
