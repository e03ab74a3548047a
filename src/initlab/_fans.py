r"""Fan-in and fan-out of a weight tensor or a layer (private helper of :mod:`initlab.init`).

The receptive-field rule
------------------------
A weight's *fan-in* is the number of inputs that feed one output unit; its *fan-out* is the
number of outputs that one input unit feeds. They are the :math:`n_\text{in}` and
:math:`n_\text{out}` of the variance derivation, :math:`\operatorname{Var}[y] = n_\text{in}
\sigma^2 \operatorname{Var}[x]` forward and :math:`\operatorname{Var}[\partial x] = n_\text{out}
\sigma^2 \operatorname{Var}[\partial y]` backward (Glorot & Bengio 2010, eqs. 10-11; He et al.
2015, eqs. 10 and 14).

With :math:`k = \prod` (kernel sizes) the receptive field and :math:`g` the groups:

=========================================== ===================== =====================
layer and weight shape                      fan_in                fan_out
=========================================== ===================== =====================
``Linear``: ``[out, in]``                   ``in``                ``out``
``Conv``: ``[C_out, C_in/g, *kernel]``      ``(C_in/g) * k``      ``(C_out/g) * k``
``ConvTranspose``: ``[C_in, C_out/g, *k]``  ``(C_in/g) * k``      ``(C_out/g) * k``
=========================================== ===================== =====================

*Convolution*: an output unit sums over the ``C_in/g`` channels of its group at ``k``
positions, so ``fan_in = size(1) * k``; an input unit is seen by the ``C_out/g`` output
channels of its group, each at ``k`` positions, so ``fan_out = (size(0)/g) * k``.
``torch.nn.init`` uses ``size(0) * k`` and so over-counts ``fan_out`` by ``g`` (by ``C_out``
for a depthwise convolution).

*Transposed convolution* is the backward pass of a convolution: its weight is stored
``[C_in, C_out/g, *kernel]``. One input unit scatters into ``C_out/g`` channels at ``k``
positions (``fan_out = size(1) * k``) and one output unit gathers from the ``C_in/g`` channels
of its group at ``k`` positions (``fan_in = (size(0)/g) * k``). ``torch.nn.init`` reads the
two dimensions the convolution way round and so swaps the fans.

The counts are for stride 1 and interior positions; a stride ``s`` divides the fan-out of a
convolution and the fan-in of a transposed convolution by about ``prod(s)``, and zero padding
lowers both at the border. Dilation changes neither.
"""

import math

import torch
from torch import nn

from initlab._checks import check_bool, check_int
from initlab._layers import CONVS

FAN_MODES = ("fan_in", "fan_out", "fan_avg")


def fan_in_and_fan_out(
    tensor: torch.Tensor, groups: int = 1, transposed: bool = False
) -> tuple[int, int]:
    r"""Return ``(fan_in, fan_out)`` of a Linear or (grouped, transposed) convolution weight.

    Follows the receptive-field rule of this module (see the table above): for a convolution
    weight ``[C_out, C_in/g, *kernel]``, ``fan_in = (C_in/g) * k`` and ``fan_out =
    (C_out/g) * k``; for a transposed one ``[C_in, C_out/g, *kernel]``, ``fan_in =
    (C_in/g) * k`` and ``fan_out = (C_out/g) * k``, with ``k`` the product of the kernel
    sizes. With ``groups=1, transposed=False`` this equals torch's
    ``_calculate_fan_in_and_fan_out``.

    Args:
        tensor: a weight with at least 2 dimensions.
        groups: the ``groups`` of the convolution (``C_in`` for depthwise).
        transposed: ``True`` for a ``ConvTranspose*`` weight.

    Example:
        >>> w = torch.empty(64, 1, 3, 3)  # depthwise conv, 64 channels, groups=64
        >>> fan_in_and_fan_out(w, groups=64)
        (9, 9)
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() < 2:
        raise ValueError(
            "Fan in and fan out can not be computed for tensor with fewer than 2 dimensions"
        )
    groups = check_int("groups", groups, 1)
    check_bool("transposed", transposed)
    if tensor.size(0) % groups != 0:
        raise ValueError(
            f"groups={groups} must divide dim 0 of the weight (shape {tuple(tensor.shape)})"
        )
    k = math.prod(tensor.shape[2:])
    if transposed:
        return (tensor.size(0) // groups) * k, tensor.size(1) * k
    return tensor.size(1) * k, (tensor.size(0) // groups) * k


def fans(module: nn.Module) -> tuple[int, int]:
    """Return ``(fan_in, fan_out)`` of a ``nn.Linear``, ``nn.Conv*`` or ``nn.ConvTranspose*``.

    Reads ``groups`` and whether the layer is transposed from the module, so depthwise,
    grouped and transposed convolutions get their true fans (see :func:`fan_in_and_fan_out`).

    Example:
        >>> fans(nn.ConvTranspose2d(16, 8, 3))  # weight [16, 8, 3, 3]
        (144, 72)
    """
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, CONVS):
        return fan_in_and_fan_out(
            module.weight, groups=module.groups, transposed=bool(module.transposed)
        )
    raise TypeError(
        f"module must be an nn.Linear, nn.Conv* or nn.ConvTranspose*, got {type(module).__name__}"
    )


def correct_fan(fan_in: int, fan_out: int, mode: str, allowed: tuple[str, ...]) -> float:
    """Pick ``fan_in``, ``fan_out`` or their mean by ``mode`` (case-insensitive, as torch)."""
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, one of {list(allowed)}, got {mode!r}")
    mode = mode.lower()
    if mode not in allowed:
        raise ValueError(f"Mode {mode} not supported, please use one of {list(allowed)}")
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    return (fan_in + fan_out) / 2
