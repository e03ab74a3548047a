r"""Private helper of :mod:`initlab.train`: gradient clipping and normalisation (public
there), on torch's public ``torch.nn.utils`` norms.

Three ways to tame a gradient, and how they change its direction:

* clipping by norm (Pascanu et al. 2013): if the total norm :math:`\|g\|` of all gradients
  exceeds ``max_norm``, scale *all* of them by ``max_norm / ||g||``: the direction is kept, only
  the step length is capped, and only on steps where it is too long;
* clipping by value: clamp every element to ``[-v, v]``: cheap, but changes the direction
  whenever some elements are clamped and others are not;
* adaptive (unit-wise) clipping, AGC (Brock et al. 2021): cap each unit's gradient norm relative
  to the norm of that unit's weights; the direction within each unit is kept, the relative
  weighting of units changes only for units whose update would be too large *relative to their
  weights*, which is scale-free across layers;
* gradient normalisation (not a clip): every step, every parameter's gradient is shifted and
  rescaled to zero mean and unit variance, whatever its size; the per-parameter rescaling
  changes the relative weighting of parameters (a per-tensor cousin of Adam's per-element
  scaling), and the mean subtraction also removes a component of the direction inside each
  tensor; it remains a descent direction, no longer parallel to the gradient.
"""

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from initlab._checks import check_clip, check_number

__all__ = [
    "check_clip",
    "check_number",
    "clip_grad_agc_",
    "clip_grads_",
    "normalize_grads_",
    "total_grad_norm",
]

_Params = Iterable[torch.Tensor] | torch.Tensor


def _grads(parameters: _Params) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    params = [p for p in parameters if p.grad is not None]
    return params, [p.grad for p in params]  # type: ignore[misc]


@torch.no_grad()
def clip_grad_agc_(parameters: _Params, factor: float = 0.01, eps: float = 1e-3) -> bool:
    r"""Unit-wise adaptive gradient clipping (AGC) of Brock et al. 2021 ("NFNets", Eq. 3), in place.

    For every unit :math:`i` of a parameter :math:`W` (a row: the norm is taken over all
    dimensions but the first, i.e. over one output unit's fan-in) with gradient :math:`G`:

    .. math::
        G_i \leftarrow \begin{cases}
        \lambda \dfrac{\max(\|W_i\|, \epsilon)}{\|G_i\|} G_i &
            \text{if } \dfrac{\|G_i\|}{\max(\|W_i\|, \epsilon)} > \lambda, \\
        G_i & \text{otherwise.} \end{cases}

    One-dimensional parameters (biases, norm gains) and scalars form *one* unit (the norm of
    the whole vector), as in the authors' reference code and timm's ``adaptive_clip_grad``. The
    paper does not clip the final classifier layer; to follow it, pass every parameter except
    the head's.

    Args:
        parameters: tensors (or one tensor) whose ``.grad`` is clipped; ones without a gradient
            are ignored.
        factor: the clipping threshold :math:`\lambda` (> 0); the paper uses 0.01 to 0.16.
        eps: :math:`\epsilon` (> 0), keeps zero-initialised weights from freezing.

    Returns:
        whether any unit was clipped.

    Example:
        >>> w = nn.Parameter(torch.ones(2, 3))
        >>> w.grad = torch.tensor([[1.0, 0, 0], [0.001, 0, 0]])
        >>> clip_grad_agc_([w], factor=0.1)
        True
        >>> w.grad.norm(dim=1)  # row 0 capped at 0.1 * sqrt(3), row 1 untouched
        tensor([0.1732, 0.0010])
    """
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    params, grads = _grads(parameters)
    flags = []
    for p, g in zip(params, grads, strict=True):
        if p.dim() > 1:
            dims = tuple(range(1, p.dim()))
            w_norm = torch.linalg.vector_norm(p, dim=dims, keepdim=True)
            g_norm = torch.linalg.vector_norm(g, dim=dims, keepdim=True)
        else:
            w_norm = torch.linalg.vector_norm(p)
            g_norm = torch.linalg.vector_norm(g)
        max_norm = w_norm.clamp_min(eps).mul_(factor)
        over = g_norm > max_norm
        scale = torch.where(over, max_norm / g_norm.clamp_min(1e-6), torch.ones_like(g_norm))
        g.mul_(scale)
        flags.append(over.any())
    return bool(torch.stack(flags).any()) if flags else False


