r"""Predicted forward and backward variances of a network at initialisation (mean-field theory).

For a layer ``h = W x + b`` whose weights are i.i.d. with zero mean, and a wide
network (so that every pre-activation is Gaussian over the weight ensemble), the
pre-activation variance obeys the length map of Poole et al. (2016) and
Schoenholz et al. (2017, Sec. 2)

.. math::
    q_{l+1} = \sigma_w^2 \, \mathbb{E}_{z\sim N(0,1)}\big[\phi(\sqrt{q_l}\, z)^2\big] + \sigma_b^2,
    \qquad \sigma_w^2 = n_\text{in} \operatorname{mean}(W^2),\quad \sigma_b^2 = \operatorname{mean}(b^2),

and the variance of the back-propagated gradient obeys

.. math::
    \operatorname{Var}[\partial L/\partial x_l] = n_\text{out}\operatorname{mean}(W^2)\,
    \operatorname{Var}[\partial L/\partial h_{l+1}],\qquad
    \operatorname{Var}[\partial L/\partial h_l] = \mathbb{E}[\phi'(h_l)^2]\,
    \operatorname{Var}[\partial L/\partial x_l]

(the gradient-independence assumption of Schoenholz et al. 2017, Sec. 5).
:math:`\sigma_w^2` and :math:`\sigma_b^2` are read from the model's actual weights, so
:func:`predict` works for any initialisation scheme. Gaussian expectations use
:func:`gaussian_expectation` (re-exported here) with an even number of nodes (no node
at 0, so kinks at 0 such as ReLU's are integrated exactly); derivatives come from
``torch.autograd`` on the nodes, so any activation works.

With the fixed point :math:`q^*` of the recursion, :math:`\chi_1 = \sigma_w^2
\mathbb{E}[\phi'(\sqrt{q^*} z)^2]` (Poole et al. 2016; Schoenholz et al. 2017, Sec. 2-3)
multiplies the gradient variance per layer: :math:`\chi_1 < 1` vanishing (ordered
phase), :math:`\chi_1 > 1` exploding (chaotic phase), :math:`\chi_1 = 1` critical.

Example:
    >>> round(critical_sigma_w2("relu"), 6)
    2.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from initlab._activations import resolve
from initlab._checks import check_positive
from initlab._meanfield import (
    NODES,
    grad_factor,
    ops_from_module,
    ops_from_spec,
    second_moment,
    walk,
)
from initlab._quadrature import gauss_hermite_rule, gaussian_expectation
from initlab._table import format_table
from initlab.diagnostics import record


def _brentq(*args: Any, **kwargs: Any) -> float:
    from scipy.optimize import brentq  # imported when a root is wanted: it costs ~0.4 s

    return brentq(*args, **kwargs)


__all__ = [
    "Prediction",
    "Comparison",
    "predict",
    "compare",
    "chi1",
    "fixed_point",
    "depth_scale",
    "critical_sigma_w2",
    "gaussian_expectation",
]


@dataclass
class Prediction:
    """Per layer (``Linear``/``Conv``, in forward order): ``forward`` = predicted variance of
    the layer's output (pre-activation), ``backward`` = predicted variance of the loss
    gradient w.r.t. that output; also ``sigma_w2``, ``sigma_b2``, fans and ``input_moment``
    (the second moment of the layer's input)."""

    names: list[str]
    fan_in: np.ndarray
    fan_out: np.ndarray
    sigma_w2: np.ndarray
    sigma_b2: np.ndarray
    input_moment: np.ndarray
    forward: np.ndarray
    backward: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def __str__(self) -> str:
        cols = ["sigma_w2", "sigma_b2", "forward", "backward"]
        rows = [[n, *(float(getattr(self, c)[i]) for c in cols)] for i, n in enumerate(self.names)]
        return format_table(["layer", *cols], rows)

    __repr__ = __str__


def predict(
    model_or_spec: nn.Module | Sequence,
    input_var: float = 1.0,
    *,
    input_mean: float = 0.0,
    grad_var: float = 1.0,
) -> Prediction:
    r"""Predict every layer's pre-activation variance and back-propagated gradient variance.

    Walks ``model_or_spec`` with the mean-field recursion of the module docstring.

    * A model: any ``nn.Sequential`` (e.g. :func:`initlab.models.mlp`) of ``Linear``/``Conv``
      layers, element-wise activation modules, norm layers (the output is standardised and
      scaled by the RMS of the affine weight; the affine bias enters through its mean;
      BatchNorm in eval mode uses its running statistics), ``Dropout`` (in training mode it
      multiplies second moments by ``1/(1-p)``) and :class:`~initlab.residual.Residual`
      blocks (``q_out = q_in + s^2 q_branch``, the branch independent of the skip; the block
      input is treated as Gaussian with its second moment). Conv fans ignore borders.
    * A spec: a list of ``(fan_in, fan_out, sigma_w2, sigma_b2, activation)`` tuples or dicts
      with those keys (``sigma_b2`` defaults to 0, ``activation`` to ``"linear"``): a stack of
      ``Linear -> activation`` layers, layers named ``"layer1"``, ``"layer2"``, ...

    Assumptions: i.i.d. zero-mean weights and biases, independent of the input; wide layers
    (pre-activations Gaussian over the weight ensemble); the backward pass treats the
    weights as independent of the forward pass (Schoenholz et al. 2017, Sec. 5).

    Args:
        model_or_spec: the network or a layer spec.
        input_var: variance of the input entries; the first layer sees the input second
            moment ``input_var + input_mean**2``.
        input_mean: mean of the input entries.
        grad_var: variance of the loss gradient w.r.t. the model's output (1 for the probe
            gradient of :func:`initlab.diagnostics.record`).

    Example:
        >>> p = predict([(100, 100, 2.0, 0.0, "relu")] * 3)   # He et al. 2015: constant
        >>> p.forward.round(6).tolist()
        [2.0, 2.0, 2.0]
    """
    for arg, v in (("input_var", input_var), ("grad_var", grad_var)):
        if not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)):
            raise ValueError(f"{arg} must be a finite number >= 0, got {v!r}")
    if isinstance(model_or_spec, nn.Module):
        ops = ops_from_module(model_or_spec, "")
    elif isinstance(model_or_spec, Sequence) and not isinstance(model_or_spec, str):
        ops = ops_from_spec(model_or_spec)
    else:
        raise TypeError(
            f"model_or_spec must be an nn.Module or a list of layer specs, "
            f"got {type(model_or_spec).__name__}"
        )
    layers: list[dict] = []
    q, f, back = walk(ops, float(input_var), lambda h: h + input_mean, layers)
    if not layers:
        raise ValueError("model_or_spec has no Linear or Conv layer to predict")
    g = grad_factor(f, q) * grad_var
    for fn in reversed(back):
        g = fn(g)
    col = lambda key: np.array([e[key] for e in layers], dtype=np.float64)  # noqa: E731
    return Prediction(
        [e["name"] for e in layers],
        *(col(k) for k in ("fan_in", "fan_out", "sigma_w2", "sigma_b2", "input_moment")),
        col("forward"),
        col("backward"),
    )


