r"""Per-layer activation and gradient statistics, recorded with hooks.

Three measurements that the course uses to *check* a network after it has been
initialised:

* :func:`record` -- one forward and one backward pass with hooks on every
  ``Linear``/``Conv`` layer and every activation module; returns a table of
  means, variances, gradient variances, saturated and dead fractions
  (the measurements behind Glorot & Bengio 2010, Fig. 3-7).
* :func:`update_ratio` -- the size of one optimizer update relative to the
  weights, per layer (Karpathy's "update:data ratio", about ``1e-3`` is healthy).
* :func:`signal_propagation` -- average squared channel mean and average
  channel variance after every residual block or layer (the "signal
  propagation plots" of Brock, De & Smith 2021).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
    >>> recs = record(net, torch.randn(32, 8))
    >>> [r.name for r in recs]
    ['0', '1', '2']
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from initlab._checks import ArgumentTypeError, check_positive
from initlab._layers import CONVS, LAYERS
from initlab._records import LayerRecord, Records
from initlab.models import ScaledSigmoid
from initlab.residual import Residual

__all__ = [
    "LayerRecord",
    "Records",
    "record",
    "update_ratio",
    "signal_propagation",
    "SignalPoint",
    "SATURATION_THRESHOLD",
    "PROBE_SEED",
]

#: A tanh unit counts as saturated when ``|y| > 0.97``; a sigmoid unit when ``y`` lies
#: outside ``[0.03, 0.97]`` (the same 3% margin of its range); ``4*sigmoid(x) - 2`` when the
#: sigmoid inside it does, i.e. ``|y| > 1.88``; ``Hardtanh`` when ``|y| > 0.97 * max_val``.
SATURATION_THRESHOLD = 0.97
#: Seed of the standard-normal probe gradient used when ``record`` gets no target.
PROBE_SEED = 0

_LAYER_TYPES = LAYERS
_TORCH_ACTIVATIONS = tuple(
    cls
    for name in dir(nn)
    if isinstance(cls := getattr(nn, name), type)
    and issubclass(cls, nn.Module)
    and cls.__module__ == "torch.nn.modules.activation"
    and cls is not nn.MultiheadAttention
)


def _is_activation(module: nn.Module) -> bool:
    """Torch activation modules, ``nn.Identity`` (the "linear" activation) and
    parameter-free leaf modules defined in ``initlab`` (e.g. ``ScaledSigmoid``)."""
    if isinstance(module, _TORCH_ACTIVATIONS + (nn.Identity,)):
        return True
    return (
        type(module).__module__.startswith("initlab")
        and not isinstance(module, Residual)
        and next(module.children(), None) is None
        and next(module.parameters(), None) is None
    )


def _saturated_fraction(module: nn.Module, y: torch.Tensor) -> float:
    t = SATURATION_THRESHOLD
    if isinstance(module, nn.Tanh):
        return (y.abs() > t).float().mean().item()
    if isinstance(module, nn.Sigmoid):
        return ((y < 1 - t) | (y > t)).float().mean().item()
    if isinstance(module, nn.Hardtanh):
        return (y.abs() > t * module.max_val).float().mean().item()
    if isinstance(module, ScaledSigmoid):  # 4*sigmoid(x) - 2
        return (y.abs() > 2 * (2 * t - 1)).float().mean().item()
    return math.nan


def _dead_fraction(module: nn.Module, y: torch.Tensor) -> float:
    """Fraction of units (features, or channels of a conv map) never positive in the batch."""
    if not isinstance(module, (nn.ReLU, nn.ReLU6)) or y.dim() < 2:
        return math.nan
    per_unit = y.transpose(0, 1).reshape(y.shape[1], -1)
    return (per_unit <= 0).all(dim=1).float().mean().item()


def _check_batch(model: Any, x: Any, name: str = "x") -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] < 2:
        raise ValueError(
            f"{name} must be a batch of at least 2 examples with shape [batch, ...], "
            f"got shape {tuple(x.shape)}"
        )


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        return model(x)
    except RuntimeError as e:  # shape mismatches surface as RuntimeError inside torch
        if any(w in str(e) for w in ("shape", "size", "channels", "dimension")):
            raise ValueError(f"x of shape {tuple(x.shape)} does not fit the model: {e}") from e
        raise


def _loss_value(out: torch.Tensor, target: torch.Tensor | None, loss: Callable | None):
    if target is None:
        if loss is not None:
            return loss(out)
        return None
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if loss is not None:
        return loss(out, target)
    if target.dtype == torch.int64:
        if out.dim() != 2 or target.shape != out.shape[:1]:
            raise ValueError(
                f"target of shape {tuple(target.shape)} does not fit the output of shape "
                f"{tuple(out.shape)}: cross-entropy needs output [batch, classes], target [batch]"
            )
        return F.cross_entropy(out, target)
    if target.shape != out.shape:
        raise ValueError(
            f"target of shape {tuple(target.shape)} must have the output's shape "
            f"{tuple(out.shape)} for the mean squared error"
        )
    return F.mse_loss(out, target.to(out.dtype))


@torch.enable_grad()
def record(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | None = None,
    loss: Callable | None = None,
    *,
    keep: bool = False,
) -> Records:
    r"""Run one forward and one backward pass and record per-layer statistics.

    Every ``nn.Linear``/``nn.Conv*`` and every activation module (see
    :func:`_is_activation`) gets a forward hook; the gradients w.r.t. the hooked
    outputs and the weights come from one :func:`torch.autograd.grad` call, so the
    parameters' ``.grad`` is left untouched. Hooks are removed in a ``finally``
    block, also when the forward or the loss raises.

    The backward pass starts from

    * ``loss(output, target)`` if ``loss`` is given, else cross-entropy for an
      ``int64`` target and the mean squared error otherwise;
    * with no target, ``loss(output)`` if ``loss`` is given, else a **probe
      gradient**: ``output.backward(g)`` with ``g ~ N(0, 1)`` i.i.d. drawn from a
      generator seeded with :data:`PROBE_SEED`. The gradient w.r.t. the output
      then has variance 1, the starting point of :func:`initlab.theory.predict`.

    Statistics are over every element of the batch (``var`` is the population
    variance). The model is run in its current mode (train/eval).

    Args:
        model: the network.
        x: a batch ``[batch, ...]`` with at least 2 examples.
        target: optional targets for the loss.
        loss: optional callable, ``loss(output, target)`` (or ``loss(output)`` without target).
        keep: also keep each output and its gradient as detached tensors (for
            :func:`initlab.plots.layer_histograms`).

    Returns:
        :class:`Records`, one row per hooked module in the order they ran.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> recs = record(net, torch.randn(16, 4), torch.randint(0, 3, (16,)))
        >>> recs.to_numpy("var").shape
        (3,)
    """
    _check_batch(model, x)
    seen: list[tuple[str, nn.Module, torch.Tensor]] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            seen.append((names[module], module, out))

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, _LAYER_TYPES) or _is_activation(m)
    ]
    try:
        out = _forward(model, x)
        value = _loss_value(out, target, loss)
    finally:
        for h in handles:
            h.remove()

    rows = Records()
    for name, m, y in seen:
        kind = "linear" if isinstance(m, nn.Linear) else "activation"
        kind = "conv" if isinstance(m, CONVS) else kind
        yd = y.detach()
        row = LayerRecord(name, kind, type(m).__name__, yd.mean().item(), _var(yd))
        if kind == "activation":
            row.saturated, row.dead = _saturated_fraction(m, yd), _dead_fraction(m, yd)
        else:
            row.weight_var = _var(m.weight.detach())
        rows.append(row)

    # Gradients w.r.t. outputs and weights, without touching any .grad.
    wanted: list[tuple[int, str, torch.Tensor]] = []
    for i, (_, m, y) in enumerate(seen):
        if y.requires_grad:
            wanted.append((i, "grad", y))
        if rows[i].kind != "activation" and m.weight.requires_grad:
            wanted.append((i, "weight", m.weight))
    if wanted and out.requires_grad:
        tensors = [t for *_, t in wanted]
        if value is None:
            gen = torch.Generator().manual_seed(PROBE_SEED)
            probe = torch.randn(out.shape, generator=gen).to(out)
            grads = torch.autograd.grad(out, tensors, probe, allow_unused=True)
        else:
            grads = torch.autograd.grad(value, tensors, allow_unused=True)
        for (i, what, _), g in zip(wanted, grads, strict=True):
            if g is None:
                continue
            if what == "grad":
                rows[i].grad_var = _var(g)
                if keep:
                    rows[i].grad = g.detach().cpu()
            else:
                rows[i].weight_grad_var = _var(g)
    if keep:
        for row, (_, _, y) in zip(rows, seen, strict=True):
            row.output = y.detach().cpu()
    return rows


def _var(t: torch.Tensor) -> float:
    """Population variance; float32 tensors stay float32 (two-pass, accurate to ~1e-6)."""
    return t.detach().var(unbiased=False).item() if t.numel() else math.nan


def update_ratio(
    model: nn.Module, step: float | Callable[[], Any], *, eps: float = 1e-12
) -> dict[str, float]:
    r"""Return ``||ΔW|| / ||W||`` for every weight matrix/kernel (parameters with ``dim >= 2``).

    Karpathy's update:data ratio ("A Recipe for Training Neural Networks", 2019 and
    CS231n): about ``1e-3`` per step is healthy; much larger means the learning rate
    is too high for that layer, much smaller that it barely learns.

    * ``step`` a float ``lr``: plain SGD is assumed, ``ΔW = lr * W.grad``, using the
      gradients already in ``.grad`` (call ``loss.backward()`` first). Nothing changes.
    * ``step`` a callable (e.g. ``optimizer.step``): the weights are copied, ``step()``
      is called (so the update **is applied**), and ``ΔW`` is the actual change.
      Works for any optimizer (momentum, Adam, weight decay, clipping inside ``step``).

    Returns:
        ``{parameter name: ratio}`` in the model's parameter order.

    Example:
        >>> net = nn.Linear(4, 4)
        >>> net(torch.randn(8, 4)).pow(2).mean().backward()
        >>> sorted(update_ratio(net, 1e-3))
        ['weight']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    weights = {n: p for n, p in model.named_parameters() if p.dim() >= 2}
    if callable(step):
        before = {n: p.detach().clone() for n, p in weights.items()}
        step()
        return {
            n: ((p.detach() - before[n]).norm() / (before[n].norm() + eps)).item()
            for n, p in weights.items()
        }
    if isinstance(step, bool) or not isinstance(step, numbers.Real):
        raise ArgumentTypeError(f"step must be a learning rate or a callable, got {step!r}")
    check_positive("step (a learning rate)", step, finite=True)
    missing = [n for n, p in weights.items() if p.grad is None]
    if missing:
        raise ValueError(
            f"step={step!r} (a learning rate) needs gradients, but {missing} have no .grad: "
            "call loss.backward() first"
        )
    return {
        n: (step * p.grad.norm() / (p.detach().norm() + eps)).item() for n, p in weights.items()
    }


