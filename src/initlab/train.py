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
from torch import nn

from initlab._clip import clip_grad_agc_, clip_grads_, normalize_grads_, total_grad_norm
from initlab._fit_setup import OPTIMIZERS, Setup, prepare  # noqa: F401 (OPTIMIZERS: public)

__all__ = [
    "History",
    "NonFiniteError",
    "clip_grad_agc_",
    "clip_grads_",
    "fit",
    "normalize_grads_",
]

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

    def _add_step(self, loss: float, grad_norm: float, layer_norms: list[float]) -> None:
        """Record one step's loss, total gradient norm and per-parameter norms."""
        self.steps += 1
        self.loss.append(loss)
        self.grad_norm.append(grad_norm)
        for record, value in zip(self.grad_norm_per_layer.values(), layer_norms, strict=True):
            record.append(value)

    def _add_epoch(self, finite_losses: list[float], accuracy: float | None) -> None:
        """Record one epoch's mean finite step loss and running training accuracy."""
        mean = sum(finite_losses) / len(finite_losses) if finite_losses else math.nan
        self.epoch_loss.append(mean)
        if accuracy is not None:
            self.train_accuracy.append(accuracy)

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
        >>> from initlab.data import spirals
        >>> from initlab.models import mlp
        >>> _ = torch.manual_seed(0)
        >>> h = fit(mlp(2, 32, 2, 2), spirals(classes=2), epochs=3, lr=0.05, clip=("norm", 1.0),
        ...         progress=False)
        >>> 0.0 <= h.clipped_fraction <= 1.0
        True
    """
    run = prepare(
        model, data, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
        loss=loss, clip=clip, on_nonfinite=on_nonfinite, weight_decay=weight_decay,
    )  # fmt: skip
    hist = History(grad_norm_per_layer={name: [] for name, _ in run.named})
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(run.X) / batch_size)
    bar = _bar(epochs * steps_per_epoch) if _progress_on(progress) else None
    was_training = model.training
    model.train()
    started = time.perf_counter()
    try:
        for epoch in range(epochs):
            perm = torch.randperm(len(run.X), generator=generator).to(run.X.device)
            _train_epoch(
                model, run, hist, perm, batch_size, epoch, grad_normalize, on_nonfinite, bar
            )
            if run.test is not None:
                test_loss, test_acc = _evaluate(model, run.loss_fn, *run.test, run.classification)
                hist.test_loss.append(test_loss)
                if test_acc is not None:
                    hist.test_accuracy.append(test_acc)
            if bar is not None:
                post = {"loss": f"{hist.epoch_loss[-1]:.4g}"}
                if hist.test_accuracy:
                    post["test_acc"] = f"{hist.test_accuracy[-1]:.3f}"
                bar.set_postfix(post, refresh=False)
    finally:
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


def _train_epoch(
    model: nn.Module,
    run: Setup,
    hist: History,
    perm: torch.Tensor,
    batch_size: int,
    epoch: int,
    grad_normalize: bool,
    on_nonfinite: str,
    bar: Any,
) -> None:
    """One pass over the mini-batches of ``perm``: step, record, guard, update."""
    finite_losses: list[float] = []
    correct = torch.zeros((), dtype=torch.int64, device=run.X.device)
    for i in range(0, len(perm), batch_size):
        idx = perm[i : i + batch_size]
        loss_value, total, correct_in_batch = _backward_step(
            model, run, hist, run.X[idx], run.y[idx]
        )
        if correct_in_batch is not None:
            correct += correct_in_batch
        if bar is not None:
            bar.update(1)
        if not (math.isfinite(loss_value) and math.isfinite(hist.grad_norm[-1])):
            hist.clipped.append(False)
            if on_nonfinite == "raise":
                raise _nonfinite_error(
                    run.named, hist.steps - 1, epoch, loss_value, hist.grad_norm[-1]
                )
            hist.skipped += 1
            continue
        finite_losses.append(loss_value)
        hist.clipped.append(_update(run, total, grad_normalize))
    hist._add_epoch(finite_losses, int(correct) / len(perm) if run.classification else None)


def _backward_step(
    model: nn.Module, run: Setup, hist: History, xb: torch.Tensor, yb: torch.Tensor
) -> tuple[float, torch.Tensor, torch.Tensor | None]:
    """Forward and backward on one mini-batch; record the loss and the gradient norms.

    Returns the loss, the total gradient norm (a tensor, reused by clipping) and the number
    of correct predictions (classification) or ``None``.
    """
    run.opt.zero_grad(set_to_none=True)
    out = model(xb)
    batch_loss = run.loss_fn(out, yb)
    batch_loss.backward()
    params = run.params
    has_grad = [p.grad is not None for p in params]
    total, norms = total_grad_norm([p.grad for p in params if p.grad is not None])
    # One .tolist() for every number: a single device-to-host copy per step.
    values = torch.stack([batch_loss.detach().to(total.dtype), total, *norms]).tolist()
    per_layer = iter(values[2:])
    hist._add_step(values[0], values[1], [next(per_layer) if h else 0.0 for h in has_grad])
    correct = (out.detach().argmax(1) == yb).sum() if run.classification else None
    return values[0], total, correct


def _update(run: Setup, total: torch.Tensor, grad_normalize: bool) -> bool:
    """Normalise (optionally), clip and take the optimiser step; return whether it clipped."""
    params = run.params
    if grad_normalize:
        normalize_grads_(params)
    clipped = clip_grads_(params, run.clip, total_norm=None if grad_normalize else total)
    run.opt.step()
    return clipped
