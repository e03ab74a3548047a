r"""Residual blocks and residual-aware initialisation.

A residual block :math:`y = x + F(x)` keeps the identity path's Jacobian :math:`I` in every
product of layer Jacobians (He et al. 2016). If :math:`F` starts at (or near) zero, a deep
stack starts as (close to) the identity map and neither signal nor gradient explodes:

* :func:`zero_init_residual_`: zero the last norm gain (or the last layer) of every branch,
  as torchvision's ``zero_init_residual`` (Goyal et al. 2017).
* :func:`fixup_scale`, :func:`fixup_`: Fixup (Zhang, Dauphin & Ma 2019).
* :class:`ReZero`: :math:`y = x + \alpha F(x)`, :math:`\alpha = 0` (Bachlechner et al. 2020).
* :class:`SkipInit`: a scalar gate :math:`\alpha x`, :math:`\alpha = 0`, for the end of a
  branch (De & Smith 2020).
"""

import torch
from torch import nn

from initlab._checks import check_int, check_real

__all__ = ["Residual", "ReZero", "SkipInit", "zero_init_residual_", "fixup_scale", "fixup_"]

_NORMS = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)
_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


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
