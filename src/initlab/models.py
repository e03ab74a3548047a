r"""Small model builders with readable layer names: MLPs (plain or residual), RNNs and a small
GPT-style transformer (:func:`gpt`, pre-LN or post-LN; GPT-2's init in :func:`gpt2_init_`).

Every builder leaves PyTorch's default initialization in place (for ``nn.Linear`` that is
``kaiming_uniform_(a=sqrt(5))``, i.e. :math:`\mathcal{U}(-1/\sqrt{n_{in}}, 1/\sqrt{n_{in}})`);
re-initialize with :func:`initlab.init.init_model_`.

Example:
    >>> from initlab.models import mlp
    >>> net = mlp(64, 128, depth=2, out_features=10, activation="tanh")
    >>> [name for name, _ in net.named_children()]
    ['linear1', 'act1', 'linear2', 'act2', 'head']
"""

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from initlab._checks import check_int
from initlab._gpt import GPT, gpt, gpt2_init_
from initlab.residual import Residual

__all__ = [
    "ACTIVATIONS",
    "GPT",
    "MLP",
    "ScaledSigmoid",
    "SequenceModel",
    "activation",
    "gpt",
    "gpt2_init_",
    "mlp",
    "rnn_regressor",
]


def scaled_sigmoid(x: torch.Tensor) -> torch.Tensor:
    r"""The scaled sigmoid :math:`4\sigma(x) - 2`: zero at 0 with slope 1 there, like tanh."""
    return 4.0 * torch.sigmoid(x) - 2.0


def _linear(x: torch.Tensor) -> torch.Tensor:
    return x


#: Element-wise activation functions by name (what :mod:`initlab.theory` integrates).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": _linear,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "leaky_relu": F.leaky_relu,
    "gelu": F.gelu,
    "selu": torch.selu,
    "scaled_sigmoid": scaled_sigmoid,
}


