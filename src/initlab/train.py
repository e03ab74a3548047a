r"""A small, fast training loop with the course's stabilisers built in.

:func:`fit` trains any model on a :class:`initlab.data.Dataset` (or tensors) and returns a
:class:`History` with the loss and the gradient norms of every step. It clips gradients by
norm (Pascanu et al. 2013), by value, or unit-wise relative to the weights (AGC, Brock et al.
2021), can normalise each gradient to zero mean and unit variance, and refuses to continue
silently when the loss or a gradient becomes non-finite.

Example:
    >>> from initlab.data import digits
    >>> from initlab.models import mlp
    >>> _ = torch.manual_seed(0)
    >>> hist = fit(mlp(64, 64, 1, 10), digits(), epochs=2, lr=0.1, progress=False)
    >>> hist.steps, len(hist.loss), len(hist.test_accuracy)
    (44, 44, 2)
"""

import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from initlab._clip import (
    check_clip,
    check_number,
    clip_grad_agc_,
    clip_grads_,
    normalize_grads_,
    total_grad_norm,
    unpack_data,
)

__all__ = [
    "History",
    "NonFiniteError",
    "clip_grad_agc_",
    "clip_grads_",
    "fit",
    "normalize_grads_",
]

OPTIMIZERS = ("sgd", "momentum", "adam")
_EVAL_CHUNK = 4096


@dataclass(repr=False)
class History:
    """What :func:`fit` measured.

    Per step (one list entry per mini-batch, skipped steps included): ``loss``, ``grad_norm``
    (total L2 norm of all gradients *before* normalisation and clipping),
    ``grad_norm_per_layer`` (the same, per parameter name, e.g. ``"linear1.weight"``) and
    ``clipped``. Per epoch: ``epoch_loss`` (mean step loss over finite steps),
    ``train_accuracy`` (running accuracy over the epoch's mini-batches, in training mode),
    ``test_loss`` and ``test_accuracy`` (in eval mode at the end of the epoch; accuracies for
    classification only, test entries only when test data were given).
    """

    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    grad_norm_per_layer: dict[str, list[float]] = field(default_factory=dict)
    clipped: list[bool] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    skipped: int = 0
    steps: int = 0
    seconds: float = 0.0

    @property
    def clipped_fraction(self) -> float:
        """Fraction of steps on which the gradient was clipped (0.0 before any step)."""
        return sum(self.clipped) / len(self.clipped) if self.clipped else 0.0

    def __repr__(self) -> str:
        parts = [f"steps={self.steps}", f"epochs={len(self.epoch_loss)}"]
        if self.epoch_loss:
            parts.append(f"final_loss={self.epoch_loss[-1]:.4g}")
        if self.test_accuracy:
            parts.append(f"test_accuracy={self.test_accuracy[-1]:.4f}")
        elif self.test_loss:
            parts.append(f"test_loss={self.test_loss[-1]:.4g}")
        parts += [
            f"clipped_fraction={self.clipped_fraction:.3f}",
            f"skipped={self.skipped}",
            f"seconds={self.seconds:.2f}",
        ]
        return f"History({', '.join(parts)})"


class NonFiniteError(RuntimeError):
    """The loss or a gradient became ``inf``/``nan`` during :func:`fit`.

    Attributes:
        step: 0-based index of the step (mini-batch) that failed.
        loss: the loss on that step.
        parameter: the name of the first parameter whose gradient is not finite, or ``None``.
    """

    def __init__(self, message: str, step: int, loss: float, parameter: str | None) -> None:
        super().__init__(message)
        self.step, self.loss, self.parameter = step, loss, parameter


def _mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if out.dim() == target.dim() + 1 and out.shape[-1] == 1:
        out = out.squeeze(-1)
    if out.shape != target.shape:
        raise ValueError(
            f"the model outputs shape {tuple(out.shape)} but the targets have shape "
            f"{tuple(target.shape)}"
        )
    return F.mse_loss(out, target)


def _loss_fn(loss: Any, classification: bool) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    if loss is None:
        return F.cross_entropy if classification else _mse
    if loss == "cross_entropy":
        return F.cross_entropy
    if loss == "mse":
        return _mse
    if callable(loss):
        return loss
    raise ValueError(f"loss must be None, 'cross_entropy', 'mse' or a callable, got {loss!r}")


