"""The argument checks every initlab module uses (private; the rule is :mod:`initlab.errors`).

Wrong type: :class:`~initlab.errors.ArgumentTypeError` (a ``TypeError``). Wrong value:
``ValueError``. Each message names the argument, the value and what is allowed.
"""

import math
import numbers
from collections.abc import Sequence

import torch

from initlab.errors import ArgumentError, ArgumentTypeError

CLIP_MODES = ("norm", "value", "agc")

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "check_bool",
    "check_choice",
    "check_clip",
    "check_int",
    "check_number",
    "check_positive",
    "check_real",
    "check_tensor",
    "skip",
]


def check_tensor(tensor: object, name: str = "tensor") -> torch.Tensor:
    """``tensor`` must be a ``torch.Tensor``."""
    if not isinstance(tensor, torch.Tensor):
        raise ArgumentTypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    return tensor


def check_real(name: str, value: object) -> float:
    """``value`` must be a real number (int or float, not bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a real number (int or float), got {value!r}")
    return float(value)


def check_positive(
    name: str, value: object, *, allow_zero: bool = False, finite: bool = False
) -> float:
    """``value`` must be a real number > 0 (``>= 0`` with ``allow_zero``), never NaN, and
    not infinite with ``finite``."""
    x = check_real(name, value)
    if not (x >= 0 if allow_zero else x > 0) or x != x or (finite and not math.isfinite(x)):
        allowed = (">= 0" if allow_zero else "> 0") + (" and finite" if finite else "")
        raise ValueError(f"{name} must be a real number {allowed}, got {value!r}")
    return x


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` must be an int (not bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_bool(name: str, value: object) -> bool:
    """``value`` must be a bool (``0``/``1`` or ``None`` are not)."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be a bool, got {value!r}")
    return value


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` must be one of ``choices`` (a wrong type is a wrong value here)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_number(name: str, value: object, *, integer: bool = False, zero_ok: bool = False) -> None:
    """``value`` must be a finite number > 0 (>= 0 with ``zero_ok``), an int if ``integer``."""
    if integer:
        check_int(name, value, 0 if zero_ok else 1)
    else:
        check_positive(name, value, allow_zero=zero_ok, finite=True)


def check_clip(clip: object) -> tuple[str, float] | None:
    """Validate a ``clip`` argument: ``None`` or ``(mode, positive number)``."""
    if clip is None:
        return None
    if not isinstance(clip, tuple | list) or len(clip) != 2:
        raise ValueError(
            f"clip must be None or a pair (mode, value) with mode in {CLIP_MODES}, got {clip!r}"
        )
    mode, value = clip
    if mode not in CLIP_MODES:
        raise ValueError(f"clip mode must be one of {CLIP_MODES}, got {mode!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e308:
        name = {"norm": "max_norm", "value": "clip value", "agc": "agc factor"}[mode]
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return mode, float(value)


def skip(tensor: torch.Tensor) -> bool:
    """True for the tensors every init function leaves alone: zero-element and meta."""
    return tensor.numel() == 0 or tensor.is_meta
