r"""Residual blocks and residual-aware initialisation.

A residual block :math:`y = x + F(x)` keeps the identity path's Jacobian :math:`I` in every
product of layer Jacobians (He et al. 2016). If :math:`F` starts at (or near) zero, a deep
stack starts as (close to) the identity map and neither signal nor gradient explodes:

* :func:`zero_init_residual_`: zero the last norm gain (or the last layer) of every branch,
  as torchvision's ``zero_init_residual`` (Goyal et al. 2017).
* :func:`residual_init_`: He where a layer reads a ReLU's output, LeCun where it reads the
  residual stream or the input, so every branch preserves the variance it is given.
* :func:`fixup_scale`, :func:`fixup_`: Fixup (Zhang, Dauphin & Ma 2019).
* :class:`ReZero`: :math:`y = x + \alpha F(x)`, :math:`\alpha = 0` (Bachlechner et al. 2020).
* :class:`SkipInit`: a scalar gate :math:`\alpha x`, :math:`\alpha = 0`, for the end of a
  branch (De & Smith 2020).
"""

import math

import torch
from torch import nn

from initlab._checks import check_int, check_real
from initlab._fans import fans
from initlab._layers import BATCH_NORMS, LAYERS
from initlab._scaling import InitSummary, LayerInit, init_layer_

__all__ = [
    "Residual",
    "ReZero",
    "SkipInit",
    "residual_init_",
    "zero_init_residual_",
    "fixup_scale",
    "fixup_",
]

_NORMS = (
    *BATCH_NORMS,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)
_LAYERS = LAYERS


