"""``init_model_``: one named scheme for every Linear/Conv layer of a model.

Private helper of :mod:`initlab.init`; import :func:`init_model_` from there. It draws through
the variance-scaling core (:mod:`initlab._scaling`) and imports nothing from ``initlab.init``.
"""

import math
from collections.abc import Callable

import torch
from torch import nn

from initlab._checks import check_positive, check_real
from initlab._fans import fans
from initlab._gain import calculate_gain, gain_for
from initlab._layers import LAYERS
from initlab._scaling import InitSummary, LayerInit, init_layer_
from initlab._structured import orthogonal_

# scheme -> (mode, distribution, uses the nonlinearity's gain)
SCHEMES = {
    "kaiming_normal": ("fan_in", "normal", True),
    "kaiming_uniform": ("fan_in", "uniform", True),
    "kaiming_truncated_normal": ("fan_in", "truncated_normal", True),
    "xavier_normal": ("fan_avg", "normal", True),
    "xavier_uniform": ("fan_avg", "uniform", True),
    "lecun_normal": ("fan_in", "normal", False),
    "lecun_uniform": ("fan_in", "uniform", False),
    "orthogonal": (None, None, True),
}


def _gain(nonlinearity: str | Callable | None) -> float:
    if nonlinearity is None:
        return 1.0
    if isinstance(nonlinearity, str):
        return float(calculate_gain(nonlinearity))
    if callable(nonlinearity):
        return gain_for(nonlinearity)
    raise TypeError(
        f"nonlinearity must be a calculate_gain name, a callable or None, got {nonlinearity!r}"
    )


def init_model_(
    model: nn.Module,
    scheme: str = "kaiming_normal",
    nonlinearity: str | Callable | None = None,
    bias: float | None = 0.0,
    generator: torch.Generator | None = None,
    *,
    scale: float = 1.0,
    bias_std: float = 0.0,
) -> InitSummary:
    r"""Initialise every ``Linear``/``Conv*``/``ConvTranspose*`` weight of ``model`` in place.

    Each weight gets :math:`\operatorname{Var}[w] = \text{gain}^2 / \text{fan}` through
    :func:`~initlab.init.variance_scaling_`, with the layer's true fans (:func:`~initlab.init.fans`:
    grouped, depthwise and transposed convolutions included). Schemes:

    ========================== ============ ============================================
    scheme                     fan          distribution
    ========================== ============ ============================================
    ``kaiming_normal``         fan_in       normal (He et al. 2015)
    ``kaiming_uniform``        fan_in       uniform
    ``kaiming_truncated_normal`` fan_in     normal cut at 2 std, variance kept
    ``xavier_normal``          fan_avg      normal (Glorot & Bengio 2010)
    ``xavier_uniform``         fan_avg      uniform
    ``lecun_normal``           fan_in       normal, gain 1 (LeCun et al. 1998)
    ``lecun_uniform``          fan_in       uniform, gain 1
    ``orthogonal``             --           orthogonal times gain (Saxe et al. 2014)
    ========================== ============ ============================================

    Args:
        model: the module to initialise (its own weight counts if it is a layer itself)
        scheme: one of the names above
        nonlinearity: a :func:`~initlab.init.calculate_gain` name or a callable (its gain is
            :func:`~initlab.init.gain_for`); ignored by ``lecun_*``. ``None`` (the default)
            means each scheme's own: ``"relu"`` (gain :math:`\sqrt{2}`) for ``kaiming_*``, as
            He et al. derived it, and gain 1 for ``xavier_*`` and ``orthogonal``, so that
            ``"xavier_normal"`` alone is Glorot & Bengio's :math:`\sigma^2 = 2/(n_{in}+n_{out})`.
        bias: the value every bias is set to, or ``None`` to leave biases alone
        generator: the torch Generator to sample from (default: None)
        scale: a factor (> 0) on every weight's standard deviation, e.g. ``3 ** -0.5`` with
            ``"lecun_uniform"`` for PyTorch's default :math:`\mathcal{U}(-1/\sqrt{n_{in}},
            1/\sqrt{n_{in}})` (variance :math:`1/(3 n_{in})`)
        bias_std: with ``bias_std > 0`` every bias is drawn from
            :math:`\mathcal{N}(\text{bias}, \text{bias\_std}^2)` right after its layer's weight,
            from the same generator. The mean-field networks of Poole et al. (2016) and
            Schoenholz et al. (2017), :math:`W_{ij} \sim \mathcal{N}(0, \sigma_w^2/n_{in})`,
            :math:`b_i \sim \mathcal{N}(0, \sigma_b^2)`, are
            ``init_model_(net, "lecun_normal", scale=sigma_w2 ** 0.5, bias_std=sigma_b2 ** 0.5)``

    Returns:
        An :class:`InitSummary` (prints as a table): name, shape, fan_in, fan_out, target std.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> print(init_model_(net, "kaiming_normal", "relu"))  # doctest: +NORMALIZE_WHITESPACE
        layer                    shape                 fan_in fan_out        std
        ------------------------------------------------------------------------
        0                        [8, 4]                     4       8     0.7071
        2                        [2, 8]                     8       2        0.5
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")
    if bias is not None:
        check_real("bias", bias)
    scale = check_positive("scale", scale, finite=True)
    bias_std = check_positive("bias_std", bias_std, allow_zero=True, finite=True)
    if bias is None and bias_std > 0:
        raise ValueError("bias_std > 0 draws the biases around `bias`: pass a number, not None")
    mode, distribution, uses_gain = SCHEMES[scheme]
    if nonlinearity is None and scheme.startswith("kaiming"):
        nonlinearity = "relu"
    gain = _gain(nonlinearity) if uses_gain else 1.0
    if not (math.isfinite(gain) and gain > 0):
        raise ValueError(f"the gain of nonlinearity={nonlinearity!r} must be > 0, got {gain!r}")
    layers = [
        (name or type(m).__name__, m) for name, m in model.named_modules() if isinstance(m, LAYERS)
    ]
    if not layers:
        raise ValueError(
            f"model ({type(model).__name__}) has no nn.Linear, nn.Conv* or nn.ConvTranspose* "
            "layer to initialise"
        )
    summary = InitSummary()
    for name, m in layers:
        fan_in, fan_out = fans(m)
        w = m.weight
        if scheme == "orthogonal":
            orthogonal_(w, gain * scale, generator=generator)
            std = gain * scale / math.sqrt(max(w.size(0), w.numel() // max(w.size(0), 1)))
        else:
            std = init_layer_(m, gain * scale, mode, distribution, generator)
        if bias is not None and m.bias is not None:
            with torch.no_grad():
                if bias_std > 0:
                    m.bias.normal_(float(bias), bias_std, generator=generator)
                else:
                    m.bias.fill_(float(bias))
        summary.append(LayerInit(name, tuple(w.shape), fan_in, fan_out, std))
    return summary