# ------------------------------------------------------------------ phase diagram
def _check_sigmas(sigma_w2: float, sigma_b2: float) -> None:
    check_positive("sigma_w2", sigma_w2, allow_zero=True, finite=True)
    check_positive("sigma_b2", sigma_b2, allow_zero=True, finite=True)


def fixed_point(
    phi: str | Callable, sigma_w2: float, sigma_b2: float = 0.0, *, q0: float = 1.0
) -> float:
    r"""The fixed point :math:`q^*` of :math:`q \mapsto \sigma_w^2 \mathbb{E}[\phi(\sqrt q z)^2] + \sigma_b^2`
    reached by iterating from ``q0`` (Poole et al. 2016, Sec. 2).

    The map is increasing in ``q``, so iterating from ``q0`` converges monotonically to the
    nearest fixed point in the direction of ``g(q0) = map(q0) - q0``; this function brackets
    that root and solves ``g(q) = 0`` with Brent's method instead of iterating.

    Returned values at the edges:

    * ``0.0`` when the iteration collapses to 0, e.g. ``tanh`` with ``sigma_b2 = 0`` and
      ``sigma_w2 <= 1`` (at ``sigma_w2 = 1`` only algebraically, like ``1/(2l)``), or ``relu``
      with ``sigma_b2 = 0`` and ``sigma_w2 < 2``;
    * ``q0`` when every ``q`` is a fixed point (the map is the identity near ``q0``: ``relu``
      with ``sigma_w2 = 2, sigma_b2 = 0``, or ``linear`` with ``sigma_w2 = 1, sigma_b2 = 0``);
    * ``math.inf`` when ``q`` grows without bound (``relu`` with ``sigma_w2 > 2``).

    Example:
        >>> fixed_point("tanh", 0.5)
        0.0
        >>> round(fixed_point("relu", 1.0, 0.5), 6)   # sigma_b2 / (1 - sigma_w2 / 2)
        1.0
    """
    _check_sigmas(sigma_w2, sigma_b2)
    fn = resolve(phi, "phi")

    def g(q: float) -> float:
        return sigma_w2 * second_moment(fn, q) + sigma_b2 - q

    g0 = g(q0)
    if abs(g0) <= 1e-12 * q0:
        return float(q0)
    lo, hi = q0, q0
    if g0 > 0:
        while g(hi) > 0:
            hi *= 2.0
            if hi > 1e30:
                return math.inf
    else:
        while g(lo) < 0:
            lo /= 2.0
            if lo < 1e-12 * q0:
                return 0.0
    return float(_brentq(g, lo, hi, xtol=1e-14, rtol=1e-12))