class Residual(nn.Module):
    r"""A residual block ``y = x + branch_scale * branch(x)`` (He et al. 2016).

    The identity path turns the product of layer Jacobians into a sum,
    :math:`\partial y / \partial x = I + s\, \partial F / \partial x`.

    Args:
        branch: the residual branch F (any module mapping x to a tensor of x's shape).
        branch_scale: the constant s multiplying the branch (1/sqrt(L) scaling uses it).

    Example:
        >>> block = Residual(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)))
        >>> block(torch.zeros(2, 8)).shape
        torch.Size([2, 8])
    """

    def __init__(self, branch: nn.Module, branch_scale: float = 1.0) -> None:
        super().__init__()
        if not isinstance(branch, nn.Module):
            raise TypeError(f"branch must be an nn.Module, got {type(branch).__name__}")
        self.branch = branch
        self.branch_scale = float(branch_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        return x + out if self.branch_scale == 1.0 else x + self.branch_scale * out

    def extra_repr(self) -> str:
        return "" if self.branch_scale == 1.0 else f"branch_scale={self.branch_scale:g}"


def _residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    blocks = [
        (name or type(m).__name__, m)
        for name, m in model.named_modules()
        if isinstance(m, Residual | ReZero)
    ]
    if not blocks:
        raise ValueError(
            f"model ({type(model).__name__}) has no initlab.residual.Residual or ReZero block"
        )
    return blocks


def _zero_(module: nn.Module) -> None:
    for attr in ("weight", "bias"):
        p = getattr(module, attr, None)
        if isinstance(p, torch.Tensor):
            with torch.no_grad():
                p.zero_()


def zero_init_residual_(model: nn.Module) -> list[str]:
    r"""Make every residual branch of ``model`` output zero, so each block starts as identity.

    For each :class:`Residual` (or :class:`ReZero`) block: if the branch's last module with
    parameters (registration order) is a normalisation layer, its gain (``weight``) is set to
    zero, as torchvision's ``zero_init_residual=True`` does for the last BatchNorm of each
    ResNet block (Goyal et al. 2017, sec. 5.1); otherwise the weight of the branch's last
    ``Linear``/``Conv`` is. The zeroed module's ``bias`` is zeroed too, so the branch output
    is exactly zero and the block computes :math:`y = x`. Gradients still reach the zeroed
    parameters, so training moves them off zero at the first step.

    Returns:
        The names of the zeroed modules, one per block.

    Example:
        >>> block = Residual(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)))
        >>> zero_init_residual_(nn.Sequential(block))
        ['0.branch.2']
        >>> x = torch.randn(2, 8)
        >>> torch.equal(block(x), x)
        True
    """
    zeroed = []
    for name, block in _residual_blocks(model):
        parametric = [
            (n, m)
            for n, m in block.branch.named_modules()
            if any(True for _ in m.parameters(recurse=False))
        ]
        last = parametric[-1] if parametric else None
        if last is None or not isinstance(last[1], _NORMS):
            layers = [(n, m) for n, m in block.branch.named_modules() if isinstance(m, _LAYERS)]
            if not layers:
                raise ValueError(
                    f"branch of block {name!r} has no normalisation, Linear or Conv layer to zero"
                )
            last = layers[-1]
        _zero_(last[1])
        zeroed.append(f"{name}.branch.{last[0]}" if last[0] else f"{name}.branch")
    return zeroed


def residual_init_(
    model: nn.Module, *, bias: float | None = 0.0, generator: torch.Generator | None = None
) -> InitSummary:
    r"""He on every layer that reads a ReLU's output, LeCun on the rest, in place.

    In a residual network (He et al. 2016) a layer reads either a ReLU's output, whose second
    moment is half its input's, or the input / the residual stream, which no ReLU has halved.
    He's :math:`\operatorname{Var}[w] = 2/n_\text{in}` (He et al. 2015, eq. 10) keeps the
    first kind variance-preserving, LeCun's :math:`1/n_\text{in}` (LeCun et al. 1998, sec.
    4.6) the second. The rule, for models built like :func:`initlab.models.mlp` with
    ``residual=True`` (a stem, :class:`Residual` or :class:`ReZero` blocks, a head):

    * LeCun normal: every ``Linear``/``Conv`` outside the residual branches (the stem and the
      head) and the first ``Linear``/``Conv`` of every branch (it reads the stream);
    * He normal (gain :math:`\sqrt2`): every other ``Linear``/``Conv``.

    Each branch then adds :math:`q` to a stream of second moment :math:`q`: without a branch
    scale the stream doubles per block, which :mod:`initlab.residual`'s remedies undo.

    The draws are those of ``init_model_(model, "kaiming_normal", "relu", bias, generator)``
    followed by LeCun redraws (``lecun_normal_``) in the order stem, head, first layer of each
    block, so a seeded call equals that sequence written out by hand.

    Args:
        model: a module with at least one :class:`Residual` or :class:`ReZero` block
        bias: the value every bias is set to, or ``None`` to leave biases alone
        generator: the torch Generator to sample from (default: None)

    Returns:
        An :class:`~initlab.init.InitSummary` with each layer's target std.

    Example:
        >>> from initlab.models import mlp
        >>> net = mlp(16, 16, depth=2, out_features=4, residual=True)
        >>> print(residual_init_(net))  # doctest: +NORMALIZE_WHITESPACE
        layer                    shape                 fan_in fan_out        std
        ------------------------------------------------------------------------
        stem                     [16, 16]                  16      16       0.25
        block1.branch.linear1    [16, 16]                  16      16       0.25
        block1.branch.linear2    [16, 16]                  16      16     0.3536
        block2.branch.linear1    [16, 16]                  16      16       0.25
        block2.branch.linear2    [16, 16]                  16      16     0.3536
        head                     [4, 16]                   16       4       0.25
    """
    blocks = _residual_blocks(model)
    if bias is not None:
        check_real("bias", bias)
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, _LAYERS)]
    inside = {id(m) for _, block in blocks for m in block.branch.modules()}
    firsts = [next(m for m in b.branch.modules() if isinstance(m, _LAYERS)) for _, b in blocks]
    lecun = [m for _, m in layers if id(m) not in inside] + firsts
    std = {id(m): init_layer_(m, math.sqrt(2.0), "fan_in", "normal", generator) for _, m in layers}
    std |= {id(m): init_layer_(m, 1.0, "fan_in", "normal", generator) for m in lecun}
    if bias is not None:
        with torch.no_grad():
            for _, m in layers:
                if m.bias is not None:
                    m.bias.fill_(float(bias))
    return InitSummary(
        LayerInit(name or type(m).__name__, tuple(m.weight.shape), *fans(m), std[id(m)])
        for name, m in layers
    )