class ScaledSigmoid(nn.Module):
    r"""Applies :math:`4\sigma(x) - 2` element-wise.

    The sigmoid rescaled to pass through the origin with slope 1, the fix for sigmoid's
    non-zero mean that the course's chapter on activations discusses.

    Example:
        >>> ScaledSigmoid()(torch.zeros(3))
        tensor([0., 0., 0.])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_sigmoid(x)


_MODULES: dict[str, Callable[..., nn.Module]] = {
    "linear": nn.Identity,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "selu": nn.SELU,
    "scaled_sigmoid": ScaledSigmoid,
}


def activation(name: str, **kwargs: Any) -> nn.Module:
    r"""Return a fresh activation module by name.

    Args:
        name: one of ``"linear"`` (``nn.Identity``), ``"tanh"``, ``"sigmoid"``, ``"relu"``,
            ``"leaky_relu"``, ``"gelu"``, ``"selu"``, ``"scaled_sigmoid"``.
        **kwargs: passed to the module, e.g. ``negative_slope`` for ``"leaky_relu"``.

    Example:
        >>> activation("leaky_relu", negative_slope=0.1)
        LeakyReLU(negative_slope=0.1)
    """
    return _make_activation(name, kwargs)


def _make_activation(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    if not isinstance(name, str) or name not in _MODULES:
        raise ValueError(f"activation must be one of {sorted(_MODULES)}, got {name!r}")
    try:
        return _MODULES[name](**kwargs)
    except TypeError as err:
        raise TypeError(f"activation {name!r} does not take arguments {kwargs}: {err}") from None


def _norm(norm: str | None, width: int) -> nn.Module | None:
    if norm is None:
        return None
    if norm == "batch":
        return nn.BatchNorm1d(width)
    if norm == "layer":
        return nn.LayerNorm(width)
    raise ValueError(f"norm must be None, 'batch' or 'layer', got {norm!r}")


class MLP(nn.Sequential):
    """An ``nn.Sequential`` built by :func:`mlp`; remembers how it was built.

    Attributes:
        activation_name: the activation's name (a key of :data:`ACTIVATIONS`).
        in_features, width, depth, out_features, residual, norm, bias: the build arguments.
    """

    activation_name: str
    in_features: int
    width: int
    depth: int
    out_features: int
    residual: bool
    norm: str | None
    bias: bool


def mlp(
    in_features: int,
    width: int,
    depth: int,
    out_features: int,
    activation: str = "relu",
    residual: bool = False,
    norm: str | None = None,
    bias: bool = True,
    *,
    activation_kwargs: Mapping[str, Any] | None = None,
) -> MLP:
    r"""Build a multilayer perceptron with readable layer names.

    Plain (``residual=False``), ``depth`` hidden layers then a linear head::

        linear1 (in -> width), [norm1], act1, ..., linear{depth}, [norm{depth}], act{depth}, head

    Residual (``residual=True``), a linear stem, ``depth`` blocks
    :math:`x + F(x)` (He et al. 2016) with
    :math:`F = \mathrm{linear2} \circ [\mathrm{norm1}] \circ \phi \circ \mathrm{linear1}`
    (``norm2`` after ``linear2`` when ``norm`` is set), and a head; no activation follows the
    sum, so the identity path stays clean::

        stem, block1 (Residual: branch.linear1, [branch.norm1], branch.act, branch.linear2,
        [branch.norm2]), ..., block{depth}, head

    Args:
        in_features: input size.
        width: hidden size.
        depth: number of hidden layers (plain) or residual blocks (residual).
        out_features: output size.
        activation: an activation name, see :func:`activation`.
        residual: build residual blocks instead of a plain stack.
        norm: ``None``, ``"batch"`` (``BatchNorm1d``) or ``"layer"`` (``LayerNorm``), placed
            between each linear layer and its activation.
        bias: give every linear layer a bias.
        activation_kwargs: keyword arguments for the activation (e.g. ``negative_slope``).

    Example:
        >>> net = mlp(4, 8, depth=2, out_features=3, residual=True)
        >>> [name for name, _ in net.named_children()]
        ['stem', 'block1', 'block2', 'head']
        >>> net(torch.zeros(5, 4)).shape
        torch.Size([5, 3])
    """
    for arg, value in (
        ("in_features", in_features),
        ("width", width),
        ("depth", depth),
        ("out_features", out_features),
    ):
        check_int(arg, value, 1)
    kwargs = dict(activation_kwargs or {})
    _make_activation(activation, kwargs)  # validate name and kwargs once
    _norm(norm, 1)  # validate norm once

    def act() -> nn.Module:
        return _make_activation(activation, kwargs)

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if residual:
        layers["stem"] = nn.Linear(in_features, width, bias=bias)
        for i in range(1, depth + 1):
            branch: OrderedDict[str, nn.Module] = OrderedDict()
            branch["linear1"] = nn.Linear(width, width, bias=bias)
            if norm is not None:
                branch["norm1"] = _norm(norm, width)  # type: ignore[assignment]
            branch["act"] = act()
            branch["linear2"] = nn.Linear(width, width, bias=bias)
            if norm is not None:
                branch["norm2"] = _norm(norm, width)  # type: ignore[assignment]
            layers[f"block{i}"] = Residual(nn.Sequential(branch))
    else:
        for i in range(1, depth + 1):
            layers[f"linear{i}"] = nn.Linear(in_features if i == 1 else width, width, bias=bias)
            if norm is not None:
                layers[f"norm{i}"] = _norm(norm, width)  # type: ignore[assignment]
            layers[f"act{i}"] = act()
    layers["head"] = nn.Linear(width, out_features, bias=bias)

    model = MLP(layers)
    model.activation_name = activation
    model.in_features, model.width, model.depth = in_features, width, depth
    model.out_features, model.residual, model.norm, model.bias = out_features, residual, norm, bias
    return model


_CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class SequenceModel(nn.Module):
    """A recurrent network read out by a linear head at the last time step.

    Built by :func:`rnn_regressor`. Input ``[batch, time, features]``;
    output ``head(rnn(x)[:, -1])``, of shape ``[batch, out_features]``, or ``[batch]`` when
    ``squeeze`` is set (a regressor with one output, so that it matches targets of shape
    ``[batch]``).

    Attributes:
        rnn: the ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (``batch_first=True``).
        head: the ``nn.Linear`` read-out.
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
    """

    def __init__(self, rnn: nn.RNNBase, head: nn.Linear, cell: str, squeeze: bool) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = head
        self.cell = cell
        self.squeeze = squeeze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(
                f"x must have shape [batch, time, features], got shape {tuple(x.shape)}"
            )
        out, _ = self.rnn(x)
        y = self.head(out[:, -1])
        return y.squeeze(-1) if self.squeeze else y


def _rnn(
    in_features: int,
    hidden: int,
    out_features: int,
    cell: str,
    num_layers: int,
    nonlinearity: str,
    squeeze: bool,
) -> SequenceModel:
    for arg, value in (
        ("in_features", in_features),
        ("hidden", hidden),
        ("out_features", out_features),
        ("num_layers", num_layers),
    ):
        check_int(arg, value, 1)
    if cell not in _CELLS:
        raise ValueError(f"cell must be one of {sorted(_CELLS)}, got {cell!r}")
    if cell == "rnn":
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"nonlinearity must be 'tanh' or 'relu' for cell='rnn', got {nonlinearity!r}"
            )
        rnn: nn.RNNBase = nn.RNN(
            in_features, hidden, num_layers, nonlinearity=nonlinearity, batch_first=True
        )
    else:
        if nonlinearity != "tanh":
            raise ValueError(
                f"nonlinearity is fixed to 'tanh' for cell={cell!r}, got {nonlinearity!r}"
            )
        rnn = _CELLS[cell](in_features, hidden, num_layers, batch_first=True)
    return SequenceModel(rnn, nn.Linear(hidden, out_features), cell, squeeze)


def rnn_regressor(
    in_features: int,
    hidden: int,
    out_features: int = 1,
    cell: str = "rnn",
    num_layers: int = 1,
    nonlinearity: str = "tanh",
) -> SequenceModel:
    r"""A recurrent regressor, e.g. for :func:`initlab.data.adding_problem`.

    The vanilla cell :math:`h_t = \tanh(W_{ih} x_t + W_{hh} h_{t-1} + b)` multiplies the
    gradient by :math:`W_{hh}^\top \mathrm{diag}(\phi')` at every step; the LSTM's additive
    cell state (Hochreiter & Schmidhuber 1997) turns that product into a sum. With
    ``out_features=1`` the output has shape ``[batch]`` (matching the adding problem's
    targets); otherwise ``[batch, out_features]``.

    Args:
        in_features: features per time step.
        hidden: hidden size.
        out_features: number of outputs.
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        num_layers: stacked recurrent layers.
        nonlinearity: ``"tanh"`` or ``"relu"`` (``cell="rnn"`` only).

    Example:
        >>> net = rnn_regressor(2, 16, cell="gru")
        >>> net(torch.zeros(4, 10, 2)).shape
        torch.Size([4])
    """
    return _rnn(
        in_features, hidden, out_features, cell, num_layers, nonlinearity, out_features == 1
    )