def _optimizer(
    name: str, params: list[nn.Parameter], lr: float, wd: float
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def _check_shapes(
    model: nn.Module, loss_fn: Callable, X: torch.Tensor, y: torch.Tensor, classification: bool
) -> None:
    """One forward pass (eval mode, no grad) on the first batch, with clear errors."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(X)
    except (RuntimeError, ValueError, IndexError, TypeError) as err:
        raise ValueError(
            f"data: the model cannot take inputs of shape {tuple(X.shape)} "
            f"(a batch of X_train): {err}"
        ) from err
    finally:
        model.train(was_training)
    if classification:
        if out.dim() != 2:
            raise ValueError(
                "data: integer labels need a model that outputs logits of shape "
                f"[batch, classes], got output shape {tuple(out.shape)}"
            )
    try:
        value = loss_fn(out, y)
    except (RuntimeError, ValueError, IndexError) as err:
        raise ValueError(
            f"loss: cannot compare model outputs of shape {tuple(out.shape)} with targets of "
            f"shape {tuple(y.shape)}: {err}"
        ) from err
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ValueError(f"loss must return a scalar tensor, got {value!r:.80}")


def _progress_on(progress: bool | None) -> bool:
    if progress is not None:
        return bool(progress)
    if os.environ.get("INITLAB_PROGRESS") == "0":
        return False
    if sys.stderr is not None and hasattr(sys.stderr, "isatty") and sys.stderr.isatty():
        return True
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _bar(total: int) -> Any:
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="fit", unit="step", leave=False)
    except ImportError:  # notebook front end without widgets: fall back to text
        from tqdm.std import tqdm as text_tqdm

        return text_tqdm(total=total, desc="fit", unit="step", leave=False)


@torch.no_grad()
def _evaluate(
    model: nn.Module, loss_fn: Callable, X: torch.Tensor, y: torch.Tensor, classification: bool
) -> tuple[float, float | None]:
    was_training = model.training
    model.eval()
    try:
        out = torch.cat([model(X[i : i + _EVAL_CHUNK]) for i in range(0, len(X), _EVAL_CHUNK)])
    finally:
        model.train(was_training)
    loss = float(loss_fn(out, y))
    acc = float((out.argmax(1) == y).float().mean()) if classification else None
    return loss, acc


def _nonfinite_error(
    named: list[tuple[str, nn.Parameter]], step: int, epoch: int, loss: float, total: float
) -> NonFiniteError:
    bad = next((n for n, p in named if p.grad is not None and not p.grad.isfinite().all()), None)
    if bad is not None:
        what = f"the first parameter with a non-finite gradient is {bad!r}"
    elif math.isfinite(loss):
        what = f"every gradient is finite but their total norm overflowed to {total}"
    else:
        what = "every gradient is finite"
    return NonFiniteError(
        f"non-finite loss or gradient at step {step} (epoch {epoch + 1}): loss = {loss}; {what}."
        " Try: lower lr, clip the gradients (clip=...), or pass on_nonfinite='skip'.",
        step,
        loss,
        bad,
    )


def fit(
    model: nn.Module,
    data: Any,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    optimizer: str = "sgd",
    loss: Any = None,
    clip: tuple[str, float] | None = None,
    grad_normalize: bool = False,
    on_nonfinite: str = "raise",
    progress: bool | None = None,
    seed: int = 0,
    weight_decay: float = 0.0,
) -> History:
    r"""Train ``model`` on ``data`` with mini-batch gradient descent and return a :class:`History`.

    Each step: forward, backward, record the loss and the gradient norms, check they are finite,
    then (optionally) normalise, clip, and update. Training is least stable at the start, so the
    per-step record shows exactly where a run blows up.

    * ``clip=("norm", c)``: rescale all gradients together when their total L2 norm exceeds
      ``c`` (Pascanu et al. 2013); identical to ``torch.nn.utils.clip_grad_norm_``.
    * ``clip=("value", v)``: clamp every gradient element to ``[-v, v]``.
    * ``clip=("agc", f)``: unit-wise adaptive clipping, :func:`clip_grad_agc_` (Brock et al.
      2021).
    * ``grad_normalize=True``: every step, every parameter's gradient becomes zero-mean,
      unit-variance (:func:`normalize_grads_`), *before* any clipping; unlike clipping it
      also rescales small gradients and changes the direction.

    Mini-batches are drawn without replacement; epoch ``e`` uses the ``e``-th call of
    ``torch.randperm(n, generator=torch.Generator().manual_seed(seed))``, so a run is
    reproducible given the model's initial weights.

    Args:
        model: any ``nn.Module``; trained in place on the device of its parameters.
        data: a :class:`initlab.data.Dataset`, ``(X, y)`` or ``(X_train, y_train, X_test,
            y_test)`` (tensors or arrays).
        epochs: number of passes over the training set (> 0).
        lr: learning rate (> 0).
        batch_size: mini-batch size (> 0).
        optimizer: ``"sgd"``, ``"momentum"`` (SGD, momentum 0.9) or ``"adam"``.
        loss: ``None`` (cross-entropy for integer targets, mean squared error otherwise),
            ``"cross_entropy"``, ``"mse"``, or any ``loss(output, target)`` callable.
        clip: ``None``, ``("norm", max_norm)``, ``("value", v)`` or ``("agc", factor)``.
        grad_normalize: normalise each gradient to zero mean and unit variance.
        on_nonfinite: ``"raise"`` (:class:`NonFiniteError` naming the step, the loss and the
            first parameter with a non-finite gradient) or ``"skip"`` (drop that update, count
            it in ``History.skipped``, warn at the end).
        progress: show a tqdm bar; ``None``: only when stderr is a terminal or in a live
            notebook, and never when the environment variable ``INITLAB_PROGRESS`` is ``"0"``.
        seed: seed of the mini-batch order.
        weight_decay: L2 penalty passed to the optimizer (>= 0).

    Example:
        >>> from initlab.data import circles
        >>> from initlab.models import mlp
        >>> _ = torch.manual_seed(0)
        >>> h = fit(mlp(2, 32, 2, 2), circles(), epochs=3, lr=0.05, clip=("norm", 1.0),
        ...         progress=False)
        >>> 0.0 <= h.clipped_fraction <= 1.0
        True
    """
    check_number("epochs", epochs, integer=True)
    check_number("lr", lr)
    check_number("batch_size", batch_size, integer=True)
    check_number("weight_decay", weight_decay, zero_ok=True)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    clip = check_clip(clip)
    if on_nonfinite not in ("raise", "skip"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model has no trainable parameters")
    names = [n for n, _ in named]
    params = [p for _, p in named]

    tensors = unpack_data(data)
    device, dtype = params[0].device, params[0].dtype
    classification = not (tensors[1].is_floating_point() or tensors[1].is_complex())
    tensors = tuple(
        t.to(device, dtype) if t.is_floating_point() else t.to(device, torch.int64) for t in tensors
    )
    X, y = tensors[0], tensors[1]
    test = tensors[2:] if len(tensors) == 4 else None
    loss_fn = _loss_fn(loss, classification)
    _check_shapes(model, loss_fn, X[:batch_size], y[:batch_size], classification)
    opt = _optimizer(optimizer, params, lr, weight_decay)

    hist = History(grad_norm_per_layer={n: [] for n in names})
    per_layer = [hist.grad_norm_per_layer[n] for n in names]
    n = len(X)
    generator = torch.Generator().manual_seed(seed)
    bar = _bar(epochs * math.ceil(n / batch_size)) if _progress_on(progress) else None
    was_training = model.training
    model.train()
    started = time.perf_counter()
    step = 0
    try:
        for epoch in range(epochs):
            perm = torch.randperm(n, generator=generator).to(device)
            finite_losses: list[float] = []
            correct = torch.zeros((), dtype=torch.int64, device=device)
            for i in range(0, n, batch_size):
                idx = perm[i : i + batch_size]
                xb, yb = X[idx], y[idx]
                opt.zero_grad(set_to_none=True)
                out = model(xb)
                batch_loss = loss_fn(out, yb)
                batch_loss.backward()
                if classification:
                    correct += (out.detach().argmax(1) == yb).sum()
                has_grad = [p.grad is not None for p in params]
                grads = [p.grad for p in params if p.grad is not None]
                total, norms = total_grad_norm(grads)  # type: ignore[arg-type]
                values = torch.stack([batch_loss.detach().to(total.dtype), total, *norms]).tolist()
                loss_value, total_value = values[0], values[1]
                hist.loss.append(loss_value)
                hist.grad_norm.append(total_value)
                it = iter(values[2:])
                for record, present in zip(per_layer, has_grad, strict=True):
                    record.append(next(it) if present else 0.0)
                step += 1
                if bar is not None:
                    bar.update(1)
                if not (math.isfinite(loss_value) and math.isfinite(total_value)):
                    hist.clipped.append(False)
                    if on_nonfinite == "raise":
                        raise _nonfinite_error(named, step - 1, epoch, loss_value, total_value)
                    hist.skipped += 1
                    continue
                finite_losses.append(loss_value)
                if grad_normalize:
                    normalize_grads_(params)
                hist.clipped.append(
                    clip_grads_(params, clip, total_norm=None if grad_normalize else total)
                )
                opt.step()

            hist.epoch_loss.append(
                sum(finite_losses) / len(finite_losses) if finite_losses else math.nan
            )
            if classification:
                hist.train_accuracy.append(int(correct) / n)
            if test is not None:
                test_loss, test_acc = _evaluate(model, loss_fn, *test, classification)
                hist.test_loss.append(test_loss)
                if test_acc is not None:
                    hist.test_accuracy.append(test_acc)
            if bar is not None:
                post = {"loss": f"{hist.epoch_loss[-1]:.4g}"}
                if hist.test_accuracy:
                    post["test_acc"] = f"{hist.test_accuracy[-1]:.3f}"
                bar.set_postfix(post, refresh=False)
    finally:
        hist.steps = step
        hist.seconds = time.perf_counter() - started
        model.train(was_training)
        if bar is not None:
            bar.close()
    if hist.skipped:
        warnings.warn(
            f"fit skipped {hist.skipped} of {hist.steps} steps with a non-finite loss or "
            "gradient (on_nonfinite='skip')",
            RuntimeWarning,
            stacklevel=2,
        )
    return hist
