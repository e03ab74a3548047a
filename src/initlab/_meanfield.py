"""The mean-field walk behind :func:`initlab.theory.predict` (private).

A network is turned into a list of ops (``_Lin``, ``_Elem``, ``_Norm``, ``_Res``), and
``walk`` propagates second moments forward and returns closures that propagate gradient
variances backward. See :mod:`initlab.theory` for the equations and assumptions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from initlab._activations import identity, resolve
from initlab._layers import BATCH_NORMS, CONVS, DROPOUTS
from initlab._quadrature import gaussian_expectation
from initlab.diagnostics import _is_activation
from initlab.residual import Residual

NODES = 200  # even: no quadrature node sits on a kink at 0


def _compose(fn: Callable, prev: Callable) -> Callable:
    return lambda h: fn(prev(h))


def _affine(prev: Callable, mu: float, c: float, shift: float) -> Callable:
    return lambda h: c * (prev(h) - mu) + shift


def _call_numpy(f: Callable, x: np.ndarray) -> np.ndarray:
    try:
        y = f(torch.from_numpy(x))
    except TypeError:
        return np.asarray(f(x), dtype=float)
    return y.detach().double().numpy() if isinstance(y, torch.Tensor) else np.asarray(y, float)


def second_moment(f: Callable, q: float) -> float:
    if f is identity:
        return q
    return gaussian_expectation(lambda h: f(h) ** 2, std=math.sqrt(q), n=NODES)


def _dsq(f: Callable) -> Callable:
    """h -> f'(h)^2, by autograd (torch) or a central difference (NumPy functions)."""

    def g(h: Any) -> Any:
        if isinstance(h, np.ndarray):
            eps = 1e-6 * np.maximum(1.0, np.abs(h))
            return ((_call_numpy(f, h + eps) - _call_numpy(f, h - eps)) / (2 * eps)) ** 2
        with torch.enable_grad():
            h = h.clone().requires_grad_(True)
            y = f(h)
            if not (isinstance(y, torch.Tensor) and y.requires_grad):
                raise TypeError("no autograd graph")  # gaussian_expectation retries on NumPy
            (d,) = torch.autograd.grad(y.sum(), h)
        return d.detach() ** 2

    return g


def grad_factor(f: Callable, q: float) -> float:
    if f is identity:
        return 1.0
    return gaussian_expectation(_dsq(f), std=math.sqrt(q), n=NODES)


# ----------------------------------------------------------------------------- the walk
@dataclass
class _Lin:
    name: str
    fan_in: float
    fan_out: float  # per input unit: out_channels/groups * kernel / stride for convs
    mean_w2: float
    sigma_b2: float


@dataclass
class _Elem:
    fn: Callable


@dataclass
class _Norm:
    gain2: float  # mean(gamma^2)
    shift: float  # mean(beta)
    center: bool
    running: tuple[float, float] | None  # (mean, var) for BatchNorm in eval mode
    eps: float


@dataclass
class _Res:
    ops: list
    scale: float


def ops_from_module(module: nn.Module, name: str) -> list:
    join = (lambda c: f"{name}.{c}") if name else (lambda c: c)
    if isinstance(module, Residual):
        return [_Res(ops_from_module(module.branch, join("branch")), module.branch_scale)]
    if isinstance(module, nn.Sequential):
        return [op for c, m in module.named_children() for op in ops_from_module(m, join(c))]
    if isinstance(module, nn.Linear) or (isinstance(module, CONVS) and not module.transposed):
        w = module.weight.detach().double()
        receptive = w[0, 0].numel()
        fan_out = w.shape[0] * receptive
        if isinstance(module, CONVS):
            fan_out = fan_out / module.groups / math.prod(module.stride)
        b2 = 0.0 if module.bias is None else module.bias.detach().double().pow(2).mean().item()
        return [_Lin(name, w.shape[1] * receptive, fan_out, w.pow(2).mean().item(), b2)]
    if isinstance(module, (*BATCH_NORMS, nn.LayerNorm, nn.GroupNorm)):
        wt, bs = getattr(module, "weight", None), getattr(module, "bias", None)
        running = None
        if isinstance(module, BATCH_NORMS):
            if not module.training and module.running_mean is not None:
                running = (module.running_mean.mean().item(), module.running_var.mean().item())
        return [
            _Norm(
                1.0 if wt is None else wt.detach().double().pow(2).mean().item(),
                0.0 if bs is None else bs.detach().double().mean().item(),
                True,
                running,
                module.eps,
            )
        ]
    if isinstance(module, nn.RMSNorm):
        wt = module.weight
        g2 = 1.0 if wt is None else wt.detach().double().pow(2).mean().item()
        return [_Norm(g2, 0.0, False, None, module.eps or 1e-12)]
    if isinstance(module, (nn.Identity, nn.Flatten)):
        return []
    if isinstance(module, DROPOUTS):
        keep = 1.0 - module.p if module.training else 1.0
        return [] if keep == 1.0 else [_Elem(lambda h, s=keep**-0.5: s * h)]
    if _is_activation(module) or (next(module.children(), None) is None and not _params(module)):
        return [_Elem(module)]
    raise TypeError(
        f"predict cannot walk module {name or '<root>'!r} of type {type(module).__name__}: "
        "supported are nn.Sequential, Residual, Linear, Conv, norm layers, Dropout and "
        "parameter-free element-wise activations"
    )


