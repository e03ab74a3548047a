r"""A drop-in, tested superset of ``torch.nn.init`` with one variance-scaling core.

Every function that ``torch.nn.init`` (torch 2.13) has keeps its name, signature, defaults,
return value (the same tensor, filled in place under ``torch.no_grad()``), and errors;
with the same ``generator``/seed it gives bit-identical values wherever the sampling
algorithm is the same. Deliberate differences, each documented where it happens:

* :func:`trunc_normal_` samples exactly on the open interval ``(a, b)`` (no value equals a
  bound) and is faster; ``a >= b`` (torch: ``RuntimeError`` for ``a > b``, a constant fill
  for ``a == b``) and ``std <= 0`` (torch: ``ZeroDivisionError`` or nonsense) are errors.
* :func:`sparse_` draws its zero mask from ``generator`` too (torch draws it from the
  global generator); with ``generator=None`` it equals torch.
* Zero-element and meta tensors are a no-op returning the same object everywhere.
* Bad arguments are ``ValueError``/``TypeError`` naming the argument; where torch's tensor
  op would raise a ``RuntimeError`` the error is an :class:`~initlab.errors.ArgumentError`,
  which is both.

Also there, as in torch: the deprecated aliases without the trailing underscore (``normal``,
``uniform``, ``xavier_uniform``, ...), which warn with torch's ``FutureWarning``, and the
private helpers ``_calculate_fan_in_and_fan_out`` and ``_calculate_correct_fan`` that
third-party code (timm, many model repositories) calls.

The additions: :func:`variance_scaling_` (the core that ``xavier_*``, ``kaiming_*`` and
``lecun_*`` are thin wrappers over), correct fans for grouped and transposed convolutions
(:func:`fan_in_and_fan_out`, :func:`fans`), numeric gains (:func:`gain_for`) and
:func:`init_model_`.
"""

import math
import warnings
from typing import Literal

import torch
from torch import Tensor

from initlab._checks import ArgumentError, check_positive, check_real, check_tensor, skip
from initlab._fans import FAN_MODES, correct_fan, fan_in_and_fan_out, fans  # noqa: F401
from initlab._gain import calculate_gain, gain_for
from initlab._init_model import InitSummary, LayerInit, init_model_
from initlab._scaling import (
    DISTRIBUTIONS,
    TRUNCATED_STD,
    check_distribution,
    draw_,
    std_from_fan,
)
from initlab._structured import dirac_, eye_, orthogonal_, sparse_
from initlab._torch_compat import deprecated_alias
from initlab._truncnorm import trunc_normal_, truncated_std

__all__ = [
    "calculate_gain",
    "gain_for",
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
    "variance_scaling_",
    "lecun_uniform_",
    "lecun_normal_",
    "fan_in_and_fan_out",
    "fans",
    "init_model_",
    "InitSummary",
    "LayerInit",
    "truncated_std",
    "TRUNCATED_STD",
    "DISTRIBUTIONS",
    "ArgumentError",
    # torch's deprecated aliases (FutureWarning)
    "uniform",
    "normal",
    "constant",
    "eye",
    "dirac",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
    "sparse",
]

Distribution = Literal["normal", "truncated_normal", "uniform"]


def _torch_function(fn, tensor: Tensor, **kwargs):  # noqa: ANN001, ANN202
    if torch.overrides.has_torch_function_variadic(tensor):
        return torch.overrides.handle_torch_function(fn, (tensor,), tensor=tensor, **kwargs)
    return None


