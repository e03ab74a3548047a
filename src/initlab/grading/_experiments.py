"""Seeded experiments the exercise tests run in the grader's process (never on a learner's
code): variance ratios through random MLPs, norms of random matrix products, residual growth,
a measured chi_1. Re-exported by :mod:`initlab.grading.checks`, which the tests import.

They run in the grader's own process, which never runs submission code: plain code.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "leaky_relu_growth",
    "log_product_norms",
    "mean_log_product_norm",
    "mean_square_product_norm",
    "relu_bias_second_moment",
    "relu_variance_ratio",
    "residual_growth",
    "tanh_chi1_measured",
    "tanh_variance_ratio",
]


def _memo(f: Callable[..., float]) -> Callable[..., float]:
    """Remember a seeded experiment's result by its arguments: a grading worker runs the same
    experiment for every submission that gives the same answer. Only plain ``int``/``float``
    arguments are remembered; anything else is computed every time."""
    cache: dict[Any, float] = {}

    @functools.wraps(f)
    def remembered(*args: Any, **kwargs: Any) -> float:
        if not all(type(v) in (int, float) for v in (*args, *kwargs.values())):
            return f(*args, **kwargs)
        key = (args, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = f(*args, **kwargs)
        return cache[key]

    return remembered


def _second_moment_ratio(
    phi: Any, std: float, width: int, depth: int, batch: int, seed: int, input_std: float = 1.0
) -> float:
    """E[z^2] of layer ``depth``'s pre-activations over layer 1's in a fresh square MLP.

    ``z^(1) = W^(1) x`` with ``x ~ N(0, input_std^2)`` (``batch`` inputs), ``z^(l) =
    W^(l) phi(z^(l-1))``, weights i.i.d. ``N(0, std^2)``, no bias; one generator seeded with
    ``seed`` draws the inputs, then each layer's weights in turn.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        h = torch.mul(torch.randn((batch, width), generator=g), input_std)
        first = last = 0.0
        for layer in range(depth):
            w = torch.mul(torch.randn((width, width), generator=g), std)
            z = torch.matmul(h, torch.transpose(w, 0, 1))
            last = torch.Tensor.item(torch.mean(torch.mul(z, z)))
            if layer == 0:
                first = last
            h = phi(z)
    return last / first


@_memo
def tanh_variance_ratio(
    sigma: float,
    width: int = 256,
    depth: int = 20,
    gamma2: float = 0.01,
    batch: int = 1024,
    seed: int = 0,
) -> float:
    """Var[pre-activation of layer ``depth``] / Var[pre-activation of layer 1] in a tanh MLP.

    Inputs x ~ N(0, gamma2) (``batch`` of them), weights N(0, sigma^2), no bias, square layers of
    ``width``; the net is fresh for every ``seed``.
    """
    return _second_moment_ratio(torch.tanh, sigma, width, depth, batch, seed, math.sqrt(gamma2))


@_memo
def relu_variance_ratio(
    sigma: float, width: int = 256, depth: int = 10, batch: int = 1024, seed: int = 0
) -> float:
    """E[z^2] of the pre-activations of layer ``depth`` over that of layer 1 in a ReLU MLP.

    Inputs x ~ N(0, 1), weights N(0, sigma^2), no bias, square layers of ``width``,
    ``z^(l) = W^(l) relu(z^(l-1))`` (layer 1 takes x itself); fresh net for every ``seed``.
    """
    return _second_moment_ratio(torch.relu, sigma, width, depth, batch, seed)


