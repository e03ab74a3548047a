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

from ._experiments import (  # noqa: F401  (the tests call them as checks.<name>)
    leaky_relu_growth,
    log_product_norms,
    mean_log_product_norm,
    mean_square_product_norm,
    relu_bias_second_moment,
    relu_variance_ratio,
    residual_growth,
    tanh_chi1_measured,
    tanh_variance_ratio,
)

_float, _abs, _len, _sorted, _range = float, abs, len, sorted, range
_max, _min, _isinstance, _getattr, _bool = max, min, isinstance, getattr, bool
_exp, _sqrt, _isfinite = math.exp, math.sqrt, math.isfinite
_Tensor = torch.Tensor
_tolist, _item, _numel = torch.Tensor.tolist, torch.Tensor.item, torch.Tensor.numel
_reshape, _empty, _no_grad = torch.reshape, torch.empty, torch.no_grad
# bound for the exercise tests, which draw their own inputs with them (C._randn, ...)
_randn, _matmul, _transpose, _mean = torch.randn, torch.matmul, torch.transpose, torch.mean
_mul, _Generator = torch.mul, torch.Generator
_type, _repr, _tuple, _int, _erfc = type, repr, tuple, int, math.erfc
_dtype, _finfo, _torch_bool = torch.dtype, torch.finfo, torch.bool
_ndarray, _np_generic = numpy.ndarray, numpy.generic
_np_floating, _np_integer, _np_finfo = numpy.floating, numpy.integer, numpy.finfo
_EPS64 = 2.0**-52
_sha256 = hashlib.sha256


_NUMBER = "a number (int, float, NumPy scalar or one-element tensor; float32 or float64)"


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


def _precise(dtype: Any) -> bool:
    """Whether numbers of ``dtype`` can carry an answer: integers, float32 and float64 (not
    bool, complex, float16, bfloat16 or float8, whose rounding would pass a wrong answer)."""
    if _isinstance(dtype, _dtype):
        return dtype in (torch.float32, torch.float64) or (
            not dtype.is_floating_point and not dtype.is_complex and dtype != _torch_bool
        )
    return _getattr(dtype, "kind", "") in ("i", "u") or str(dtype) in ("float32", "float64")


def number(value: Any, name: str) -> float:
    """Return ``value`` as a finite Python float, or fail naming the type expected and got.

    Accepted: ``int``, ``float``, a NumPy integer, float32 or float64 scalar, a 0-d or
    one-element NumPy array or tensor of an integer, float32 or float64 dtype. Rejected with a
    message naming ``name``: ``bool``, ``str`` (even ``"1.5"``), lists, ``None``, ``...``,
    complex numbers, tensors of other sizes, and the low-precision floats (float16, bfloat16,
    float8), whose rounding is wider than a question's tolerance. Raises ``AssertionError`` so that the failure reads as a
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
        assert _precise(value.dtype), bad
        value = _item(value) if _isinstance(value, _Tensor) else value.reshape(-1)[0].item()
    elif _isinstance(value, _np_generic):
        assert _precise(value.dtype), bad
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

    Significance: a test rejects at ``p <= KS_ALPHA`` (:data:`KS_ALPHA` = 1e-9), so a correct
    sampler fails one test with probability 1e-9; an exercise set with six such tests wrongly
    costs a correct answer a point in fewer than one in 10**8 submissions.

    Power: ``p <= 1e-9`` once ``sqrt(n) D > 3.272``. By the Dvoretzky–Kiefer–Wolfowitz
    inequality (Massart's constant), ``sup |F_n - G| <= 1.950 / sqrt(n)`` with probability
    >= 0.999 for samples from any distribution ``G``, so a ``G`` at Kolmogorov distance
    ``delta`` from U(-a, a) is rejected with probability >= 0.999 when ``sqrt(n) >= (3.272 +
    1.950) / delta``. A normal with the uniform's variance ``a**2/3`` is at ``delta = 0.0572``,
    a normal clamped to [-a, a] with that variance at ``0.0611``: ``n >= 8336`` samples reject
    both. :data:`KS_MIN_SAMPLES` is that bound, rounded up.
    """
    assert a > 0
    return _ks(xs, lambda x: _min(1.0, _max(0.0, (x + a) / (2.0 * a))))


KS_ALPHA = 1e-9
KS_MIN_SAMPLES = 9000


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


def digest(answer: str) -> str:
    """First 8 hex digits of the SHA-256 of ``answer`` stripped and lower-cased.

    Lets a public test compare a named answer without spelling it out.

    Example:
        >>> digest(" He ") == digest("he")
        True
    """
    return _sha256(answer.strip().lower().encode()).hexdigest()[:8]


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