def chi1(phi: str | Callable, sigma_w2: float, sigma_b2: float = 0.0) -> float:
    r""":math:`\chi_1 = \sigma_w^2\, \mathbb{E}[\phi'(\sqrt{q^*} z)^2]` at the fixed point
    :math:`q^*` (Poole et al. 2016; Schoenholz et al. 2017, Sec. 2-3).

    The factor by which the gradient variance grows per layer in a deep, wide network at
    its fixed point: < 1 vanishing, > 1 exploding, 1 critical. When :math:`q^* = 0` the
    limit :math:`q \to 0^+` is used (``tanh``: ``sigma_w2``; ``relu``: ``sigma_w2 / 2``); when
    :math:`q^* = \infty` the factor is evaluated at ``q = 1e12`` (exact for ReLU-like,
    positively homogeneous activations).

    Example:
        >>> round(chi1("relu", 2.0), 6), round(chi1("tanh", 1.0), 6)
        (1.0, 1.0)
    """
    q = fixed_point(phi, sigma_w2, sigma_b2)
    q = 1e-20 if q == 0 else (1e12 if math.isinf(q) else q)
    return sigma_w2 * grad_factor(resolve(phi, "phi"), q)


def _correlation_chi(fn: Callable, sigma_w2: float, sigma_b2: float, q: float) -> float:
    """chi_c at the stable correlation fixed point c* < 1 (chaotic phase)."""
    z, w = gauss_hermite_rule(NODES)
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    ww = np.outer(w, w)

    def phi(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = torch.from_numpy(x).requires_grad_(True)
        with torch.enable_grad():
            y = fn(t)
            (d,) = torch.autograd.grad(y.sum(), t)
        return y.detach().numpy(), d.numpy()

    u1 = math.sqrt(q) * z1
    p1, d1 = phi(u1)

    def pair(c: float) -> tuple[float, float]:
        u2 = math.sqrt(q) * (c * z1 + math.sqrt(max(1 - c * c, 0.0)) * z2)
        p2, d2 = phi(u2)
        return float((ww * p1 * p2).sum()), float((ww * d1 * d2).sum())

    def cmap(c: float) -> float:
        return (sigma_w2 * pair(c)[0] + sigma_b2) / q - c

    c_star = _brentq(cmap, -1.0, 1.0 - 1e-9, xtol=1e-12) if cmap(-1.0) * cmap(1 - 1e-9) < 0 else 0.0
    return sigma_w2 * pair(c_star)[1]


def depth_scale(phi: str | Callable, sigma_w2: float, sigma_b2: float = 0.0) -> float:
    r"""The correlation depth scale :math:`\xi_c = -1/\log \chi_c` of Schoenholz et al. 2017
    (Sec. 3): the number of layers over which the correlation between two inputs relaxes
    to its fixed point, i.e. how deep information can travel.

    In the ordered phase (:math:`\chi_1 < 1`) the correlation fixed point is :math:`c^* = 1`
    and :math:`\chi_c = \chi_1`; in the chaotic phase :math:`\chi_c = \sigma_w^2
    \mathbb{E}[\phi'(u_1)\phi'(u_2)]` at the stable :math:`c^* < 1` (a 2-d Gauss-Hermite
    product rule). At criticality (:math:`\chi_1 = 1`) :math:`\xi_c = \infty`.

    Example:
        >>> round(depth_scale("tanh", 0.5), 4)   # -1 / log(0.5)
        1.4427
    """
    c1 = chi1(phi, sigma_w2, sigma_b2)
    if abs(c1 - 1.0) < 1e-9:
        return math.inf
    if c1 > 1.0:
        q = fixed_point(phi, sigma_w2, sigma_b2)
        if math.isinf(q) or q == 0:
            return math.inf  # no finite chaotic fixed point: the correlation never settles
        c1 = _correlation_chi(resolve(phi, "phi"), sigma_w2, sigma_b2, q)
    return math.inf if c1 >= 1.0 else -1.0 / math.log(c1)


def critical_sigma_w2(phi: str | Callable, sigma_b2: float = 0.0) -> float:
    r"""The weight variance :math:`\sigma_w^2` on the edge of chaos, :math:`\chi_1 = 1`
    (Poole et al. 2016; Schoenholz et al. 2017, Fig. 1).

    ``tanh`` with ``sigma_b2 = 0``: 1.0 (LeCun/Xavier for square layers); ``relu``: 2.0
    (He et al. 2015). Solved with Brent's method on ``chi1(phi, s) - 1``.

    Example:
        >>> round(critical_sigma_w2("tanh"), 6)
        1.0
    """
    _check_sigmas(1.0, sigma_b2)
    fn = resolve(phi, "phi")
    h = lambda s: chi1(fn, s, sigma_b2) - 1.0  # noqa: E731
    lo, hi = 0.5, 1.0
    while h(hi) < 0:
        lo, hi = hi, hi * 2
        if hi > 1e6:
            raise ValueError(f"phi={phi!r}: chi1 stays below 1 for sigma_w2 up to 1e6")
    while h(lo) > 0:
        lo, hi = lo / 2, lo
        if lo < 1e-6:
            raise ValueError(f"phi={phi!r}: chi1 stays above 1 for sigma_w2 down to 1e-6")
    return float(_brentq(h, lo, hi, xtol=1e-13, rtol=1e-12))


# -------------------------------------------------------------------- compare
@dataclass
class Comparison:
    """Predicted vs measured variances per ``Linear``/``Conv`` layer, with ratios
    ``measured / predicted`` (1 = the theory is right)."""

    names: list[str]
    predicted_forward: np.ndarray
    measured_forward: np.ndarray
    predicted_backward: np.ndarray
    measured_backward: np.ndarray

    @property
    def forward_ratio(self) -> np.ndarray:
        return self.measured_forward / self.predicted_forward

    @property
    def backward_ratio(self) -> np.ndarray:
        return self.measured_backward / self.predicted_backward

    def __str__(self) -> str:
        cols = [
            self.predicted_forward, self.measured_forward, self.forward_ratio,
            self.predicted_backward, self.measured_backward, self.backward_ratio,
        ]  # fmt: skip
        header = ["layer", "fwd pred", "fwd meas", "ratio", "bwd pred", "bwd meas", "ratio"]
        rows = [[n, *(float(c[i]) for c in cols)] for i, n in enumerate(self.names)]
        return format_table(header, rows)

    __repr__ = __str__


def compare(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | None = None,
    loss: Callable | None = None,
    *,
    verbose: bool = True,
) -> Comparison:
    r"""Predict with :func:`predict` and measure with :func:`initlab.diagnostics.record`.

    The input statistics come from ``x`` (``input_var`` and ``input_mean`` over all its
    entries). The backward pass is ``record(model, x, target, loss)``'s: with no ``target``
    and no ``loss`` its standard-normal probe gradient at the output, so ``grad_var = 1``;
    otherwise the real loss gradient (e.g. cross-entropy on labels, as Glorot & Bengio 2010
    measured it), and the prediction starts from the gradient variance measured at the last
    layer's output. Measured forward = the mean square of each layer's output
    over the batch and units (``var + mean**2``: the theory's ``q`` is a second moment, and
    for a layer with few units, such as a 10-way head, the empirical mean is not negligible);
    measured backward = the variance of the gradient w.r.t. the output. Prints the table when
    ``verbose``.

    Example:
        >>> net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
        >>> c = compare(net, torch.randn(128, 64), verbose=False)
        >>> c.names
        ['0', '2']
    """
    recs = record(model, x, target, loss)
    layers = [r for r in recs if r.kind in ("linear", "conv")]
    probe = target is None and loss is None
    pred = predict(
        model,
        input_var=x.detach().double().var(unbiased=False).item(),
        input_mean=x.detach().double().mean().item(),
        grad_var=1.0 if probe or not layers else layers[-1].grad_var,
    )
    if [r.name for r in layers] != pred.names:
        raise RuntimeError(
            f"measured layers {[r.name for r in layers]} do not match predicted {pred.names}"
        )
    out = Comparison(
        pred.names,
        pred.forward,
        np.array([r.var + r.mean**2 for r in layers]),
        pred.backward,
        np.array([r.grad_var for r in layers]),
    )
    if verbose:
        print(out)
    return out
