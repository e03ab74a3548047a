r"""Structured initialisations: identity, Dirac, orthogonal, sparse.

Private helper of :mod:`initlab.init`; import these from there. Each matches
``torch.nn.init`` (torch 2.13) bit for bit with the same seed, except that :func:`sparse_`
also draws its mask from ``generator``.
"""

import math

import torch
from torch import Tensor

from initlab._checks import ArgumentError, check_int, check_real, check_tensor, skip


def eye_(tensor: Tensor) -> Tensor:
    r"""Fill the 2-dimensional input `Tensor` with the identity matrix.

    Preserves the identity of the inputs in `Linear` layers, where as many inputs are
    preserved as possible: :math:`W_{ij} = \delta_{ij}`.

    Args:
        tensor: a 2-dimensional `torch.Tensor`

    Example:
        >>> eye_(torch.empty(2, 3))
        tensor([[1., 0., 0.],
                [0., 1., 0.]])
    """
    check_tensor(tensor)
    if tensor.ndimension() != 2:
        raise ValueError(
            f"Only tensors with 2 dimensions are supported, got shape {tuple(tensor.shape)}"
        )
    if skip(tensor):
        return tensor
    with torch.no_grad():
        torch.eye(*tensor.shape, out=tensor, requires_grad=tensor.requires_grad)
    return tensor


def dirac_(tensor: Tensor, groups: int = 1) -> Tensor:
    r"""Fill the {3, 4, 5}-dimensional input `Tensor` with the Dirac delta function.

    Preserves the identity of the inputs in convolutional layers, where as many input
    channels are preserved as possible (per group when ``groups > 1``): the kernel of output
    channel ``g*C_out/g + d`` is a unit impulse at the centre of input channel ``d``, so an odd
    kernel with "same" padding maps ``x`` to ``x``.

    Args:
        tensor: a {3, 4, 5}-dimensional `torch.Tensor`
        groups: number of groups in the conv layer (default: 1)

    Example:
        >>> w = dirac_(torch.empty(3, 3, 3))
        >>> x = torch.randn(1, 3, 10)
        >>> torch.equal(torch.nn.functional.conv1d(x, w, padding=1), x)
        True
    """
    check_tensor(tensor)
    dimensions = tensor.ndimension()
    if dimensions not in [3, 4, 5]:
        raise ValueError(
            "Only tensors with 3, 4, or 5 dimensions are supported, "
            f"got shape {tuple(tensor.shape)}"
        )
    groups = check_int("groups", groups, 1)
    sizes = tensor.size()
    if sizes[0] % groups != 0:
        raise ValueError(f"dim 0 must be divisible by groups: dim 0 is {sizes[0]}, groups={groups}")
    if skip(tensor):
        return tensor
    out_per_group = sizes[0] // groups
    min_dim = min(out_per_group, sizes[1])
    d = torch.arange(min_dim, device=tensor.device).repeat(groups)
    g = torch.arange(groups, device=tensor.device).repeat_interleave(min_dim)
    centre = tuple(s // 2 for s in sizes[2:])
    with torch.no_grad():
        tensor.zero_()
        tensor[(g * out_per_group + d, d, *centre)] = 1
    return tensor


def orthogonal_(
    tensor: Tensor, gain: float = 1, generator: torch.Generator | None = None
) -> Tensor:
    r"""Fill the input `Tensor` with a (semi) orthogonal matrix.

    Saxe, McClelland & Ganguli (2014), "Exact solutions to the nonlinear dynamics of
    learning in deep linear neural networks". Trailing dimensions are flattened to a
    ``rows x cols`` matrix :math:`W` with :math:`W W^\top = \text{gain}^2 I` (rows <= cols) or
    :math:`W^\top W = \text{gain}^2 I` (rows > cols): the QR factor of a Gaussian matrix, its
    columns' signs fixed by :math:`\operatorname{sign}(\operatorname{diag} R)` so that it is
    Haar-distributed (Mezzadri 2007).

    Args:
        tensor: an n-dimensional `torch.Tensor`, where :math:`n \geq 2`
        gain: optional scaling factor
        generator: the torch Generator to sample from (default: None)

    Example:
        >>> w = orthogonal_(torch.empty(3, 5))
        >>> torch.allclose(w @ w.T, torch.eye(3), atol=1e-6)
        True
    """
    check_tensor(tensor)
    if tensor.ndimension() < 2:
        raise ValueError(
            f"Only tensors with 2 or more dimensions are supported, got shape {tuple(tensor.shape)}"
        )
    check_real("gain", gain)
    if skip(tensor):
        return tensor
    rows = tensor.size(0)
    cols = tensor.numel() // rows
    flattened = tensor.new_empty((rows, cols)).normal_(0, 1, generator=generator)
    if rows < cols:
        flattened.t_()
    q, r = torch.linalg.qr(flattened)
    q *= torch.diag(r, 0).sign()
    if rows < cols:
        q.t_()
    with torch.no_grad():
        tensor.view_as(q).copy_(q)
        tensor.mul_(gain)
    return tensor


def sparse_(
    tensor: Tensor, sparsity: float, std: float = 0.01, generator: torch.Generator | None = None
) -> Tensor:
    r"""Fill the 2D input `Tensor` as a sparse matrix.

    Non-zero elements are drawn from :math:`\mathcal{N}(0, \text{std}^2)`, and in each column
    :math:`\lceil \text{sparsity} \cdot \text{rows} \rceil` randomly chosen entries are set to
    zero (Martens 2010, "Deep learning via Hessian-free optimization", sec. 5). The mask's
    permutations come from ``generator`` too, so a seeded generator fixes the whole result
    (torch draws them from the global generator; with ``generator=None`` the two agree).

    Args:
        tensor: a 2-dimensional `torch.Tensor`
        sparsity: the fraction of elements in each column to be set to zero, in [0, 1]
        std: the standard deviation of the normal distribution of the non-zero values (>= 0)
        generator: the torch Generator to sample from (default: None)

    Example:
        >>> w = sparse_(torch.empty(10, 4), sparsity=0.3)
        >>> (w == 0).sum(0).tolist()
        [3, 3, 3, 3]
    """
    check_tensor(tensor)
    if tensor.ndimension() != 2:
        raise ValueError(
            f"Only tensors with 2 dimensions are supported, got shape {tuple(tensor.shape)}"
        )
    if not 0.0 <= check_real("sparsity", sparsity) <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity!r}")
    if check_real("std", std) < 0:
        raise ArgumentError(
            f"normal expects std >= 0.0, but found std {std}: std must be a number >= 0"
        )
    if skip(tensor):
        return tensor
    rows, cols = tensor.shape
    num_zeros = math.ceil(sparsity * rows)
    with torch.no_grad():
        tensor.normal_(0, std, generator=generator)
        # One permutation per column, drawn in torch's order, then a single scatter of zeros.
        zero_rows = torch.empty(cols, num_zeros, dtype=torch.long)
        for c in range(cols):
            zero_rows[c] = torch.randperm(rows, generator=generator)[:num_zeros]
        tensor.scatter_(0, zero_rows.t().to(tensor.device), 0.0)
    return tensor