def fixup_scale(num_blocks: int, layers_per_branch: int) -> float:
    r"""Return Fixup's weight scale :math:`L^{-1/(2m-2)}` (Zhang, Dauphin & Ma 2019, Sec. 3).

    With :math:`L` residual blocks of :math:`m` layers each, scaling the (He-initialised)
    weights of all but the last layer of each branch by this factor, and zeroing the last,
    bounds the change of the network's output per SGD step independently of depth.

    Args:
        num_blocks: the number of residual branches L (int >= 1)
        layers_per_branch: the number of weight layers m in each branch (int >= 2)

    Example:
        >>> fixup_scale(16, 2)  # 16 blocks of two layers: 16 ** (-1/2)
        0.25
    """
    L = check_int("num_blocks", num_blocks, 1)
    m = check_int("layers_per_branch", layers_per_branch, 2)  # -1/(2m-2) undefined for m=1
    return L ** (-1.0 / (2 * m - 2))


def fixup_(model: nn.Module) -> dict[str, float]:
    r"""Apply Fixup's initialisation rule to every residual block of ``model``, in place.

    Fixup (Zhang, Dauphin & Ma 2019, sec. 3, rules 1 and 2), with :math:`L` the number of
    :class:`Residual`/:class:`ReZero` blocks: in each branch with :math:`m` ``Linear``/``Conv``
    layers (registration order), the last layer's weight is set to zero and every other
    layer's weight is multiplied by :func:`fixup_scale` :math:`(L, m) = L^{-1/(2m-2)}`; every
    bias of those layers is set to zero. The weights are assumed to be He-initialised already
    (e.g. by ``init_model_(model, "kaiming_normal", "relu")``). Left to the model: the
    zero-initialised classifier (the other half of rule 1) and rule 3, a scalar multiplier
    (initialised at 1) in every branch and scalar biases (initialised at 0) before each
    linear layer and activation, which changes nothing at initialisation.

    Returns:
        The scale applied to each block, by block name.

    Example:
        >>> blocks = [Residual(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)))
        ...           for _ in range(4)]
        >>> fixup_(nn.Sequential(*blocks))["0"]
        0.5
    """
    blocks = _residual_blocks(model)
    scales = {}
    for name, block in blocks:
        layers = [m for m in block.branch.modules() if isinstance(m, _LAYERS)]
        if len(layers) < 2:
            raise ValueError(
                f"layers_per_branch must be >= 2 for Fixup, but the branch of block {name!r} "
                f"has {len(layers)} Linear/Conv layer(s)"
            )
        scale = fixup_scale(len(blocks), len(layers))
        with torch.no_grad():
            for m in layers[:-1]:
                m.weight.mul_(scale)
                if m.bias is not None:
                    m.bias.zero_()
        _zero_(layers[-1])
        scales[name] = scale
    return scales


class ReZero(nn.Module):
    r"""A residual block with a learnable zero-initialised gate: :math:`y = x + \alpha F(x)`.

    ReZero (Bachlechner, Majumder, Mao, Cottrell & McAuley 2020): with
    :math:`\alpha = 0` every block is the identity at initialisation, the input-output
    Jacobian is :math:`I`, and :math:`\alpha` learns how much of each branch to use.

    Args:
        branch: the residual branch F
        alpha: the initial value of the gate (default 0)

    Example:
        >>> block = ReZero(nn.Sequential(nn.Linear(8, 8), nn.ReLU()))
        >>> x = torch.randn(2, 8)
        >>> torch.equal(block(x), x)
        True
    """

    def __init__(self, branch: nn.Module, alpha: float = 0.0) -> None:
        super().__init__()
        if not isinstance(branch, nn.Module):
            raise TypeError(f"branch must be an nn.Module, got {type(branch).__name__}")
        self.branch = branch
        self.alpha = nn.Parameter(torch.tensor(check_real("alpha", alpha)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.alpha * self.branch(x)


class SkipInit(nn.Module):
    r"""A learnable scalar gate :math:`y = \alpha x`, :math:`\alpha` initialised to 0.

    SkipInit (De & Smith 2020, sec. 4): put it at the end of a residual branch,
    ``Residual(nn.Sequential(..., SkipInit()))``, so the branch starts at zero and the block at
    the identity, which is what batch normalisation achieves implicitly in deep ResNets.

    Args:
        alpha: the initial value of the gate (default 0)

    Example:
        >>> block = Residual(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), SkipInit()))
        >>> x = torch.randn(2, 8)
        >>> torch.equal(block(x), x)
        True
    """

    def __init__(self, alpha: float = 0.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(check_real("alpha", alpha)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * x

    def extra_repr(self) -> str:
        return f"alpha={self.alpha.item():g}"