@torch.no_grad()
def normalize_grads_(parameters: _Params, eps: float = 1e-12) -> None:
    r"""Rescale each parameter's gradient to zero mean and unit variance, in place.

    .. math:: G \leftarrow \frac{G - \operatorname{mean}(G)}{\max(\operatorname{std}(G), \epsilon)}

    with the population standard deviation, over all elements of one parameter.

    How it differs from clipping: clipping by norm (Pascanu et al. 2013) acts only on steps
    whose total norm passes a threshold and then rescales all gradients by one common factor,
    so the direction is kept; AGC (Brock et al. 2021) caps each unit's gradient relative to its
    weights, keeping the direction within each unit. Normalisation acts on *every* step and on
    every gradient, large or small: each tensor's gradient gets norm :math:`\sqrt{n}` (for
    :math:`n` elements) whatever its size, so the learning rate alone sets the step. The
    direction changes twice: the per-tensor rescaling reweights layers against each other (a
    layer with tiny gradients gets as large a step as one with huge gradients), and subtracting
    the mean removes the component of each tensor's gradient along the all-ones direction.
    It stays a descent direction (its inner product with the raw gradient is
    :math:`\sum_i n_i \operatorname{std}(G_i) \ge 0`), but it is no longer parallel to the
    gradient. A gradient with
    a single element or with all elements equal has no spread and becomes zero.

    Example:
        >>> w = nn.Parameter(torch.zeros(3))
        >>> w.grad = torch.tensor([1.0, 2.0, 3.0])
        >>> normalize_grads_([w])
        >>> w.grad
        tensor([-1.2247,  0.0000,  1.2247])
    """
    _, grads = _grads(parameters)
    for g in grads:
        std, mean = torch.std_mean(g, correction=0)
        g.sub_(mean).div_(std.clamp_min(eps))


@torch.no_grad()
def clip_grads_(
    parameters: _Params,
    clip: tuple[str, float] | None,
    *,
    total_norm: torch.Tensor | None = None,
) -> bool:
    """Clip gradients in place by ``("norm", max_norm)``, ``("value", v)`` or ``("agc", factor)``.

    ``"norm"`` is ``torch.nn.utils.clip_grads_with_norm_`` with the total norm that
    ``torch.nn.utils.clip_grad_norm_`` computes (the ``max_norm / (norm + 1e-6)`` coefficient
    clamped at 1), so the clipped gradients are identical; ``"value"`` is ``torch.nn.utils.clip_grad_value_``;
    ``"agc"`` is :func:`clip_grad_agc_`. ``None`` does nothing.

    Args:
        parameters: tensors (or one tensor) whose ``.grad`` is clipped.
        clip: ``None`` or ``(mode, value)``.
        total_norm: the total L2 norm of the gradients, if already computed (``"norm"`` only).

    Returns:
        whether anything was clipped: the total norm exceeded ``max_norm``, some element
        exceeded ``v`` in absolute value, or some unit was clipped by AGC.

    Example:
        >>> w = nn.Parameter(torch.zeros(2))
        >>> w.grad = torch.tensor([3.0, 4.0])
        >>> clip_grads_([w], ("norm", 1.0)), w.grad
        (True, tensor([0.6000, 0.8000]))
    """
    checked = check_clip(clip)
    if checked is None:
        return False
    mode, value = checked
    params, grads = _grads(parameters)
    if not grads:
        return False
    if mode == "agc":
        return clip_grad_agc_(params, value)
    if mode == "value":
        peak = nn.utils.get_total_norm(grads, float("inf"))
        nn.utils.clip_grad_value_(params, value)
        return bool(peak > value)
    if total_norm is None:
        total_norm = total_grad_norm(grads)[0]
    nn.utils.clip_grads_with_norm_(params, value, total_norm)
    return bool(value / (total_norm + 1e-6) < 1.0)  # the coefficient torch clamps at 1


def total_grad_norm(grads: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The total L2 norm of ``grads`` and the per-tensor norms (as ``clip_grad_norm_``)."""
    if not grads:
        return torch.zeros(()), []
    norms = [torch.linalg.vector_norm(g, 2.0) for g in grads]
    return torch.linalg.vector_norm(torch.stack(norms), 2.0), norms


def __getattr__(name: str) -> Any:
    # fit's data checks moved to initlab._fit_setup; the old import path keeps working.
    if name == "unpack_data":
        from initlab._fit_setup import unpack_data

        return unpack_data
    raise AttributeError(f"module 'initlab._clip' has no attribute {name!r}")
