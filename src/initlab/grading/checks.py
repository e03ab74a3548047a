"""Trusted helpers for the exercise tests (imported by every test cell).

In a learner's notebook, otter runs a question's public tests in the same Python process as
the learner's code, which could replace ``numpy.allclose``, ``torch.Tensor.__float__``,
``math.isclose`` or a builtin. This module binds every function it uses *when it is imported*,
so later monkeypatching of numpy, torch, math or builtins does not change what these helpers
compute. Comparisons are done in pure Python on floats obtained through the bound references.

Since issue 14 the instructor's grade no longer depends on this: the tests run in the grader's
own process, on the learner's answers sent out of a sandbox as data (see
:mod:`initlab.grading._grade`); the bindings still protect the learners' in-notebook checks.

Example:
    >>> from initlab.grading import checks
    >>> checks.close(0.1 + 0.2, 0.3)
    True
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy
import torch

_float, _abs, _len, _sorted, _range = float, abs, len, sorted, range
_max, _min, _isinstance, _getattr, _bool = max, min, isinstance, getattr, bool
_exp, _sqrt, _isfinite = math.exp, math.sqrt, math.isfinite
_Tensor = torch.Tensor
_tolist, _item, _numel = torch.Tensor.tolist, torch.Tensor.item, torch.Tensor.numel
_reshape, _randn, _matmul, _tanh = torch.reshape, torch.randn, torch.matmul, torch.tanh
_transpose, _mean, _mul, _empty = torch.transpose, torch.mean, torch.mul, torch.empty
_no_grad, _Generator = torch.no_grad, torch.Generator
_type, _repr, _tuple, _int, _erfc, _log = type, repr, tuple, int, math.erfc, math.log
_dtype, _finfo, _torch_bool, _relu = torch.dtype, torch.finfo, torch.bool, torch.relu
_ndarray, _np_generic = numpy.ndarray, numpy.generic
_np_floating, _np_integer, _np_finfo = numpy.floating, numpy.integer, numpy.finfo
_EPS64 = 2.0**-52
_norm, _zeros, _float64 = torch.linalg.vector_norm, torch.zeros, torch.float64
_add, _div, _log_t, _sum = torch.add, torch.div, torch.log, sum
_sha256 = hashlib.sha256


_NUMBER = "a number (int, float, NumPy scalar or one-element tensor)"


def describe(value: Any) -> str:
    """A short description of ``value`` for a message: its type, and its value when short.

    Example:
        >>> describe("1.5")
        "str '1.5'"
    """
    if value is None:
        return "None"
    if value is ...:
        return "... (the placeholder: replace it with your answer)"
    kind = _type(value).__name__
    if _isinstance(value, _Tensor):
        return f"a {kind} of shape {_tuple(value.shape)} and dtype {value.dtype}"
    if _isinstance(value, _ndarray):
        return f"a NumPy array of shape {value.shape} and dtype {value.dtype}"
    try:
        text = _repr(value)
    except Exception:  # noqa: BLE001 - a learner's object with a broken repr
        return kind
    if _len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"


def _float_eps(value: Any) -> float:
    """Machine epsilon of the floating type of ``value`` (float64's for Python numbers)."""
    dtype = _getattr(value, "dtype", None)
    if _isinstance(dtype, _dtype):
        return _finfo(dtype).eps if dtype.is_floating_point else _EPS64
    if dtype is not None and _getattr(dtype, "kind", "") == "f":
        return _float(_np_finfo(dtype).eps)
    return _EPS64


def number(value: Any, name: str) -> float:
    """Return ``value`` as a finite Python float, or fail naming the type expected and got.

    Accepted: ``int``, ``float``, a NumPy integer or floating scalar, a 0-d or one-element NumPy
    array or tensor of an integer or floating dtype (float32 included). Rejected with a message
    naming ``name``: ``bool``, ``str`` (even ``"1.5"``), lists, ``None``, ``...``, complex
    numbers, tensors of other sizes. Raises ``AssertionError`` so that the failure reads as a
    test message.

    Example:
        >>> number(torch.tensor(0.5), "x")
        0.5
    """
    # The message never ends with a quote: otter strips quotes from both ends of a message.
    bad = f"{name} is {describe(value)}, but it should be {_NUMBER}"
    if _isinstance(value, (_Tensor, _ndarray)):
        size = _numel(value) if _isinstance(value, _Tensor) else value.size
        assert size == 1, bad
        dtype = value.dtype
        if _isinstance(dtype, _dtype):
            ok = dtype.is_floating_point or (not dtype.is_complex and dtype != _torch_bool)
        else:
            ok = dtype.kind in "fiu"
        assert ok, bad
        value = _item(value) if _isinstance(value, _Tensor) else value.reshape(-1)[0].item()
    elif _isinstance(value, _np_generic):
        assert _isinstance(value, (_np_floating, _np_integer)), bad
        value = value.item()
    assert _isinstance(value, (_int, _float)) and not _isinstance(value, _bool), bad
    out = _float(value)
    assert _isfinite(out), f"{name} should be finite, got {out}"
    return out


def close_number(
    value: Any, expected: float, name: str, rel: float = 1e-9, abs_tol: float = 0.0
) -> bool:
    """Whether ``value`` (checked by :func:`number`) is ``expected`` to the answer's precision.

    The relative tolerance is ``rel`` or 64 units of the answer's own rounding, whichever is
    larger: a float32 tensor carries about 7 digits, so demanding 1e-9 of it would reject a
    correct answer. ``expected`` is never printed.

    Example:
        >>> close_number(torch.tensor(4.0) * 1.0000001, 4.0, "v")
        True
    """
    got = number(value, name)
    return _close(got, expected, rel=_max(rel, 64 * _float_eps(value)), abs_tol=abs_tol)


def text(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` stripped and lower-cased, failing unless it is one of ``choices``.

    The comparison ignores case and surrounding spaces; the message lists the choices (they
    are in the question's text) and names the type when ``value`` is not a string.
    """
    assert _isinstance(value, str), (
        f"{name} is {describe(value)}, but it should be one of {choices}"
    )
    got = value.strip().lower()
    assert got in [c.lower() for c in choices], (
        f"{name} is {value!r}, but it should be one of {choices}"
    )
    return got


def tensor_answer(value: Any, name: str) -> torch.Tensor:
    """Return ``value`` if it is a tensor; fail naming the type got otherwise."""
    assert _isinstance(value, _Tensor), (
        f"{name} is {describe(value)}, but it should be a torch.Tensor"
    )
    return value


def close(actual: float, expected: float, rel: float = 1e-6, abs_tol: float = 1e-12) -> bool:
    """Return whether ``|actual - expected| <= max(rel * |expected|, abs_tol)`` (pure Python)."""
    return _abs(actual - expected) <= _max(rel * _abs(expected), abs_tol)


_close = close  # bound: close_number keeps working if a submission replaces checks.close


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


def _ks(xs: list[float], cdf: Any) -> tuple[float, float]:
    n = _len(xs)
    assert n > 0
    d = 0.0
    for i, x in enumerate(_sorted(xs)):
        f = cdf(x)
        d = _max(d, f - i / n, (i + 1) / n - f)
    root = _sqrt(n)
    return d, kolmogorov_sf((root + 0.12 + 0.11 / root) * d)


def ks_uniform(xs: list[float], a: float) -> tuple[float, float]:
    """One-sample Kolmogorov–Smirnov test of ``xs`` against U(-a, a).

    Returns ``(D, p)``: the statistic ``D = sup |F_n(x) - F(x)|`` and its asymptotic p-value with
    Stephens' small-sample correction, ``Q((sqrt(n) + 0.12 + 0.11 / sqrt(n)) D)`` (Numerical
    Recipes, 3rd ed., section 14.3.3).

    Power: the test rejects at ``p <= 1e-4`` once ``sqrt(n) D > 2.226``. By the
    Dvoretzky–Kiefer–Wolfowitz inequality (Massart's constant), ``sup |F_n - G| <= 1.950 /
    sqrt(n)`` with probability >= 0.999 for samples from any distribution ``G``, so a ``G`` at
    Kolmogorov distance ``delta`` from U(-a, a) is rejected with probability >= 0.999 when
    ``sqrt(n) >= (2.226 + 1.950) / delta``. A normal with the uniform's variance ``a**2/3`` is at
    ``delta = 0.0572``, a normal clamped to [-a, a] with that variance at ``0.0611``: ``n >=
    5326`` samples reject both. :data:`KS_MIN_SAMPLES` is that bound, rounded up.
    """
    assert a > 0
    return _ks(xs, lambda x: _min(1.0, _max(0.0, (x + a) / (2.0 * a))))


KS_MIN_SAMPLES = 6000


def ks_normal(xs: list[float], std: float) -> tuple[float, float]:
    """One-sample Kolmogorov–Smirnov test of ``xs`` against N(0, std**2); ``(D, p)`` as
    :func:`ks_uniform` (same power: a uniform with the normal's variance is at distance 0.0572)."""
    assert std > 0
    scale = std * _sqrt(2.0)
    return _ks(xs, lambda x: 0.5 * _erfc(-x / scale))


def ks_two_sample(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov test: ``(D, p)`` with ``D = sup |F_xs - F_ys|`` and the
    asymptotic p-value for the effective size ``n m / (n + m)`` (Numerical Recipes 14.3.3)."""
    a, b = _sorted(xs), _sorted(ys)
    n, m = _len(a), _len(b)
    assert n > 0 and m > 0
    i = j = 0
    d = 0.0
    while i < n and j < m:
        x = _min(a[i], b[j])
        while i < n and a[i] <= x:
            i += 1
        while j < m and b[j] <= x:
            j += 1
        d = _max(d, _abs(i / n - j / m))
    root = _sqrt(n * m / (n + m))
    return d, kolmogorov_sf((root + 0.12 + 0.11 / root) * d)


def _second_moment_ratio(
    phi: Any, std: float, width: int, depth: int, batch: int, seed: int, input_std: float = 1.0
) -> float:
    """E[z^2] of layer ``depth``'s pre-activations over layer 1's in a fresh square MLP.

    ``z^(1) = W^(1) x`` with ``x ~ N(0, input_std^2)`` (``batch`` inputs), ``z^(l) =
    W^(l) phi(z^(l-1))``, weights i.i.d. ``N(0, std^2)``, no bias; one generator seeded with
    ``seed`` draws the inputs, then each layer's weights in turn.
    """
    g = _Generator().manual_seed(seed)
    with _no_grad():
        h = _mul(_randn((batch, width), generator=g), input_std)
        first = last = 0.0
        for layer in _range(depth):
            w = _mul(_randn((width, width), generator=g), std)
            z = _matmul(h, _transpose(w, 0, 1))
            last = _item(_mean(_mul(z, z)))
            if layer == 0:
                first = last
            h = phi(z)
    return last / first


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
    return _second_moment_ratio(_tanh, sigma, width, depth, batch, seed, _sqrt(gamma2))


def relu_variance_ratio(
    sigma: float, width: int = 256, depth: int = 10, batch: int = 1024, seed: int = 0
) -> float:
    """E[z^2] of the pre-activations of layer ``depth`` over that of layer 1 in a ReLU MLP.

    Inputs x ~ N(0, 1), weights N(0, sigma^2), no bias, square layers of ``width``,
    ``z^(l) = W^(l) relu(z^(l-1))`` (layer 1 takes x itself); fresh net for every ``seed``.
    """
    return _second_moment_ratio(_relu, sigma, width, depth, batch, seed)


def log_product_norms(n: int, sigma: float, k: int, runs: int = 4000, seed: int = 0) -> list[float]:
    """``log ||M_k ... M_1 v||`` for ``runs`` independent products (a list of floats).

    ``M_j`` are n x n with i.i.d. N(0, sigma^2) entries, ``v`` a unit vector; the vector is
    renormalised after every factor (the logs add up), so long products neither over- nor
    underflow. Computed in float64.
    """
    g = _Generator().manual_seed(seed)
    with _no_grad():
        v = _zeros((runs, n, 1), dtype=_float64)
        v[:, 0, 0] = 1.0
        total = _zeros((runs,), dtype=_float64)
        for _ in _range(k):
            m = _mul(_randn((runs, n, n), generator=g, dtype=_float64), sigma)
            v = _matmul(m, v)
            norms = _norm(v, dim=(1, 2))
            total = _add(total, _log_t(norms))
            v = _div(v, _reshape(norms, (runs, 1, 1)))
    return _tolist(total)


def mean_log_product_norm(n: int, sigma: float, k: int, runs: int = 4000, seed: int = 0) -> float:
    """Average of :func:`log_product_norms`: the typical growth of the product over k factors."""
    logs = log_product_norms(n, sigma, k, runs, seed)
    return _sum(logs) / _len(logs)


def mean_square_product_norm(
    n: int, sigma: float, k: int, runs: int = 4000, seed: int = 0
) -> float:
    """Average of ``||M_k ... M_1 v||^2`` over ``runs`` products (see :func:`log_product_norms`)."""
    logs = log_product_norms(n, sigma, k, runs, seed)
    return _sum(_exp(2.0 * x) for x in logs) / _len(logs)


def digest(answer: str) -> str:
    """First 8 hex digits of the SHA-256 of ``answer`` stripped and lower-cased.

    Lets a public test compare a named answer without spelling it out.

    Example:
        >>> digest(" He ") == digest("he")
        True
    """
    return _sha256(answer.strip().lower().encode()).hexdigest()[:8]


# --- helpers for sets 04a/04b ---------------------------------------------------------------
# Experiments that the 04a/04b tests run in the grader's process (never on a learner's code),
# with torch functions bound at import like the helpers above.

_log_float, _where, _relu_b = math.log, torch.where, torch.relu


def truth(value: Any, name: str) -> bool:
    """Return ``value`` (``bool``, a NumPy bool, a one-element bool array or tensor) as a bool.

    Fails naming ``name`` and the type got for anything else (``1``, ``"True"``, ``None``).

    Example:
        >>> truth(torch.tensor(True), "x")
        True
    """
    bad = f"{name} is {describe(value)}, but it should be True or False"
    if _isinstance(value, (_Tensor, _ndarray)):
        size = _numel(value) if _isinstance(value, _Tensor) else value.size
        assert size == 1 and str(value.dtype) in ("torch.bool", "bool"), bad
        value = _item(value) if _isinstance(value, _Tensor) else value.reshape(-1)[0].item()
    elif _isinstance(value, _np_generic):
        assert str(value.dtype) == "bool", bad
        value = value.item()
    assert _isinstance(value, _bool), bad
    return value


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
    std = _sqrt(sigma_w2 / width)
    return _second_moment_ratio(
        lambda z: _where(z > 0, z, _mul(z, slope)), std, width, depth, batch, seed
    )


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
    g = _Generator().manual_seed(seed)
    scale, bscale = _sqrt(sigma_w2 / width), _sqrt(sigma_b2)
    with _no_grad():
        h = _randn((batch, width), generator=g)
        for _ in _range(depth - 1):
            w = _mul(_randn((width, width), generator=g), scale)
            b = _mul(_randn((width,), generator=g), bscale)
            h = _matmul(_relu_b(h), _transpose(w, 0, 1)) + b
        return _item(_mean(_mul(h, h)))


def residual_growth(
    s: float, blocks: int, q0: float = 1.0, width: int = 512, batch: int = 256, seed: int = 0
) -> float:
    """Measured E[x_L^2] after ``blocks`` residual blocks ``x + s W x`` started at E[x_0^2] = q0.

    Each branch is one random linear layer ``W ~ N(0, 1/width)`` (variance preserving, zero-mean
    weights independent of ``x``), fresh in every block.
    """
    g = _Generator().manual_seed(seed)
    with _no_grad():
        x = _mul(_randn((batch, width), generator=g), _sqrt(q0))
        for _ in _range(blocks):
            w = _mul(_randn((width, width), generator=g), _sqrt(1.0 / width))
            x = x + _mul(_matmul(x, _transpose(w, 0, 1)), s)
        return _item(_mean(_mul(x, x)))


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
    g = _Generator().manual_seed(seed)
    scale, bscale = _sqrt(sigma_w2 / width), _sqrt(sigma_b2)
    total = 0.0
    with _no_grad():
        h = _randn((batch, width), generator=g)
        u = _randn((batch, width), generator=g)
        for layer in _range(burn + depth):
            w = _transpose(_mul(_randn((width, width), generator=g), scale), 0, 1)
            b = _mul(_randn((width,), generator=g), bscale)
            t = _tanh(h)
            before = _item(_mean(_mul(u, u)))
            u = _matmul(_mul(u, 1.0 - _mul(t, t)), w)
            after = _item(_mean(_mul(u, u)))
            h = _matmul(t, w) + b
            u = _mul(u, 1.0 / _sqrt(after))
            if layer >= burn:
                total += _log_float(after / before)
    return _exp(total / depth)
