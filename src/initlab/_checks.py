"""Argument checks shared by :mod:`initlab.init`, :mod:`initlab.lsuv` and :mod:`initlab.residual`."""

import numbers

import torch


class ArgumentError(ValueError, RuntimeError):
    """A bad argument where ``torch.nn.init`` raises a ``RuntimeError`` from the tensor op.

    It is a ``ValueError`` (this library's rule) and a ``RuntimeError`` (what code written
    against ``torch.nn.init`` catches), so both ``except`` clauses keep working.
    """


def check_tensor(tensor: object) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    return tensor


def check_real(name: str, value: object) -> float:
    """``value`` must be a real number (int or float, not bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number (int or float), got {value!r}")
    return float(value)


def check_positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    x = check_real(name, value)
    if not (x >= 0 if allow_zero else x > 0) or x != x:
        allowed = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a real number {allowed}, got {value!r}")
    return x


def check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def skip(tensor: torch.Tensor) -> bool:
    """True for the tensors every init function leaves alone: zero-element and meta."""
    return tensor.numel() == 0 or tensor.is_meta
