"""Residual blocks and residual-aware initialization.

(Skeleton: ``Residual`` is used by ``initlab.models``; the initialization schemes are added here.)
"""

import torch
from torch import nn


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