def uniform_(
    tensor: Tensor, a: float = 0.0, b: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    r"""Fill the input Tensor with values drawn from the uniform distribution :math:`\mathcal{U}(a, b)`.

    Same as ``torch.nn.init.uniform_``; ``a > b`` is an error.

    Example:
        >>> w = torch.empty(3, 5)
        >>> uniform_(w, -0.1, 0.1, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 5])
    """
    if (r := _torch_function(uniform_, tensor, a=a, b=b, generator=generator)) is not None:
        return r
    check_tensor(tensor)
    lo, hi = check_real("a", a), check_real("b", b)
    if lo > hi:
        raise ArgumentError(
            f"uniform_ expects to return a [from, to) range, but found from={a} > to={b}: "
            "a must be <= b"
        )
    if skip(tensor):
        return tensor
    with torch.no_grad():
        return tensor.uniform_(a, b, generator=generator)


def normal_(
    tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    r"""Fill the input Tensor with values drawn from :math:`\mathcal{N}(\text{mean}, \text{std}^2)`.

    Same as ``torch.nn.init.normal_``; ``std < 0`` is an error (``std = 0`` fills with mean).

    Example:
        >>> normal_(torch.empty(3, 5), std=0.02).shape
        torch.Size([3, 5])
    """
    if (r := _torch_function(normal_, tensor, mean=mean, std=std, generator=generator)) is not None:
        return r
    check_tensor(tensor)
    check_real("mean", mean)
    if check_real("std", std) < 0:
        raise ArgumentError(
            f"normal expects std >= 0.0, but found std {std}: std must be a number >= 0"
        )
    if skip(tensor):
        return tensor
    with torch.no_grad():
        return tensor.normal_(mean, std, generator=generator)


def constant_(tensor: Tensor, val: float) -> Tensor:
    r"""Fill the input Tensor with the value :math:`\text{val}` (as ``torch.nn.init.constant_``).

    Example:
        >>> constant_(torch.empty(2, 2), 0.3)[0, 0].item() == torch.tensor(0.3).item()
        True
    """
    if (r := _torch_function(constant_, tensor, val=val)) is not None:
        return r
    check_tensor(tensor)
    if skip(tensor):
        return tensor
    with torch.no_grad():
        return tensor.fill_(val)


def ones_(tensor: Tensor) -> Tensor:
    r"""Fill the input Tensor with the scalar value `1` (as ``torch.nn.init.ones_``).

    Example:
        >>> ones_(torch.empty(2, 3)).sum().item()
        6.0
    """
    check_tensor(tensor)
    if skip(tensor):
        return tensor
    with torch.no_grad():
        return tensor.fill_(1.0)


def zeros_(tensor: Tensor) -> Tensor:
    r"""Fill the input Tensor with the scalar value `0` (as ``torch.nn.init.zeros_``).

    Example:
        >>> zeros_(torch.ones(2, 3)).sum().item()
        0.0
    """
    check_tensor(tensor)
    if skip(tensor):
        return tensor
    with torch.no_grad():
        return tensor.zero_()


def variance_scaling_(
    tensor: Tensor,
    scale: float = 1.0,
    mode: Literal["fan_in", "fan_out", "fan_avg"] = "fan_in",
    distribution: Distribution = "normal",
    *,
    groups: int = 1,
    transposed: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill the input Tensor with zero-mean values of variance :math:`\text{scale}/\text{fan}`.

    The one core behind Xavier, He and LeCun initialisation:

    .. math::
        \operatorname{Var}[w] = \frac{\text{scale}}{\text{fan}}, \qquad
        \text{fan} \in \{n_\text{in},\ n_\text{out},\ (n_\text{in} + n_\text{out})/2\}

    ``"uniform"`` draws :math:`\mathcal{U}(-\sqrt{3\,\text{scale}/\text{fan}}, \cdot)`;
    ``"normal"`` draws :math:`\mathcal{N}(0, \text{scale}/\text{fan})`; ``"truncated_normal"``
    draws a normal truncated at two of its standard deviations and rescaled by the true
    standard deviation of that truncated law (0.87962566..., computed from erf) so the variance
    is exactly :math:`\text{scale}/\text{fan}`. Xavier is ``scale=gain**2, mode="fan_avg"``
    (Glorot & Bengio 2010, eq. 12), He is ``scale=2, mode="fan_in"`` (He et al. 2015, eq. 10),
    LeCun is ``scale=1, mode="fan_in"`` (LeCun et al. 1998, sec. 4.6). Fans follow
    :func:`fan_in_and_fan_out`, correct for grouped and transposed convolutions.

    Args:
        tensor: a weight with at least 2 dimensions
        scale: the variance numerator, > 0 (the squared gain)
        mode: ``"fan_in"`` (preserves forward variance), ``"fan_out"`` (backward) or
            ``"fan_avg"`` (the compromise)
        distribution: ``"normal"``, ``"truncated_normal"`` or ``"uniform"``
        groups: the convolution's ``groups``
        transposed: ``True`` for a ``ConvTranspose*`` weight
        generator: the torch Generator to sample from (default: None)

    Example:
        >>> w = torch.empty(256, 128)
        >>> _ = variance_scaling_(w, scale=2.0, mode="fan_in", distribution="truncated_normal")
        >>> abs(w.var().item() * 128 / 2.0 - 1) < 0.05
        True
    """
    check_tensor(tensor)
    scale = check_positive("scale", scale)
    fan_in, fan_out = fan_in_and_fan_out(tensor, groups=groups, transposed=transposed)
    std = std_from_fan(math.sqrt(scale), fan_in, fan_out, mode)
    return draw_(tensor, std, check_distribution(distribution), generator)


def xavier_uniform_(
    tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    r"""Fill the input `Tensor` with values from a Xavier (Glorot) uniform distribution.

    :math:`\mathcal{U}(-a, a)` with :math:`a = \text{gain}\times\sqrt{6/(\text{fan\_in} +
    \text{fan\_out})}` (Glorot & Bengio 2010, eq. 16): ``variance_scaling_(tensor,
    gain**2, "fan_avg", "uniform")``, bit-identical to ``torch.nn.init.xavier_uniform_``.

    Example:
        >>> w = xavier_uniform_(torch.empty(3, 5), gain=calculate_gain("tanh"))
        >>> bool(w.abs().max() <= 5 / 3 * (6 / 8) ** 0.5)
        True
    """
    return _xavier(tensor, gain, "uniform", generator)


def xavier_normal_(
    tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    r"""Fill the input `Tensor` with values from a Xavier (Glorot) normal distribution.

    :math:`\mathcal{N}(0, \text{std}^2)` with :math:`\text{std} = \text{gain}\times
    \sqrt{2/(\text{fan\_in} + \text{fan\_out})}` (Glorot & Bengio 2010, eq. 12):
    ``variance_scaling_(tensor, gain**2, "fan_avg", "normal")``, bit-identical to torch.

    Example:
        >>> xavier_normal_(torch.empty(3, 5)).shape
        torch.Size([3, 5])
    """
    return _xavier(tensor, gain, "normal", generator)


def _xavier(tensor: Tensor, gain: float, distribution: str, generator) -> Tensor:  # noqa: ANN001
    check_tensor(tensor)
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    if check_real("gain", gain) < 0:
        raise ArgumentError(f"gain must be >= 0, got {gain!r}")
    return draw_(tensor, std_from_fan(gain, fan_in, fan_out, "fan_avg"), distribution, generator)


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0,
    mode: Literal["fan_in", "fan_out"] = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill the input `Tensor` with values from a Kaiming (He) uniform distribution.

    :math:`\mathcal{U}(-\text{bound}, \text{bound})` with :math:`\text{bound} = \text{gain}
    \times\sqrt{3/\text{fan\_mode}}` (He et al. 2015, eq. 10) and ``gain =
    calculate_gain(nonlinearity, a)``: ``variance_scaling_(tensor, gain**2, mode, "uniform")``,
    bit-identical to ``torch.nn.init.kaiming_uniform_`` (same fans, so a grouped or transposed
    conv gets torch's fans; use :func:`variance_scaling_` or :func:`init_model_` for true ones).
    A zero-element tensor warns and is returned, as in torch.

    Example:
        >>> kaiming_uniform_(torch.empty(3, 5), mode="fan_in", nonlinearity="relu").shape
        torch.Size([3, 5])
    """
    kw = dict(a=a, mode=mode, nonlinearity=nonlinearity, generator=generator)
    if (r := _torch_function(kaiming_uniform_, tensor, **kw)) is not None:
        return r
    return _kaiming(tensor, a, mode, nonlinearity, "uniform", generator)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0,
    mode: Literal["fan_in", "fan_out"] = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill the input `Tensor` with values from a Kaiming (He) normal distribution.

    :math:`\mathcal{N}(0, \text{std}^2)` with :math:`\text{std} = \text{gain}/
    \sqrt{\text{fan\_mode}}` (He et al. 2015, eqs. 10 and 14): ``variance_scaling_(tensor,
    gain**2, mode, "normal")``, bit-identical to ``torch.nn.init.kaiming_normal_``.

    Example:
        >>> w = kaiming_normal_(torch.empty(512, 256), mode="fan_out", nonlinearity="relu")
        >>> abs(w.std().item() * 512**0.5 / 2**0.5 - 1) < 0.02
        True
    """
    return _kaiming(tensor, a, mode, nonlinearity, "normal", generator)


def _kaiming(tensor, a, mode, nonlinearity, distribution, generator) -> Tensor:  # noqa: ANN001
    check_tensor(tensor)
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return tensor
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    gain = calculate_gain(nonlinearity, a)
    std = std_from_fan(gain, fan_in, fan_out, mode, ("fan_in", "fan_out"))
    return draw_(tensor, std, distribution, generator)


def lecun_uniform_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""Fill the input `Tensor` with LeCun uniform values, :math:`\mathcal{U}(-\sqrt{3/\text{fan\_in}}, \cdot)`.

    Variance :math:`1/\text{fan\_in}` (LeCun, Bottou, Orr & Müller 1998, "Efficient
    BackProp", sec. 4.6): ``variance_scaling_(tensor, 1.0, "fan_in", "uniform")``.

    Example:
        >>> bool(lecun_uniform_(torch.empty(4, 3)).abs().max() <= 1.0)
        True
    """
    return variance_scaling_(tensor, 1.0, "fan_in", "uniform", generator=generator)


def lecun_normal_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""Fill the input `Tensor` with LeCun normal values, :math:`\mathcal{N}(0, 1/\text{fan\_in})`.

    LeCun et al. (1998, sec. 4.6); the initialisation that SELU networks need
    (Klambauer et al. 2017, sec. "Initialization"): ``variance_scaling_(tensor, 1.0,
    "fan_in", "normal")``.

    Example:
        >>> lecun_normal_(torch.empty(4, 3)).shape
        torch.Size([4, 3])
    """
    return variance_scaling_(tensor, 1.0, "fan_in", "normal", generator=generator)


# --------------------------------------------------------------- torch compatibility
def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """torch's private helper, which third-party code calls: ``fan_in_and_fan_out(tensor)``."""
    return fan_in_and_fan_out(tensor)


def _calculate_correct_fan(tensor: Tensor, mode: str) -> int:
    """torch's private helper: the fan ``kaiming_*`` use, ``mode`` in ``fan_in``/``fan_out``."""
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    return int(correct_fan(fan_in, fan_out, mode, ("fan_in", "fan_out")))


uniform = deprecated_alias(uniform_)
normal = deprecated_alias(normal_)
constant = deprecated_alias(constant_)
eye = deprecated_alias(eye_)
dirac = deprecated_alias(dirac_)
xavier_uniform = deprecated_alias(xavier_uniform_)
xavier_normal = deprecated_alias(xavier_normal_)
kaiming_uniform = deprecated_alias(kaiming_uniform_)
kaiming_normal = deprecated_alias(kaiming_normal_)
orthogonal = deprecated_alias(orthogonal_)
sparse = deprecated_alias(sparse_)
