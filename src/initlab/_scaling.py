r"""The variance-scaling core (private): a std from fan, mode and gain, and the draw.

Every initialiser that draws zero-mean weights of variance :math:`\text{gain}^2/\text{fan}`
goes through :func:`std_from_fan` and :func:`draw_` (and :func:`init_layer_`, both for a
layer): :func:`initlab.init.variance_scaling_` and the
``xavier_*``, ``kaiming_*`` and ``lecun_*`` wrappers over it, :func:`initlab.init.init_model_`
and its summary, and :func:`initlab.residual.residual_init_`. They import from here; nothing
here imports them.
"""

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from initlab import _truncnorm
from initlab._checks import skip
from initlab._fans import FAN_MODES, correct_fan, fans
from initlab._table import RowTable


class LayerInit(NamedTuple):
    """One row of :func:`init_model_`'s summary; ``std`` is the scheme's target std."""

    name: str
    shape: tuple[int, ...]
    fan_in: int
    fan_out: int
    std: float


class InitSummary(RowTable):
    """A list of :class:`LayerInit` rows that prints as a table."""

    columns = (
        ("name", "layer", "<24", ""),
        ("shape", "shape", "<20", ""),
        ("fan_in", "fan_in", ">7", ""),
        ("fan_out", "fan_out", ">7", ""),
        ("std", "std", ">10", ".4g"),
    )


DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")
#: Standard deviation of N(0, 1) truncated to [-2, 2], computed from erf (about 0.8796).
TRUNCATED_STD = _truncnorm.truncated_std(-2.0, 2.0)


def check_distribution(distribution: object) -> str:
    """``distribution`` must be one of :data:`DISTRIBUTIONS`."""
    if not isinstance(distribution, str) or distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {list(DISTRIBUTIONS)}, got {distribution!r}")
    return distribution


def std_from_fan(
    gain: float, fan_in: float, fan_out: float, mode: str, allowed: tuple[str, ...] = FAN_MODES
) -> float:
    r"""Return :math:`\text{gain}/\sqrt{\text{fan}}` with the fan :func:`correct_fan` picks.

    ``mode`` is checked against ``allowed`` (case-insensitive, as torch). For
    ``"fan_avg"``, :math:`\sqrt{1/\text{fan}}` with the exact :math:`\text{fan} =
    (n_\text{in} + n_\text{out})/2` is the same correctly rounded number as torch's Xavier
    :math:`\sqrt{2/(n_\text{in} + n_\text{out})}`, and ``gain / sqrt(fan)`` is torch's
    Kaiming, so the wrappers stay bit-identical to ``torch.nn.init``. A zero fan (a
    zero-element weight, which :func:`draw_` leaves alone) gives NaN.
    """
    fan = correct_fan(fan_in, fan_out, mode, allowed)
    if fan == 0:
        return math.nan
    if mode.lower() == "fan_avg":
        return gain * math.sqrt(1.0 / fan)
    return gain / math.sqrt(fan)


def draw_(
    tensor: Tensor, std: float, distribution: str, generator: torch.Generator | None
) -> Tensor:
    """Fill ``tensor`` in place with zero-mean values of standard deviation ``std``.

    ``"uniform"``: :math:`\\mathcal{U}(-\\sqrt3\\,\\text{std}, \\sqrt3\\,\\text{std})`;
    ``"normal"``: :math:`\\mathcal{N}(0, \\text{std}^2)`; ``"truncated_normal"``: a normal cut
    at two of its standard deviations and widened by :data:`TRUNCATED_STD` so that the
    result still has standard deviation ``std``. Zero-element and meta tensors are left alone.
    """
    if skip(tensor):
        return tensor
    with torch.no_grad():
        if distribution == "uniform":
            bound = math.sqrt(3.0) * std  # U(-b, b) has variance b^2 / 3
            return tensor.uniform_(-bound, bound, generator=generator)
        if distribution == "normal":
            return tensor.normal_(0, std, generator=generator)
        s = std / TRUNCATED_STD  # N(0, s^2) cut at +-2s has standard deviation std
        return _truncnorm.sample_(tensor, 0.0, s, -2.0 * s, 2.0 * s, generator)


def init_layer_(
    layer: nn.Module, gain: float, mode: str, distribution: str, generator: torch.Generator | None
) -> float:
    """Draw a ``Linear``/``Conv*`` layer's weight with its true fans; return the std used."""
    fan_in, fan_out = fans(layer)
    std = std_from_fan(gain, fan_in, fan_out, mode)
    draw_(layer.weight, std, distribution, generator)
    return std
