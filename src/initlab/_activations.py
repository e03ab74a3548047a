"""The one activation-name resolver (private), shared by :func:`initlab.init.gain_for` and
:mod:`initlab.theory`: a name or a callable becomes a function of a float64 tensor (or of a
NumPy array, for NumPy functions).

Names are looked up in :data:`initlab.models.ACTIVATIONS` (``"scaled_sigmoid"``, ...), then
in ``torch.nn.functional`` and ``torch``; ``"linear"`` and ``"identity"`` are the identity.
"""

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn


def identity(h: Any) -> Any:
    """The "linear" activation (callers may test ``f is identity`` to skip an integral)."""
    return h


def resolve(fn: Callable | str, argname: str = "fn") -> Callable:
    """Return ``fn`` as a callable: a name is looked up, a NumPy ufunc is made NumPy-only, an
    ``nn.Module`` with parameters gets its inputs cast to its dtype and its outputs to float64.
    """
    if isinstance(fn, str):
        return _by_name(fn, argname)
    if isinstance(fn, np.ufunc):
        return _numpy_only(fn)
    if isinstance(fn, nn.Module):
        dtype = next((p.dtype for p in fn.parameters()), None)
        if dtype is not None and dtype != torch.float64:
            return lambda z: fn(z.to(dtype)).double()
        return fn
    if callable(fn):
        return fn
    raise TypeError(f"{argname} must be a callable or an activation name, got {type(fn).__name__}")


def _by_name(name: str, argname: str) -> Callable:
    if name in ("linear", "identity"):
        return identity
    from initlab.models import ACTIVATIONS  # lazy: models imports residual, not this

    f = ACTIVATIONS.get(name) or getattr(nn.functional, name, None) or getattr(torch, name, None)
    if isinstance(f, type) and issubclass(f, nn.Module):
        f = f()
    if not callable(f):
        raise ValueError(
            f"{argname}={name!r} is not a function of initlab.models.ACTIVATIONS, "
            "torch.nn.functional or torch; pass a callable"
        )
    return f


def _numpy_only(fn: Callable) -> Callable:
    """Make ``gaussian_expectation`` take its NumPy path (and derivatives a difference quotient)."""

    def g(h: Any) -> Any:
        if isinstance(h, torch.Tensor):
            raise TypeError("a NumPy function")
        return fn(h)

    return g
