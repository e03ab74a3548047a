r"""The maximal update parametrization (μP), small and plain.

μP (Yang & Hu 2021, "Tensor Programs IV"; Yang et al. 2022, "Tensor Programs V") scales the
initialization *and* the learning rate of every layer with the width :math:`n` so that, as
:math:`n` grows, every hidden activation stays :math:`\Theta(1)` per coordinate (the output
:math:`O(1)`) at initialization *and* changes by :math:`\Theta(1)` per coordinate in the
first steps of training. Then the best learning rate found on a narrow model is also (close to) the best
for a wide one ("μTransfer").

Layer types are read off the shapes, as Microsoft's ``mup`` package does: compare each
parameter with the same parameter of a **base model** (the same architecture at a base
width). A dimension that differs is a *width* dimension ("infinite"); one that does not is
fixed (inputs, classes, vocabulary).

================  ==========================  ===================  ==========================
layer type        which dims scale            init variance        learning-rate factor
                                                                   Adam / SGD
================  ==========================  ===================  ==========================
input (& biases)  fan_out only                :math:`1/n_{in}`     :math:`1` / :math:`m`
hidden            fan_in and fan_out          :math:`1/n_{in}`     :math:`1/m` / :math:`1`
output            fan_in only                 :math:`1/(n_{in}m)`  :math:`1/m` / :math:`1/m`
fixed             none                        :math:`1/n_{in}`     :math:`1` / :math:`1`
================  ==========================  ===================  ==========================

Here :math:`m = n / n_\text{base}` is the *width multiplier* (``fan_in / base_fan_in`` for
hidden and output weights, ``fan_out / base_fan_out`` for input weights and biases). This
is Table 3 of Tensor Programs V (Yang et al. 2022; "μP and SP for general neural
networks": input weights and all biases init var :math:`1/\text{fan\_in}`, SGD LR
:math:`\text{fan\_out}`, Adam LR 1; output weights init var :math:`1/\text{fan\_in}^2`,
SGD and Adam LR :math:`1/\text{fan\_in}`; hidden weights init var
:math:`1/\text{fan\_in}`, SGD LR 1, Adam LR :math:`1/\text{fan\_in}`), written relative to
the base model so that **at the base width μP and the standard parametrization (SP)
coincide** and only the scaling with width differs. Its Table 8 (the form the ``mup``
package implements, with an output multiplier :math:`1/\text{fan\_in}`) is equivalent. The
derivation (the abc-parametrization and the maximal update limit) is Tensor Programs IV
(Yang & Hu 2021).

Example:
    >>> from initlab.models import mlp
    >>> base, net = mlp(64, 32, 2, 10), mlp(64, 256, 2, 10)
    >>> groups = mup_param_groups(net, base, lr=1e-3, optimizer="adam")
    >>> {g["name"]: g["lr"] for g in groups}["linear2.weight"]  # hidden: lr / (256 / 32)
    0.000125
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from initlab._checks import check_int, check_positive

__all__ = [
    "CoordCheck",
    "MupParam",
    "coord_check",
    "loglog_slope",
    "mup_init_",
    "mup_param_groups",
    "mup_params",
]

_OPTIMIZERS = ("adam", "sgd")


class MupParam(NamedTuple):
    """One parameter's μP role: ``kind`` is ``"input"``, ``"hidden"``, ``"output"`` or
    ``"fixed"`` (biases and other vectors with a width dimension count as ``"input"``),
    ``width_mult`` is :math:`m` (1 for ``"fixed"``)."""

    name: str
    kind: str
    width_mult: float
    fan_in: int


def _check_module(name: str, value: Any) -> nn.Module:
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be an nn.Module, got {type(value).__name__}")
    return value


def mup_params(model: nn.Module, base: nn.Module) -> list[MupParam]:
    r"""Classify every parameter of ``model`` against the same parameter of ``base``.

    A weight ``[fan_out, fan_in, ...]`` whose fan_out and fan_in both differ from the base is
    *hidden*; only fan_out differs: *input*; only fan_in differs: *output*; neither: *fixed*.
    A vector (bias, LayerNorm gain) whose length differs is treated as an input weight
    (Tensor Programs V, Table 3: "input weights & all biases"); so is an ``nn.Embedding``
    (its weight ``[vocab, width]`` is stored transposed). A read-out tied to the embedding
    is one parameter and counts as the embedding (input): Table 3 cannot express tying (its
    output layer needs another variance and learning rate), so a tied read-out is *not* μP
    here; Table 8's output multiplier, which ``mup`` uses for tying, is not implemented.

    Args:
        model: the model to train.
        base: the same architecture at the base width (same parameter names).

    Example:
        >>> from initlab.models import mlp
        >>> [(p.name, p.kind) for p in mup_params(mlp(3, 8, 1, 2), mlp(3, 4, 1, 2))][2:]
        [('head.weight', 'output'), ('head.bias', 'fixed')]
    """
    _check_module("model", model)
    _check_module("base", base)
    base_shapes = {n: p.shape for n, p in base.named_parameters()}
    shapes = {n: p.shape for n, p in model.named_parameters()}
    if set(base_shapes) != set(shapes):
        raise ValueError(
            "base must have the same parameters as model; "
            f"only in model: {sorted(set(shapes) - set(base_shapes))}, "
            f"only in base: {sorted(set(base_shapes) - set(shapes))}"
        )
    # nn.Embedding stores its weight as [num_embeddings, width]: the transpose of a linear
    # layer's [fan_out, fan_in]; read it as the input layer it is.
    embeddings = {
        f"{n}.weight" if n else "weight"
        for n, m in model.named_modules()
        if isinstance(m, nn.Embedding)
    }
    out = []
    for name, shape in shapes.items():
        b = base_shapes[name]
        if name in embeddings:
            shape, b = shape[::-1], b[::-1]
        if len(b) != len(shape) or any(d != e for d, e in zip(b[2:], shape[2:], strict=False)):
            raise ValueError(f"parameter {name!r}: shape {tuple(shape)} vs base {tuple(b)}")
        fan_in = math.prod(shape[1:]) if len(shape) >= 2 else 1
        if len(shape) < 2:
            m = shape[0] / b[0] if shape else 1.0
            out.append(MupParam(name, "input" if m != 1 else "fixed", m, fan_in))
            continue
        out_mult, in_mult = shape[0] / b[0], shape[1] / b[1]
        if out_mult != 1 and in_mult != 1:
            out.append(MupParam(name, "hidden", in_mult, fan_in))
        elif out_mult != 1:
            out.append(MupParam(name, "input", out_mult, fan_in))
        elif in_mult != 1:
            out.append(MupParam(name, "output", in_mult, fan_in))
        else:
            out.append(MupParam(name, "fixed", 1.0, fan_in))
    return out


@torch.no_grad()
def mup_init_(
    model: nn.Module,
    base: nn.Module,
    gain: float = 1.0,
    generator: torch.Generator | None = None,
) -> nn.Module:
    r"""Initialise ``model`` in μP relative to ``base``, in place, and return it.

    Weights (``dim >= 2``) are drawn from :math:`\mathcal{N}(0, \sigma^2)` with

    * input, hidden and fixed weights: :math:`\sigma^2 = \text{gain}^2 / n_{in}` (LeCun's
      variance times a gain; He's for ``gain=sqrt(2)``), the same as in SP;
    * output weights: :math:`\sigma^2 = 1 / (n_{in}\, m)`, i.e. :math:`1/(n_{in} n_{base})
      \cdot n_{base}^2/ n_{in}` -- the :math:`1/\text{fan\_in}^2` of Tensor Programs V,
      Table 3, anchored so that it equals SP's :math:`1/n_{in}` at the base width.

    Vectors with a width dimension (biases, LayerNorm shifts) are set to 0; LayerNorm gains
    and other parameters named ``*.weight`` of dimension 1 are set to 1. With
    ``base=model`` every :math:`m = 1`: this *is* SP with LeCun/He variances.

    Args:
        model: the model to initialise.
        base: the same architecture at the base width.
        gain: gain of the input and hidden weights (``sqrt(2)`` before a ReLU).
        generator: optional ``torch.Generator`` for reproducible draws.

    Example:
        >>> from initlab.models import mlp
        >>> net = mup_init_(mlp(64, 1024, 2, 10), mlp(64, 64, 2, 10))
        >>> round(net.head.weight.var().item() * 1024 * 16, 1)  # 1 / (n_in * m), m = 16
        1.0
    """
    check_positive("gain", gain, finite=True)
    params = dict(model.named_parameters())
    for p in mup_params(model, base):
        t = params[p.name]
        if t.dim() >= 2:
            var = 1.0 / (p.fan_in * p.width_mult) if p.kind == "output" else gain**2 / p.fan_in
            t.normal_(0.0, math.sqrt(var), generator=generator)
        elif p.name.endswith("weight"):
            t.fill_(1.0)
        else:
            t.zero_()
    return model


def _lr_factor(kind: str, m: float, optimizer: str) -> float:
    if optimizer == "adam":
        return 1.0 / m if kind in ("hidden", "output") else 1.0
    return {"input": m, "hidden": 1.0, "output": 1.0 / m, "fixed": 1.0}[kind]


def mup_param_groups(
    model: nn.Module, base: nn.Module, lr: float, optimizer: str = "adam"
) -> list[dict[str, Any]]:
    r"""One optimizer parameter group per parameter, with its μP learning rate.

    The learning rate ``lr`` is the one tuned on the base model; each parameter gets
    ``lr`` times (Tensor Programs V, Table 3, relative to the base width, :math:`m` the
    width multiplier):

    ========  ======  ======  ======  =====
    optimizer input   hidden  output  fixed
    ========  ======  ======  ======  =====
    ``adam``  1       1/m     1/m     1
    ``sgd``   m       1       1/m     1
    ========  ======  ======  ======  =====

    Biases count as input weights (their "fan_out" is the width). Each group holds
    ``params`` (one tensor), ``lr`` and ``name``; pass the list to ``torch.optim.Adam`` /
    ``AdamW`` or ``torch.optim.SGD``. Weight decay, if any, is left to you: ``torch.optim.AdamW``
    decays by ``lr * weight_decay`` per step, so a scaled ``lr`` scales the decay too;
    Microsoft's ``mup`` (``MuAdam``) multiplies ``weight_decay`` by :math:`m` in the groups
    whose ``lr`` it divides by :math:`m`, which keeps their product unchanged.

    Args:
        model: the model to train.
        base: the same architecture at the base width.
        lr: the base learning rate (> 0).
        optimizer: ``"adam"`` (any Adam-like, entry-wise normalised update) or ``"sgd"``.

    Example:
        >>> from initlab.models import mlp
        >>> groups = mup_param_groups(mlp(64, 512, 2, 10), mlp(64, 64, 2, 10), 0.1, "sgd")
        >>> [(g["name"], g["lr"]) for g in groups][:3]
        [('linear1.weight', 0.8), ('linear1.bias', 0.8), ('linear2.weight', 0.1)]
    """
    check_positive("lr", lr, finite=True)
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
    params = dict(model.named_parameters())
    return [
        {
            "params": [params[p.name]],
            "lr": lr * _lr_factor(p.kind, p.width_mult, optimizer),
            "name": p.name,
        }
        for p in mup_params(model, base)
    ]


class CoordCheck(NamedTuple):
    """Result of :func:`coord_check`: per width (rows) and hooked ``nn.Linear`` (columns),
    the root mean square of the layer's output at initialization (``init``) and of its change
    after the training steps (``delta``), averaged over the seeds."""

    widths: list[int]
    names: list[str]
    init: np.ndarray
    delta: np.ndarray


def _rms(t: torch.Tensor) -> float:
    return t.double().pow(2).mean().sqrt().item()


def coord_check(
    build: Callable[[int], nn.Module],
    widths: Sequence[int],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    base_width: int | None,
    optimizer: str = "adam",
    steps: int = 3,
    seeds: Sequence[int] = (0,),
    gain: float = 1.0,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> CoordCheck:
    r"""The coordinate check that Tensor Programs V recommends for μP, for SP or μP.

    For each width: ``build(width)``, initialise with :func:`mup_init_` against
    ``build(base_width)`` (μP) or against itself (``base_width=None``: SP, the same
    LeCun/He variances and one learning rate everywhere), record every ``nn.Linear``'s
    output on ``x``, take ``steps`` full-batch optimizer steps on ``loss(model(x), y)``
    (cross-entropy by default) with :func:`mup_param_groups`, and record again. In μP both
    the size of each output and of its change stay constant in width (only the output layer
    starts at :math:`\Theta(1/\sqrt n)`, Table 3's :math:`1/\text{fan\_in}^2`); in SP with
    Adam the changes grow like :math:`n`.

    Example:
        >>> from initlab.models import mlp
        >>> x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
        >>> cc = coord_check(lambda n: mlp(8, n, 2, 3), [32, 64], x, y, lr=1e-2, base_width=32)
        >>> cc.delta.shape, cc.names
        ((2, 3), ['linear1', 'linear2', 'head'])
    """
    if not callable(build):
        raise TypeError(f"build must be a callable width -> nn.Module, got {type(build).__name__}")
    widths = list(widths)
    if not widths:
        raise ValueError("widths must be a non-empty sequence of positive integers, got []")
    for w in widths:
        check_int("widths[i]", w, 1)
    check_int("steps", steps, 1)
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
    loss = loss or nn.functional.cross_entropy
    rows_init, rows_delta, names = [], [], []
    for width in widths:
        acc_i, acc_d = [], []
        for seed in seeds:
            model = build(width)
            base = build(base_width) if base_width is not None else model
            mup_init_(model, base, gain=gain, generator=torch.Generator().manual_seed(seed))
            groups = mup_param_groups(model, base, lr, optimizer)
            opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
            opt = opt_cls(groups)
            layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
            names = [n for n, _ in layers]
            with torch.no_grad():
                before = _outputs(model, layers, x)
            for _ in range(steps):
                opt.zero_grad()
                loss(model(x), y).backward()
                opt.step()
            with torch.no_grad():
                after = _outputs(model, layers, x)
            acc_i.append([_rms(b) for b in before])
            acc_d.append([_rms(a - b) for a, b in zip(after, before, strict=True)])
        rows_init.append(np.mean(acc_i, axis=0))
        rows_delta.append(np.mean(acc_d, axis=0))
    return CoordCheck(widths, names, np.array(rows_init), np.array(rows_delta))


def _outputs(model: nn.Module, layers: list[tuple[str, nn.Module]], x: torch.Tensor) -> list:
    seen: dict[nn.Module, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda m, i, o: seen.__setitem__(m, o)) for _, m in layers]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return [seen[m].detach().clone() for _, m in layers]


def loglog_slope(widths: Sequence[float], values: Any) -> np.ndarray:
    r"""Least-squares slope of :math:`\log v` against :math:`\log n`, per column of ``values``.

    A slope 0 means "constant in width", 1 "grows like :math:`n`", -0.5 "shrinks like
    :math:`1/\sqrt n`".

    Example:
        >>> float(loglog_slope([1, 2, 4], [1.0, 2.0, 4.0]))
        1.0
    """
    lw = np.log(np.asarray(widths, dtype=np.float64))
    lv = np.log(np.asarray(values, dtype=np.float64))
    if lv.shape[0] != lw.shape[0] or lw.shape[0] < 2:
        raise ValueError("values must have one row per width, and at least 2 widths")
    xc = lw - lw.mean()
    slope = (xc @ (lv - lv.mean(axis=0))) / (xc @ xc)
    return slope
