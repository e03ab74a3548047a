"""What :func:`initlab.train.fit` does before its first step (private): check the arguments
and the data, move the data to the model's device, pick the loss and the optimizer, and try
one forward pass so that a shape mistake fails with a clear message.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from initlab._checks import check_choice, check_clip, check_number

OPTIMIZERS = ("sgd", "momentum", "adam")


class Setup(NamedTuple):
    """Everything the training loop needs, checked."""

    named: list[tuple[str, nn.Parameter]]
    X: torch.Tensor
    y: torch.Tensor
    test: tuple[torch.Tensor, torch.Tensor] | None
    classification: bool
    loss_fn: Callable[[torch.Tensor, torch.Tensor], Any]
    opt: torch.optim.Optimizer
    clip: tuple[str, float] | None

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for _, p in self.named]


def prepare(
    model: nn.Module,
    data: Any,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    optimizer: str,
    loss: Any,
    clip: Any,
    on_nonfinite: str,
    weight_decay: float,
) -> Setup:
    """Check :func:`~initlab.train.fit`'s arguments (in its documented order) and set up."""
    check_number("epochs", epochs, integer=True)
    check_number("lr", lr)
    check_number("batch_size", batch_size, integer=True)
    check_number("weight_decay", weight_decay, zero_ok=True)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    clip = check_clip(clip)
    check_choice("on_nonfinite", on_nonfinite, ("raise", "skip"))
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model has no trainable parameters")
    params = [p for _, p in named]

    tensors = unpack_data(data)
    device, dtype = params[0].device, params[0].dtype
    classification = not (tensors[1].is_floating_point() or tensors[1].is_complex())
    tensors = tuple(
        t.to(device, dtype) if t.is_floating_point() else t.to(device, torch.int64) for t in tensors
    )
    X, y = tensors[0], tensors[1]
    test = (tensors[2], tensors[3]) if len(tensors) == 4 else None
    loss_fn = loss_function(loss, classification)
    check_shapes(model, loss_fn, X[:batch_size], y[:batch_size], classification)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        momentum = 0.9 if optimizer == "momentum" else 0.0
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return Setup(named, X, y, test, classification, loss_fn, opt, clip)


def mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if out.dim() == target.dim() + 1 and out.shape[-1] == 1:
        out = out.squeeze(-1)
    if out.shape != target.shape:
        raise ValueError(
            f"the model outputs shape {tuple(out.shape)} but the targets have shape "
            f"{tuple(target.shape)}"
        )
    return F.mse_loss(out, target)


def loss_function(loss: Any, classification: bool) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    if loss is None:
        return F.cross_entropy if classification else mse
    if loss == "cross_entropy":
        return F.cross_entropy
    if loss == "mse":
        return mse
    if callable(loss):
        return loss
    raise ValueError(f"loss must be None, 'cross_entropy', 'mse' or a callable, got {loss!r}")


def unpack_data(data: Any) -> tuple[torch.Tensor, ...]:
    """``data`` of :func:`initlab.train.fit` as 2 or 4 tensors, checked."""
    if not isinstance(data, Sequence) or len(data) not in (2, 4):
        raise ValueError(
            "data must be a Dataset or a tuple (X, y) or (X_train, y_train, X_test, y_test), "
            f"got {type(data).__name__}"
            + (f" of length {len(data)}" if isinstance(data, Sequence) else "")
        )
    names = ("X_train", "y_train", "X_test", "y_test")
    try:
        tensors = tuple(torch.as_tensor(v) for v in data)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"data cannot be converted to tensors: {err}") from None
    for i in range(0, len(tensors), 2):
        X, y = tensors[i], tensors[i + 1]
        if X.dim() == 0 or y.dim() == 0 or len(X) != len(y):
            raise ValueError(
                f"data: {names[i]} and {names[i + 1]} must have the same number of samples, "
                f"got shapes {tuple(X.shape)} and {tuple(y.shape)}"
            )
        if len(X) == 0:
            raise ValueError(f"data: {names[i]} is empty")
    if len(tensors) == 4 and tensors[2].shape[1:] != tensors[0].shape[1:]:
        raise ValueError(
            f"data: X_test has samples of shape {tuple(tensors[2].shape[1:])}, "
            f"X_train of shape {tuple(tensors[0].shape[1:])}"
        )
    return tensors


def check_shapes(
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
