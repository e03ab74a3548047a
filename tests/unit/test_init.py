"""initlab.init: exact laws (Kolmogorov-Smirnov), seeds, no-ops and bad input."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import initlab.init as I
from initlab._truncnorm import truncated_std

P_MIN = 1e-4  # KS p-value threshold
SHAPES = [(256, 128), (64, 32, 3, 3)]  # 32768 and 18432 samples: KS detects a 2 % scale error


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fans_of(shape):
    k = math.prod(shape[2:])
    return shape[1] * k, shape[0] * k


def ks(sample: torch.Tensor, dist) -> float:
    return stats.kstest(sample.double().flatten().numpy(), dist.cdf).pvalue


def _uniform(bound):
    return stats.uniform(-bound, 2 * bound)


# (function, kwargs, law(shape) -> frozen scipy distribution)
LAWS = [
    (I.uniform_, {}, lambda s: stats.uniform(0, 1)),
    (I.uniform_, {"a": -3.0, "b": -1.0}, lambda s: stats.uniform(-3, 2)),
    (I.normal_, {}, lambda s: stats.norm(0, 1)),
    (I.normal_, {"mean": 1.5, "std": 0.02}, lambda s: stats.norm(1.5, 0.02)),
    (I.xavier_uniform_, {}, lambda s: _uniform(math.sqrt(6 / sum(fans_of(s))))),
    (
        I.xavier_uniform_,
        {"gain": 5 / 3},
        lambda s: _uniform(5 / 3 * math.sqrt(6 / sum(fans_of(s)))),
    ),
    (I.xavier_normal_, {}, lambda s: stats.norm(0, math.sqrt(2 / sum(fans_of(s))))),
    (I.xavier_normal_, {"gain": 2.0}, lambda s: stats.norm(0, 2 * math.sqrt(2 / sum(fans_of(s))))),
    # kaiming defaults: leaky_relu with a=0 -> gain sqrt(2)
    (I.kaiming_uniform_, {}, lambda s: _uniform(math.sqrt(6 / fans_of(s)[0]))),
    (I.kaiming_uniform_, {"a": math.sqrt(5)}, lambda s: _uniform(1 / math.sqrt(fans_of(s)[0]))),
    (I.kaiming_uniform_, {"mode": "fan_out"}, lambda s: _uniform(math.sqrt(6 / fans_of(s)[1]))),
    (I.kaiming_normal_, {}, lambda s: stats.norm(0, math.sqrt(2 / fans_of(s)[0]))),
    (I.kaiming_normal_, {"a": 0.5}, lambda s: stats.norm(0, math.sqrt(2 / 1.25 / fans_of(s)[0]))),
    (
        I.kaiming_normal_,
        {"mode": "fan_out", "nonlinearity": "tanh"},
        lambda s: stats.norm(0, 5 / 3 / math.sqrt(fans_of(s)[1])),
    ),
    (I.lecun_uniform_, {}, lambda s: _uniform(math.sqrt(3 / fans_of(s)[0]))),
    (I.lecun_normal_, {}, lambda s: stats.norm(0, 1 / math.sqrt(fans_of(s)[0]))),
    (I.trunc_normal_, {}, lambda s: stats.truncnorm(-2, 2)),
    (
        I.trunc_normal_,
        {"mean": 0.1, "std": 0.02, "a": 0.09, "b": 0.2},
        lambda s: stats.truncnorm(-0.5, 5, loc=0.1, scale=0.02),
    ),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("fn", "kwargs", "law"), LAWS)
def test_law_ks(fn, kwargs, law, shape):
    w = fn(torch.empty(shape), generator=gen(1), **kwargs)
    assert ks(w, law(shape)) > P_MIN


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("distribution", ["normal", "uniform", "truncated_normal"])
@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_variance_scaling_law(shape, mode, distribution, scale):
    fi, fo = fans_of(shape)
    fan = {"fan_in": fi, "fan_out": fo, "fan_avg": (fi + fo) / 2}[mode]
    std = math.sqrt(scale / fan)
    w = I.variance_scaling_(torch.empty(shape), scale, mode, distribution, generator=gen(2))
    if distribution == "normal":
        law = stats.norm(0, std)
    elif distribution == "uniform":
        law = _uniform(math.sqrt(3) * std)
    else:
        s = std / truncated_std(-2, 2)
        law = stats.truncnorm(-2, 2, scale=s)
        assert math.isclose(law.std(), std, rel_tol=1e-12)  # variance exactly scale / fan
    assert ks(w, law) > P_MIN


def test_truncated_std_is_computed_not_typed():
    assert math.isclose(truncated_std(-2, 2), stats.truncnorm(-2, 2).std(), rel_tol=1e-13)
    assert math.isclose(truncated_std(-1, 3), stats.truncnorm(-1, 3).std(), rel_tol=1e-12)
    assert math.isclose(truncated_std(-math.inf, 0.5), stats.truncnorm(-np.inf, 0.5).std())
    assert math.isclose(I.TRUNCATED_STD, 0.8796256610342398, rel_tol=1e-15)


@pytest.mark.parametrize(
    ("mean", "std", "a", "b"),
    [
        (0.0, 1.0, -2.0, 2.0),
        (0.0, 1e-3, -2e-3, 2e-3),  # small std
        (0.0, 1.0, 2.5, 3.0),  # tail: low mass, inverse CDF
        (5.0, 1.0, -1.0, 0.0),  # mean far from the interval (torch warns; exact here)
        (0.0, 1.0, -math.inf, -0.5),
        (0.0, 1.0, 40.0, 41.0),  # beyond the reach of Phi: tail rejection
    ],
)
def test_trunc_normal_exact_law_and_open_bounds(mean, std, a, b):
    w = I.trunc_normal_(torch.empty(20000, dtype=torch.float64), mean, std, a, b, gen(3))
    assert bool((w > a).all() and (w < b).all())
    assert ks(w, stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)) > P_MIN


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_trunc_normal_never_on_a_bound(dtype):
    # A narrow interval in a coarse dtype: many draws round onto the bounds; none may stay.
    for a, b in [(-2.0, 2.0), (0.1, 0.1 + 1e-3), (-1e-3, 1e-3)]:
        w = I.trunc_normal_(torch.empty(20000, dtype=dtype), 0.0, 1.0, a, b, gen(4))
        assert bool((w.double() > a).all() and (w.double() < b).all()), (dtype, a, b)


def test_trunc_normal_noncontiguous_and_errors():
    base = torch.zeros(40, 30)
    view = base.t()
    assert I.trunc_normal_(view, std=0.1, a=-0.1, b=0.1, generator=gen(0)) is view
    assert bool((base.abs() < 0.1).all() and (base != 0).all())
    with pytest.raises(ValueError, match="a must be < b"):
        I.trunc_normal_(torch.empty(3), a=1.0, b=1.0)
    with pytest.raises(ValueError, match="std must be"):
        I.trunc_normal_(torch.empty(3), std=0.0)
    with pytest.raises(ValueError, match="strictly inside"):  # no float16 value inside
        I.trunc_normal_(torch.empty(3, dtype=torch.float16), a=1.0, b=1.0 + 1e-5)


# ----------------------------------------------------------------- seeds and determinism

SEEDED = [
    lambda t, g: I.uniform_(t, generator=g),
    lambda t, g: I.normal_(t, generator=g),
    lambda t, g: I.trunc_normal_(t, generator=g),
    lambda t, g: I.xavier_uniform_(t, generator=g),
    lambda t, g: I.xavier_normal_(t, generator=g),
    lambda t, g: I.kaiming_uniform_(t, generator=g),
    lambda t, g: I.kaiming_normal_(t, generator=g),
    lambda t, g: I.lecun_uniform_(t, generator=g),
    lambda t, g: I.lecun_normal_(t, generator=g),
    lambda t, g: I.orthogonal_(t, generator=g),
    lambda t, g: I.sparse_(t, 0.5, generator=g),
    lambda t, g: I.variance_scaling_(t, 2.0, "fan_avg", "truncated_normal", generator=g),
]


@pytest.mark.parametrize("fill", SEEDED)
def test_generator_seed_fixes_output_global_seed_does_not_matter(fill):
    torch.manual_seed(0)
    a = fill(torch.empty(12, 10), gen(5))
    torch.manual_seed(1)
    b = fill(torch.empty(12, 10), gen(5))
    c = fill(torch.empty(12, 10), gen(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# ----------------------------------------------------------------- structured inits


@pytest.mark.parametrize("shape", [(30, 10), (10, 30), (16, 16), (8, 4, 3, 3), (4, 8, 3, 3)])
@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_orthogonal(shape, gain):
    w = I.orthogonal_(torch.empty(shape, dtype=torch.float64), gain, gen(0)).reshape(shape[0], -1)
    small = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    torch.testing.assert_close(small, gain**2 * torch.eye(small.shape[0], dtype=torch.float64))


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("groups", [1, 2])
def test_dirac_preserves_input(dim, groups):
    conv = [
        None,
        torch.nn.functional.conv1d,
        torch.nn.functional.conv2d,
        torch.nn.functional.conv3d,
    ]
    w = I.dirac_(torch.empty(4, 4 // groups, *([3] * dim)), groups)
    x = torch.randn(2, 4, *([5] * dim))
    assert torch.equal(conv[dim](x, w, padding=1, groups=groups), x)
    # More output than input channels: the extra channels are zero.
    w = I.dirac_(torch.empty(6, 4, *([3] * dim)))
    y = conv[dim](x, w, padding=1)
    assert torch.equal(y[:, :4], x) and torch.equal(y[:, 4:], torch.zeros_like(y[:, 4:]))


def test_eye_exact():
    assert torch.equal(I.eye_(torch.empty(3, 5)), torch.eye(3, 5))
    x = torch.randn(7, 5)
    assert torch.equal(x @ I.eye_(torch.empty(5, 5)).T, x)


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 1.0])
def test_sparse_zero_count_and_values(sparsity):
    w = I.sparse_(torch.empty(400, 60), sparsity, std=0.3, generator=gen(1))
    assert (w == 0).sum(0).tolist() == [math.ceil(sparsity * 400)] * 60
    if sparsity < 1:
        assert ks(w[w != 0], stats.norm(0, 0.3)) > P_MIN


# ----------------------------------------------------------------- gains


def test_gain_for():
    assert math.isclose(I.gain_for(torch.relu), math.sqrt(2), rel_tol=1e-12)
    assert math.isclose(I.gain_for("relu"), math.sqrt(2), rel_tol=1e-12)
    assert math.isclose(I.gain_for(torch.nn.LeakyReLU(0.2)), I.calculate_gain("leaky_relu", 0.2))
    assert math.isclose(I.gain_for("linear"), 1.0)
    assert math.isclose(I.gain_for(np.tanh), 1.5925374197228315, rel_tol=1e-9)
    assert math.isclose(I.gain_for(torch.nn.SELU()), 1.0, rel_tol=1e-4)  # SELU's kink costs digits
    # against an independent integral
    from scipy import integrate

    m2, _ = integrate.quad(lambda z: np.tanh(z) ** 2 * stats.norm.pdf(z), -np.inf, np.inf)
    assert math.isclose(I.gain_for("tanh"), 1 / math.sqrt(m2), rel_tol=1e-10)


def test_gain_for_bad_input():
    with pytest.raises(TypeError, match="fn must be a callable"):
        I.gain_for(3.0)
    with pytest.raises(ValueError, match="not a function"):
        I.gain_for("no_such_activation")
    with pytest.raises(ValueError, match="finite and positive"):
        I.gain_for(lambda z: 0 * z)


# ----------------------------------------------------------------- no-ops

TENSOR_FNS = [
    I.uniform_,
    I.normal_,
    I.trunc_normal_,
    lambda t: I.constant_(t, 2.0),
    I.ones_,
    I.zeros_,
    I.eye_,
    I.xavier_uniform_,
    I.xavier_normal_,
    I.orthogonal_,
    lambda t: I.sparse_(t, 0.2),
    I.variance_scaling_,
    I.lecun_uniform_,
    I.lecun_normal_,
]


@pytest.mark.parametrize("fn", TENSOR_FNS)
@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0)])
def test_zero_element_is_noop(fn, shape):
    t = torch.empty(shape)
    assert fn(t) is t


@pytest.mark.parametrize("fn", [*TENSOR_FNS, I.kaiming_uniform_, I.kaiming_normal_])
def test_meta_is_noop(fn):
    t = torch.empty(6, 4, device="meta")
    assert fn(t) is t


def test_dirac_noops():
    for t in (torch.empty(6, 4, 3, device="meta"), torch.empty(0, 4, 3)):
        assert I.dirac_(t) is t


# ----------------------------------------------------------------- bad input

BAD = [
    (lambda: I.uniform_([1.0]), TypeError, "tensor must be a torch.Tensor"),
    (lambda: I.uniform_(torch.empty(3), a="0"), TypeError, "a must be a real number"),
    (lambda: I.uniform_(torch.empty(3), 2.0, 1.0), ValueError, "a must be <= b"),
    (lambda: I.normal_(torch.empty(3), std=-1.0), ValueError, "std must be a number >= 0"),
    (lambda: I.normal_(torch.empty(3), mean=True), TypeError, "mean must be a real number"),
    (lambda: I.trunc_normal_(torch.empty(3), std=-0.1), ValueError, "std must be"),
    (lambda: I.trunc_normal_(torch.empty(3), a=2.0, b=-2.0), ValueError, "a must be < b"),
    (lambda: I.constant_(torch.empty(3), "x"), TypeError, "fill_"),
    (lambda: I.ones_(None), TypeError, "tensor must be"),
    (lambda: I.zeros_("t"), TypeError, "tensor must be"),
    (lambda: I.eye_(torch.empty(2, 2, 2)), ValueError, r"2 dimensions .* got shape \(2, 2, 2\)"),
    (lambda: I.dirac_(torch.empty(4, 4, 3), groups=0), ValueError, "groups must be an int >= 1"),
    (lambda: I.dirac_(torch.empty(4, 4, 3), groups=3), ValueError, "divisible by groups"),
    (lambda: I.dirac_(torch.empty(4, 4, 3), groups=1.0), TypeError, "groups must be an int"),
    (lambda: I.xavier_uniform_(torch.empty(3, 4), gain=-1.0), ValueError, "gain must be >= 0"),
    (lambda: I.xavier_normal_(torch.empty(3, 4), gain="2"), TypeError, "gain must be a real"),
    (lambda: I.kaiming_uniform_(torch.empty(3, 4), mode=1), TypeError, "mode must be a str"),
    (lambda: I.kaiming_normal_(torch.empty(3, 4), nonlinearity="swish"), ValueError, "swish"),
    (lambda: I.kaiming_normal_(torch.empty(3, 4), a=True), ValueError, "not a valid number"),
    (lambda: I.orthogonal_(torch.empty(3, 4), gain=None), TypeError, "gain must be a real"),
    (lambda: I.sparse_(torch.empty(3, 4), 1.5), ValueError, r"sparsity must be in \[0, 1\]"),
    (lambda: I.sparse_(torch.empty(3, 4), -0.1), ValueError, r"sparsity must be in \[0, 1\]"),
    (lambda: I.sparse_(torch.empty(3, 4), 0.1, std=-1.0), ValueError, "std must be"),
    (lambda: I.variance_scaling_(torch.empty(3, 4), 0.0), ValueError, "scale must be .* > 0"),
    (lambda: I.variance_scaling_(torch.empty(3, 4), -2.0), ValueError, "scale must be"),
    (lambda: I.variance_scaling_(torch.empty(3, 4), mode="fan"), ValueError, "Mode fan not"),
    (
        lambda: I.variance_scaling_(torch.empty(3, 4), distribution="cauchy"),
        ValueError,
        "distribution must be one of",
    ),
    (lambda: I.variance_scaling_(torch.empty(4)), ValueError, "fewer than 2 dimensions"),
    (lambda: I.variance_scaling_(torch.empty(4, 2, 3), groups=3), ValueError, "groups=3 must"),
    (lambda: I.lecun_normal_(torch.empty(4)), ValueError, "fewer than 2 dimensions"),
    (lambda: I.lecun_uniform_(3), TypeError, "tensor must be"),
    (lambda: I.calculate_gain("leaky_relu", "0.1"), ValueError, "param must be an int or float"),
]


@pytest.mark.parametrize(("call", "exc", "match"), BAD)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
