r"""Layer-sequential unit-variance (LSUV) initialisation (Mishkin & Matas 2016).

"All you need is a good init" (ICLR 2016), Algorithm 1: pre-initialise every weight with an
orthogonal matrix, then, layer by layer in the order the data flows, divide the weight by the
standard deviation of the layer's output on a batch until that std is within ``tol`` of the
target.
"""

import math
import warnings
from typing import Any, NamedTuple

import torch
from torch import nn

from initlab._checks import check_bool, check_int, check_positive
from initlab._layers import LAYERS
from initlab._structured import orthogonal_
from initlab._table import RowTable

__all__ = ["lsuv_", "LSUVLayer", "LSUVResult"]


class LSUVLayer(NamedTuple):
    """One layer's outcome: rescalings made and the output std measured after the last."""

    name: str
    iterations: int
    std: float


class LSUVResult(RowTable):
    """A list of :class:`LSUVLayer` rows, in execution order, that prints as a table."""

    columns = (
        ("name", "layer", "<24", ""),
        ("iterations", "iterations", ">10", ""),
        ("std", "std", ">10", ".4f"),
    )


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, list | tuple):
        for o in out:
            if (t := _first_tensor(o)) is not None:
                return t
    return None


def _weighted(model: nn.Module) -> dict[nn.Module, str]:
    return {
        m: (name or type(m).__name__)
        for name, m in model.named_modules()
        if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2
    }


def lsuv_(
    model: nn.Module,
    batch: torch.Tensor | tuple | list,
    target_std: float = 1.0,
    tol: float = 0.1,
    max_iter: int = 10,
    orthogonal: bool = True,
    generator: torch.Generator | None = None,
) -> LSUVResult:
    r"""Initialise ``model`` by LSUV (Mishkin & Matas 2016, Algorithm 1), in place.

    Every module with a ``weight`` of two or more dimensions (``Linear``, ``Conv*``, your own)
    takes part. With ``orthogonal=True`` each weight first gets :func:`~initlab.init.orthogonal_`
    (Saxe et al. 2014). One forward pass of ``batch`` then visits the layers in *execution*
    order (forward hooks, not registration order); at each layer the hook repeats

    .. math::
        W \leftarrow W \cdot \frac{\text{target\_std}}{\operatorname{std}(\text{output})}

    recomputing the layer's output (for ``Linear``/``Conv*`` by the exact elementwise update
    :math:`s(y - b) + b` instead of a second matrix product), until :math:`|\operatorname{std} - \text{target\_std}| <
    \text{tol}` or ``max_iter`` rescalings, and hands the corrected output on, so the next
    layer sees the rescaled network. Cost: the orthogonal pre-init plus one forward pass (other modules are called again once
    per rescaling).
    The pass runs in eval mode (no dropout, batch-norm running statistics untouched); each
    module's train/eval flag is restored afterwards and the hooks are removed, also on error.
    A layer that does not converge gives a ``RuntimeWarning``. Biases are left as they are.

    Args:
        model: the network; ``model(batch)`` (or ``model(*batch)`` for a tuple) must run
        batch: a representative input batch
        target_std: the output std every layer should have (> 0)
        tol: the accepted distance from ``target_std`` (> 0)
        max_iter: the most rescalings per layer (int >= 1)
        orthogonal: pre-initialise with orthogonal matrices
        generator: the torch Generator of the orthogonal pre-init (default: None)

    Returns:
        An :class:`LSUVResult`, one ``LSUVLayer(name, iterations, std)`` per layer that ran.

    Example:
        >>> net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
        >>> res = lsuv_(net, torch.randn(64, 16))
        >>> all(abs(r.std - 1) < 0.1 for r in res)
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    target_std = check_positive("target_std", target_std)
    tol = check_positive("tol", tol)
    max_iter = check_int("max_iter", max_iter, 1)
    check_bool("orthogonal", orthogonal)
    args = tuple(batch) if isinstance(batch, tuple | list) else (batch,)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise TypeError(f"batch must be a tensor or a tuple of tensors, got {type(batch).__name__}")
    layers = _weighted(model)
    if not layers:
        raise ValueError(
            f"model ({type(model).__name__}) has no module with a weight of 2 or more "
            "dimensions for LSUV to scale"
        )
    if orthogonal:
        for m in layers:
            orthogonal_(m.weight, generator=generator)

    result = LSUVResult()
    done: set[nn.Module] = set()
    busy = False  # a hook is recomputing its layer: inner layers pass through untouched

    def hook(module: nn.Module, hargs: tuple, hkwargs: dict, output: Any) -> Any:
        nonlocal busy
        if busy or module in done:
            return None
        done.add(module)
        busy = True
        try:
            iterations, out = 0, output
            std = _std(out, layers[module])
            while abs(std - target_std) >= tol and iterations < max_iter:
                scale = target_std / std
                module.weight.mul_(scale)
                if type(module).forward in _AFFINE_FORWARDS and isinstance(out, torch.Tensor):
                    out = _rescaled(module, out, scale)  # = module(*hargs), without the matmul
                else:
                    out = module(*hargs, **hkwargs)
                std = _std(out, layers[module])
                iterations += 1
        finally:
            busy = False
        if abs(std - target_std) >= tol:
            warnings.warn(
                f"LSUV: layer {layers[module]!r} reached std {std:.4g} after {iterations} "
                f"rescalings, not within tol={tol} of target_std={target_std}",
                RuntimeWarning,
                stacklevel=2,
            )
        result.append(LSUVLayer(layers[module], iterations, std))
        return out

    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in layers]
    try:
        model.eval()
        with torch.no_grad():
            try:
                model(*args)
            except (RuntimeError, ValueError, TypeError, IndexError) as e:
                if isinstance(e, _LSUVError):
                    raise
                shapes = [tuple(a.shape) for a in args]
                raise ValueError(
                    f"batch of shape {shapes[0] if len(shapes) == 1 else shapes} does not fit "
                    f"the model ({type(model).__name__}): {e}"
                ) from e
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return result


_AFFINE_FORWARDS = {cls.forward for cls in LAYERS}


def _rescaled(module: nn.Module, out: torch.Tensor, scale: float) -> torch.Tensor:
    """The output of a Linear/Conv whose weight was just multiplied by ``scale``.

    ``W x + b`` becomes ``scale (W x) + b = scale (out - b) + b``: an elementwise update.
    """
    bias = module.bias
    if bias is None:
        return out * scale
    if isinstance(module, nn.Linear):
        b = bias
    else:  # the channel dimension is the one before the spatial ones (batched or not)
        spatial = module.weight.dim() - 2
        b = bias.view(-1, *([1] * spatial))
    return (out - b).mul_(scale).add_(b)


class _LSUVError(ValueError):
    pass


def _std(out: Any, name: str) -> float:
    t = _first_tensor(out)
    if t is None:
        raise _LSUVError(f"layer {name!r} returned no tensor, so LSUV cannot measure its std")
    std = t.float().std().item()
    if not (math.isfinite(std) and std > 0):
        raise _LSUVError(
            f"layer {name!r} has output std {std!r}: LSUV needs a finite, positive std "
            "(is the batch constant or the layer dead?)"
        )
    return std
