"""Trusted helpers for the exercise tests (imported by every test cell).

Otter runs a question's tests in the same Python process as the learner's code, so a
submission can replace ``numpy.allclose``, ``torch.Tensor.__float__``, ``math.isclose`` or a
builtin before the tests run. This module binds every function it uses *when it is imported*;
the grader imports it in a cell placed before the submission's first cell, so later
monkeypatching of numpy, torch, math or builtins does not change what these helpers compute.
Comparisons are done in pure Python on floats obtained through the bound references.

Since issue 14 the instructor's grade no longer depends on this: the tests run in the grader's
own process, on the learner's answers sent out of a sandbox as data (see
:mod:`initlab.grading._grade`); the bindings still protect the learners' in-notebook checks.

Example:
    >>> from initlab.grading import checks
    >>> checks.close(0.1 + 0.2, 0.3)
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch

_float, _abs, _len, _sorted, _range = float, abs, len, sorted, range
_max, _min, _isinstance, _getattr, _bool = max, min, isinstance, getattr, bool
_exp, _sqrt, _isfinite = math.exp, math.sqrt, math.isfinite
_Tensor = torch.Tensor
_tolist, _item, _numel = torch.Tensor.tolist, torch.Tensor.item, torch.Tensor.numel
_reshape, _randn, _matmul, _tanh = torch.reshape, torch.randn, torch.matmul, torch.tanh
_transpose, _mean, _mul, _empty = torch.transpose, torch.mean, torch.mul, torch.empty
_no_grad, _Generator = torch.no_grad, torch.Generator


def number(value: Any, name: str) -> float:
    """Return ``value`` (int, float, NumPy scalar, one-element tensor) as a finite float.

    Raises ``AssertionError`` naming ``name`` otherwise (so the failure reads as a test message).
    """
    if _isinstance(value, _Tensor):
        assert _numel(value) == 1, f"{name} should be a number, got a tensor of shape {value.shape}"
        value = _item(value)
    assert not _isinstance(value, _bool) and value is not None and value is not ..., (
        f"{name} should be a number, got {value!r}"
    )
    try:
        out = _float(value)
    except (TypeError, ValueError):
        raise AssertionError(f"{name} should be a number, got {value!r}") from None
    assert _isfinite(out), f"{name} should be finite, got {out}"
    return out


def close(actual: float, expected: float, rel: float = 1e-6, abs_tol: float = 1e-12) -> bool:
    """Return whether ``|actual - expected| <= max(rel * |expected|, abs_tol)`` (pure Python)."""
    return _abs(actual - expected) <= _max(rel * _abs(expected), abs_tol)


def values(tensor: torch.Tensor) -> list[float]:
    """Return the elements of ``tensor`` as a flat list of Python floats."""
    assert _isinstance(tensor, _Tensor), f"expected a torch.Tensor, got {type(tensor).__name__}"
    return _tolist(_reshape(tensor.detach(), (-1,)))


def empty(*shape: int) -> torch.Tensor:
    """Return an uninitialised float32 tensor of ``shape`` (filled with NaN)."""
    t = _empty(shape)
    with _no_grad():
        t.fill_(float("nan"))
    return t


def kolmogorov_sf(lam: float) -> float:
    """Survival function of the Kolmogorov distribution, Q(lam) = 2 sum (-1)^(j-1) e^(-2 j^2 lam^2)."""
    if lam < 0.2:
        return 1.0
    total = 0.0
    for j in _range(1, 101):
        term = _exp(-2.0 * j * j * lam * lam)
        total += term if j % 2 else -term
        if term < 1e-16:
            break
    return _max(0.0, _min(1.0, 2.0 * total))


def ks_uniform(xs: list[float], a: float) -> tuple[float, float]:
    """One-sample Kolmogorov–Smirnov test of ``xs`` against U(-a, a).

    Returns ``(D, p)``: the statistic ``D = sup |F_n(x) - F(x)|`` and its asymptotic p-value with
    Stephens' small-sample correction, ``Q((sqrt(n) + 0.12 + 0.11 / sqrt(n)) D)`` (Numerical
    Recipes, 3rd ed., section 14.3.3).
    """
    n = _len(xs)
    assert n > 0 and a > 0
    d = 0.0
    for i, x in enumerate(_sorted(xs)):
        f = _min(1.0, _max(0.0, (x + a) / (2.0 * a)))
        d = _max(d, f - i / n, (i + 1) / n - f)
    root = _sqrt(n)
    return d, kolmogorov_sf((root + 0.12 + 0.11 / root) * d)


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
    g = _Generator().manual_seed(seed)
    with _no_grad():
        h = _mul(_randn((batch, width), generator=g), _sqrt(gamma2))
        first = last = 0.0
        for layer in _range(depth):
            w = _mul(_randn((width, width), generator=g), sigma)
            z = _matmul(h, _transpose(w, 0, 1))
            last = _item(_mean(_mul(z, z)))
            if layer == 0:
                first = last
            h = _tanh(z)
    return last / first
