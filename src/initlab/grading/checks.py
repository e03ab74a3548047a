"""Helpers for the exercise tests (imported by every test cell): type messages that name the
expected and the given type, precision-aware comparison, Kolmogorov–Smirnov tests, seeded
experiments.

The instructor's grade runs these in the grader's own process, which never runs submission
code (see :mod:`initlab.grading._grade`); in a learner's own notebook they run beside the
learner's code, where tampering with them cheats only the learner. So this is plain code.

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

# Names the exercise tests use as C.<name> (the masters' test code draws its inputs with them).
_randn, _matmul, _transpose, _mean = torch.randn, torch.matmul, torch.transpose, torch.mean
_mul, _Generator, _empty, _no_grad, _sorted = (
    torch.mul,
    torch.Generator,
    torch.empty,
    torch.no_grad,
    sorted,
)
_EPS64 = 2.0**-52
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
    kind = type(value).__name__
    if isinstance(value, torch.Tensor):
        return f"a {kind} of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, numpy.ndarray):
        return f"a NumPy array of shape {value.shape} and dtype {value.dtype}"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a learner's object with a broken repr
        return kind
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"


def _float_eps(value: Any) -> float:
    """Machine epsilon of the floating type of ``value`` (float64's for Python numbers)."""
    dtype = getattr(value, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return torch.finfo(dtype).eps if dtype.is_floating_point else _EPS64
    if dtype is not None and getattr(dtype, "kind", "") == "f":
        return float(numpy.finfo(dtype).eps)
    return _EPS64


def _precise(dtype: Any) -> bool:
    """Whether numbers of ``dtype`` can carry an answer: integers, float32 and float64 (not
    bool, complex, float16, bfloat16 or float8, whose rounding would pass a wrong answer)."""
    if isinstance(dtype, torch.dtype):
        return dtype in (torch.float32, torch.float64) or (
            not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool
        )
    return getattr(dtype, "kind", "") in ("i", "u") or str(dtype) in ("float32", "float64")


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
    if isinstance(value, (torch.Tensor, numpy.ndarray)):
        size = value.numel() if isinstance(value, torch.Tensor) else value.size
        assert size == 1, bad
        assert _precise(value.dtype), bad
        value = value.item() if isinstance(value, torch.Tensor) else value.reshape(-1)[0].item()
    elif isinstance(value, numpy.generic):
        assert _precise(value.dtype), bad
        value = value.item()
    assert isinstance(value, (int, float)) and not isinstance(value, bool), bad
    out = float(value)
    assert math.isfinite(out), f"{name} should be finite, got {out}"
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
    return close(got, expected, rel=max(rel, 64 * _float_eps(value)), abs_tol=abs_tol)


def text(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` stripped and lower-cased, failing unless it is one of ``choices``.

    The comparison ignores case and surrounding spaces; the message lists the choices (they
    are in the question's text) and names the type when ``value`` is not a string.
    """
    assert isinstance(value, str), f"{name} is {describe(value)}, but it should be one of {choices}"
    got = value.strip().lower()
    assert got in [c.lower() for c in choices], (
        f"{name} is {value!r}, but it should be one of {choices}"
    )
    return got


def tensor_answer(value: Any, name: str) -> torch.Tensor:
    """Return ``value`` if it is a tensor; fail naming the type got otherwise."""
    assert isinstance(value, torch.Tensor), (
        f"{name} is {describe(value)}, but it should be a torch.Tensor"
    )
    return value


def close(actual: float, expected: float, rel: float = 1e-6, abs_tol: float = 1e-12) -> bool:
    """Return whether ``|actual - expected| <= max(rel * |expected|, abs_tol)`` (pure Python)."""
    return abs(actual - expected) <= max(rel * abs(expected), abs_tol)


def values(tensor: torch.Tensor) -> list[float]:
    """Return the elements of ``tensor`` as a flat list of Python floats."""
    assert isinstance(tensor, torch.Tensor), f"expected a torch.Tensor, got {type(tensor).__name__}"
    return tensor.detach().reshape(-1).tolist()


def empty(*shape: int) -> torch.Tensor:
    """Return an uninitialised float32 tensor of ``shape`` (filled with NaN)."""
    t = torch.empty(shape)
    with torch.no_grad():
        t.fill_(float("nan"))
    return t


def kolmogorov_sf(lam: float) -> float:
    """Survival function of the Kolmogorov distribution, Q(lam) = 2 sum (-1)^(j-1) e^(-2 j^2 lam^2)
    (``scipy.special.kolmogorov``)."""
    from scipy.special import kolmogorov

    return float(kolmogorov(lam))


def _ks(result: Any) -> tuple[float, float]:
    return float(result.statistic), float(result.pvalue)


def ks_uniform(xs: list[float], a: float) -> tuple[float, float]:
    """One-sample Kolmogorov–Smirnov test of ``xs`` against U(-a, a) (``scipy.stats.kstest``,
    asymptotic p-value ``Q(sqrt(n) D)``).

    Returns ``(D, p)``: the statistic ``D = sup |F_n(x) - F(x)|`` and its p-value.

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
    from scipy.stats import kstest

    assert a > 0
    return _ks(kstest(xs, "uniform", args=(-a, 2 * a), method="asymp"))


KS_ALPHA = 1e-9
KS_MIN_SAMPLES = 9000


def ks_normal(xs: list[float], std: float) -> tuple[float, float]:
    """One-sample Kolmogorov–Smirnov test of ``xs`` against N(0, std**2); ``(D, p)`` as
    :func:`ks_uniform` (same power: a uniform with the normal's variance is at distance 0.0572)."""
    from scipy.stats import kstest

    assert std > 0
    return _ks(kstest(xs, "norm", args=(0.0, std), method="asymp"))


def ks_two_sample(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov test (``scipy.stats.ks_2samp``, asymptotic): ``(D, p)``
    with ``D = sup |F_xs - F_ys|``."""
    from scipy.stats import ks_2samp

    assert len(xs) > 0 and len(ys) > 0
    return _ks(ks_2samp(xs, ys, method="asymp"))


def digest(answer: str) -> str:
    """First 8 hex digits of the SHA-256 of ``answer`` stripped and lower-cased.

    Lets a public test compare a named answer without spelling it out.

    Example:
        >>> digest(" He ") == digest("he")
        True
    """
    return hashlib.sha256(answer.strip().lower().encode()).hexdigest()[:8]


def truth(value: Any, name: str) -> bool:
    """Return ``value`` (``bool``, a NumPy bool, a one-element bool array or tensor) as a bool.

    Fails naming ``name`` and the type got for anything else (``1``, ``"True"``, ``None``).

    Example:
        >>> truth(torch.tensor(True), "x")
        True
    """
    bad = f"{name} is {describe(value)}, but it should be True or False"
    if isinstance(value, (torch.Tensor, numpy.ndarray)):
        size = value.numel() if isinstance(value, torch.Tensor) else value.size
        assert size == 1 and str(value.dtype) in ("torch.bool", "bool"), bad
        value = value.item() if isinstance(value, torch.Tensor) else value.reshape(-1)[0].item()
    elif isinstance(value, numpy.generic):
        assert str(value.dtype) == "bool", bad
        value = value.item()
    assert isinstance(value, bool), bad
    return value