def log_product_norms(n: int, sigma: float, k: int, runs: int = 4000, seed: int = 0) -> list[float]:
    """``log ||M_k ... M_1 v||`` for ``runs`` independent products (a list of floats).

    ``M_j`` are n x n with i.i.d. N(0, sigma^2) entries, ``v`` a unit vector; the vector is
    renormalised after every factor (the logs add up), so long products neither over- nor
    underflow. Computed in float64.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        v = torch.zeros((runs, n, 1), dtype=torch.float64)
        v[:, 0, 0] = 1.0
        total = torch.zeros((runs,), dtype=torch.float64)
        for _ in range(k):
            m = torch.mul(torch.randn((runs, n, n), generator=g, dtype=torch.float64), sigma)
            v = torch.matmul(m, v)
            norms = torch.linalg.vector_norm(v, dim=(1, 2))
            total = torch.add(total, torch.log(norms))
            v = torch.div(v, torch.reshape(norms, (runs, 1, 1)))
    return torch.Tensor.tolist(total)


@_memo
def mean_log_product_norm(n: int, sigma: float, k: int, runs: int = 4000, seed: int = 0) -> float:
    """Average of :func:`log_product_norms`: the typical growth of the product over k factors."""
    logs = log_product_norms(n, sigma, k, runs, seed)
    return sum(logs) / len(logs)


@_memo
def mean_square_product_norm(
    n: int, sigma: float, k: int, runs: int = 4000, seed: int = 0
) -> float:
    """Average of ``||M_k ... M_1 v||^2`` over ``runs`` products (see :func:`log_product_norms`)."""
    logs = log_product_norms(n, sigma, k, runs, seed)
    return sum(math.exp(2.0 * x) for x in logs) / len(logs)


@_memo
def leaky_relu_growth(
    slope: float,
    sigma_w2: float,
    width: int = 512,
    depth: int = 20,
    batch: int = 256,
    seed: int = 0,
) -> float:
    """E[h^2] of layer ``depth`` over layer 1's in a leaky-ReLU MLP (a measured ratio).

    ``h_1 = W_1 x`` with ``x ~ N(0, 1)`` (``batch`` inputs), ``h_{l+1} = W_{l+1} f(h_l)`` with
    ``f`` the leaky ReLU of negative slope ``slope``, weights i.i.d. ``N(0, sigma_w2 / width)``,
    square layers, no bias; a fresh network for every ``seed``.
    """
    std = math.sqrt(sigma_w2 / width)
    return _second_moment_ratio(
        lambda z: torch.where(z > 0, z, torch.mul(z, slope)), std, width, depth, batch, seed
    )


@_memo
def relu_bias_second_moment(
    sigma_w2: float,
    sigma_b2: float,
    width: int = 512,
    depth: int = 21,
    batch: int = 128,
    seed: int = 0,
) -> float:
    """Measured E[h_depth^2] of a ReLU MLP with random biases, started at E[h_1^2] = 1.

    ``h_1 ~ N(0, 1)`` (``batch`` inputs of ``width``), ``h_{l+1} = W relu(h_l) + b`` with
    ``W ~ N(0, sigma_w2 / width)`` and ``b ~ N(0, sigma_b2)`` fresh in every layer.
    """
    g = torch.Generator().manual_seed(seed)
    scale, bscale = math.sqrt(sigma_w2 / width), math.sqrt(sigma_b2)
    with torch.no_grad():
        h = torch.randn((batch, width), generator=g)
        for _ in range(depth - 1):
            w = torch.mul(torch.randn((width, width), generator=g), scale)
            b = torch.mul(torch.randn((width,), generator=g), bscale)
            h = torch.matmul(torch.relu(h), torch.transpose(w, 0, 1)) + b
        return torch.Tensor.item(torch.mean(torch.mul(h, h)))


@_memo
def residual_growth(
    s: float, blocks: int, q0: float = 1.0, width: int = 512, batch: int = 256, seed: int = 0
) -> float:
    """Measured E[x_L^2] after ``blocks`` residual blocks ``x + s W x`` started at E[x_0^2] = q0.

    Each branch is one random linear layer ``W ~ N(0, 1/width)`` (variance preserving, zero-mean
    weights independent of ``x``), fresh in every block.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = torch.mul(torch.randn((batch, width), generator=g), math.sqrt(q0))
        for _ in range(blocks):
            w = torch.mul(torch.randn((width, width), generator=g), math.sqrt(1.0 / width))
            x = x + torch.mul(torch.matmul(x, torch.transpose(w, 0, 1)), s)
        return torch.Tensor.item(torch.mean(torch.mul(x, x)))


@_memo
def tanh_chi1_measured(
    sigma_w2: float,
    sigma_b2: float,
    width: int = 1024,
    burn: int = 30,
    depth: int = 30,
    batch: int = 32,
    seed: int = 0,
) -> float:
    """chi_1 of a wide tanh MLP, measured: the growth per layer of a small perturbation's norm.

    Runs ``h_{l+1} = W tanh(h_l) + b`` (``W ~ N(0, sigma_w2 / width)``, ``b ~ N(0, sigma_b2)``)
    for ``burn`` layers to reach the length map's fixed point, then pushes ``batch`` tangent
    vectors ``u_{l+1} = W (tanh'(h_l) * u_l)`` through ``depth`` more layers and returns the
    geometric mean over layers of ``sum |u_{l+1}|^2 / sum |u_l|^2``. No autograd.
    """
    g = torch.Generator().manual_seed(seed)
    scale, bscale = math.sqrt(sigma_w2 / width), math.sqrt(sigma_b2)
    total = 0.0
    with torch.no_grad():
        h = torch.randn((batch, width), generator=g)
        u = torch.randn((batch, width), generator=g)
        for layer in range(burn + depth):
            w = torch.transpose(torch.mul(torch.randn((width, width), generator=g), scale), 0, 1)
            b = torch.mul(torch.randn((width,), generator=g), bscale)
            t = torch.tanh(h)
            before = torch.Tensor.item(torch.mean(torch.mul(u, u)))
            u = torch.matmul(torch.mul(u, 1.0 - torch.mul(t, t)), w)
            after = torch.Tensor.item(torch.mean(torch.mul(u, u)))
            h = torch.matmul(t, w) + b
            u = torch.mul(u, 1.0 / math.sqrt(after))
            if layer >= burn:
                total += math.log(after / before)
    return math.exp(total / depth)
