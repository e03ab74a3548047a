"""Gaussian expectations by Gauss–Hermite quadrature (private; public as
:func:`initlab.theory.gaussian_expectation`, shared by ``init`` and ``theory``).

For z ~ N(0, 1), E[f(z)] = (1/sqrt(pi)) * sum_i w_i f(sqrt(2) x_i), where (x_i, w_i) are the
nodes and weights of the physicists' Gauss–Hermite rule (exact for polynomials of degree
< 2n). Smooth activations converge fast; kinked ones (ReLU) converge more slowly, so the
default uses many nodes.
"""

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch

from initlab._checks import ArgumentTypeError, check_int, check_real

DEFAULT_NODES = 201


@lru_cache(maxsize=8)
def gauss_hermite_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the n-point rule for E[f(z)], z ~ N(0, 1): sum(w * f(z))."""
    x, w = np.polynomial.hermite.hermgauss(n)
    return np.sqrt(2.0) * x, w / np.sqrt(np.pi)


_rule = gauss_hermite_rule  # the old private name


def gaussian_expectation(
    f: Callable, mean: float = 0.0, std: float = 1.0, n: int = DEFAULT_NODES
) -> float:
    """Return E[f(X)] for X ~ N(mean, std**2), by n-point Gauss–Hermite quadrature.

    ``f`` may be a NumPy function or a torch function (``torch.tanh``, ``F.gelu``,
    an ``nn.Module``); it is called once on a float64 array/tensor of the nodes.

    Example:
        >>> round(gaussian_expectation(lambda z: z**2), 12)
        1.0
    """
    if not callable(f):
        raise ArgumentTypeError(f"f must be callable, got {type(f).__name__}")
    check_int("n", n, 2)
    if check_real("std", std) < 0:
        raise ValueError(f"std must be >= 0, got {std!r}")
    z, w = gauss_hermite_rule(n)
    x = mean + std * z
    try:
        y = f(torch.from_numpy(x))
        y = y.detach().double().numpy() if isinstance(y, torch.Tensor) else np.asarray(y, float)
    except TypeError:
        y = np.asarray(f(x), dtype=float)
    return float(np.dot(w, y))