def _params(module: nn.Module) -> list:
    return list(module.parameters(recurse=False))


def walk(ops: list, q: float, f: Callable, layers: list[dict]) -> tuple[float, Callable, list]:
    """Forward pass of the second moments; returns the final state and backward closures.

    The signal is represented as ``f(sqrt(q) z)``, z ~ N(0, 1): ``q`` is the variance of
    the last Gaussian point (a layer output or a residual sum) and ``f`` the element-wise
    map applied since then. Each closure maps a gradient variance to the one upstream.
    """
    back: list[Callable[[float], float]] = []
    for op in ops:
        if isinstance(op, _Elem):
            f = _compose(op.fn, f)
        elif isinstance(op, _Norm):
            if op.running is not None:
                mu, var = op.running
            elif op.center:
                mu = gaussian_expectation(f, std=math.sqrt(q), n=NODES)
                var = second_moment(f, q) - mu**2
            else:
                mu, var = 0.0, second_moment(f, q)
            f = _affine(f, mu, math.sqrt(op.gain2 / (var + op.eps)), op.shift)
        elif isinstance(op, _Lin):
            m, chain = second_moment(f, q), grad_factor(f, q)
            back.append(lambda g, k=chain: k * g)
            entry = {
                "name": op.name,
                "fan_in": op.fan_in,
                "fan_out": op.fan_out,
                "sigma_w2": op.fan_in * op.mean_w2,
                "sigma_b2": op.sigma_b2,
                "input_moment": m,
                "forward": op.fan_in * op.mean_w2 * m + op.sigma_b2,
                "backward": math.nan,
            }
            layers.append(entry)
            back.append(lambda g, e=entry, k=op.fan_out * op.mean_w2: e.update(backward=g) or k * g)
            q, f = entry["forward"], identity
        elif isinstance(op, _Res):
            # The block input is treated as Gaussian with its second moment; the branch
            # output is independent of it, so the second moments add.
            m, chain = second_moment(f, q), grad_factor(f, q)
            back.append(lambda g, k=chain: k * g)
            qb, fb, back_b = walk(op.ops, m, identity, layers)
            mb, chain_b = second_moment(fb, qb), grad_factor(fb, qb)

            def res_back(g: float, s2: float = op.scale**2, kb=chain_b, bb=back_b) -> float:
                gb = s2 * kb * g
                for fn in reversed(bb):
                    gb = fn(gb)
                return g + gb

            back.append(res_back)
            q, f = m + op.scale**2 * mb, identity
    return q, f, back


def ops_from_spec(spec: Sequence) -> list:
    ops: list = []
    keys = ("fan_in", "fan_out", "sigma_w2", "sigma_b2", "activation")
    prev_out = None
    for k, item in enumerate(spec):
        if isinstance(item, dict):
            unknown = set(item) - set(keys)
            if unknown:
                raise ValueError(f"spec[{k}] has unknown keys {sorted(unknown)}; allowed {keys}")
            d = {"sigma_b2": 0.0, "activation": "linear", **item}
        elif isinstance(item, (tuple, list)) and 3 <= len(item) <= 5:
            d = dict(zip(keys, item, strict=False))
            d.setdefault("sigma_b2", 0.0)
            d.setdefault("activation", "linear")
        else:
            raise ValueError(f"spec[{k}] must be a dict or a tuple {keys}, got {item!r}")
        if not all(isinstance(d.get(n), int) and d[n] > 0 for n in ("fan_in", "fan_out")):
            raise ValueError(f"spec[{k}] needs positive int fan_in and fan_out, got {item!r}")
        if not (d["sigma_w2"] >= 0 and d["sigma_b2"] >= 0):
            raise ValueError(f"spec[{k}] needs sigma_w2 >= 0 and sigma_b2 >= 0, got {item!r}")
        if prev_out is not None and d["fan_in"] != prev_out:
            raise ValueError(
                f"spec[{k}] has fan_in={d['fan_in']}, but spec[{k - 1}] fan_out={prev_out}"
            )
        prev_out = d["fan_out"]
        ops.append(
            _Lin(
                f"layer{k + 1}",
                d["fan_in"],
                d["fan_out"],
                d["sigma_w2"] / d["fan_in"],
                d["sigma_b2"],
            )
        )
        if d["activation"] not in (None, "linear"):
            ops.append(_Elem(resolve(d["activation"], f"spec[{k}] activation")))
    if not ops:
        raise ValueError("spec must hold at least one layer")
    return ops


# The names this module had before theory imported only public ones; kept for old imports.
_NODES, _resolve, _identity = NODES, resolve, identity
_second_moment, _grad_factor, _walk = second_moment, grad_factor, walk
_ops_from_module, _ops_from_spec = ops_from_module, ops_from_spec