class SignalPoint(NamedTuple):
    """One point of a signal propagation plot (Brock, De & Smith 2021)."""

    name: str
    sq_mean: float  # average over channels of the squared channel mean
    var: float  # average over channels of the channel variance


def _channel_stats(y: torch.Tensor) -> tuple[float, float]:
    """Channel = dim 1; statistics over the batch and any spatial dims."""
    per_channel = y.detach().double().transpose(0, 1).reshape(y.shape[1], -1)
    return (
        per_channel.mean(dim=1).pow(2).mean().item(),
        per_channel.var(dim=1, unbiased=False).mean().item(),
    )


def _outer_residuals(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Residual blocks not nested inside another Residual block."""
    for name, child in model.named_children():
        if isinstance(child, Residual):
            yield name, child
        else:
            for sub, m in _outer_residuals(child):
                yield f"{name}.{sub}", m


@torch.no_grad()
def signal_propagation(model: nn.Module, x: torch.Tensor) -> list[SignalPoint]:
    r"""Average squared channel mean and average channel variance per block or layer.

    Brock, De & Smith (2021), "Characterizing signal propagation to close the
    performance gap in unnormalized ResNets", Sec. 3: for activations ``y`` of
    shape ``[N, C, H, W]`` (or ``[N, C]``, channels = features),

    .. math::
        \text{avg sq. channel mean} = \frac1C\sum_c \Big(\operatorname{mean}_{n,h,w} y_{nchw}\Big)^2,
        \qquad
        \text{avg channel var} = \frac1C\sum_c \operatorname{var}_{n,h,w} y_{nchw}.

    Measured at the output of every :class:`~initlab.residual.Residual` block if the
    model has any (outermost ones only), else at the output of every activation
    module (plain networks: one point per layer).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
        >>> [p.name for p in signal_propagation(net, torch.randn(16, 4))]
        ['1', '3']
    """
    _check_batch(model, x)
    targets = list(_outer_residuals(model))
    if not targets:
        targets = [(n, m) for n, m in model.named_modules() if _is_activation(m) and n]
    if not targets:
        raise ValueError("model has no Residual block and no activation module to measure")
    points: list[SignalPoint] = []

    def make_hook(name: str) -> Callable:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor) and out.dim() >= 2:
                points.append(SignalPoint(name, *_channel_stats(out)))

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in targets]
    try:
        _forward(model, x)
    finally:
        for h in handles:
            h.remove()
    return points
