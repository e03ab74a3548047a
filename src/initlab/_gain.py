r"""Gains: torch's table (:func:`calculate_gain`) and numeric ones (:func:`gain_for`).

Private helper of :mod:`initlab.init`; import both from there.
"""

import math
from collections.abc import Callable

from initlab._activations import resolve
from initlab._quadrature import gaussian_expectation

LINEAR_FNS = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
)
NONLINEARITIES = (*LINEAR_FNS, "sigmoid", "tanh", "relu", "leaky_relu", "selu")


def calculate_gain(nonlinearity: str, param: int | float | None = None) -> float:
    r"""Return the recommended gain value for the given nonlinearity function.

    Identical to ``torch.nn.init.calculate_gain`` (torch 2.13), values included:

    ================= ====================================================
    nonlinearity      gain
    ================= ====================================================
    Linear / Identity :math:`1`
    Conv{1,2,3}D      :math:`1`
    Sigmoid           :math:`1`
    Tanh              :math:`\frac{5}{3}`
    ReLU              :math:`\sqrt{2}`
    Leaky Relu        :math:`\sqrt{\frac{2}{1 + \text{negative\_slope}^2}}`
    SELU              :math:`\frac{3}{4}`
    ================= ====================================================

    ReLU's :math:`\sqrt{2}` is He et al. (2015, eq. 10); tanh's 5/3 and SELU's 3/4 are set by
    hand. :func:`gain_for` computes the second-moment gain of any function instead.

    Args:
        nonlinearity: the non-linear function (``nn.functional`` name)
        param: optional parameter for the non-linear function (the negative slope of
            ``'leaky_relu'``, default 0.01; an ``int`` or ``float``, not a ``bool``)

    Example:
        >>> calculate_gain("leaky_relu", 0.2)  # leaky_relu with negative_slope=0.2
        1.3867504905630728
    """
    if nonlinearity in LINEAR_FNS or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            negative_slope = 0.01
        elif not isinstance(param, bool) and isinstance(param, int) or isinstance(param, float):
            negative_slope = param
        else:
            raise ValueError(
                f"negative_slope {param} not a valid number: param must be an int or float "
                f"(not bool) or None, got {param!r}"
            )
        return math.sqrt(2.0 / (1 + negative_slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4  # found empirically (https://github.com/pytorch/pytorch/pull/50664)
    raise ValueError(
        f"Unsupported nonlinearity {nonlinearity}: nonlinearity must be one of "
        f"{list(NONLINEARITIES)}"
    )


def gain_for(fn: Callable | str) -> float:
    r"""Return the second-moment gain :math:`1/\sqrt{\mathbb{E}[f(z)^2]}`, :math:`z\sim N(0,1)`.

    With weights of variance :math:`\text{gain}^2/\text{fan\_in}`, a layer fed by
    :math:`f(y)` with :math:`y \sim N(0, 1)` gets pre-activations of variance
    :math:`\text{gain}^2\,\mathbb{E}[f(z)^2] = 1` again: the fixed point of the forward
    variance map of He et al. (2015, eq. 10), :math:`\operatorname{Var}[y_l] =
    n_l\operatorname{Var}[w_l]\,\mathbb{E}[f(y_{l-1})^2]`, evaluated at unit variance. The
    expectation is computed by Gauss-Hermite quadrature
    (:func:`initlab.theory.gaussian_expectation`) for any function.

    It agrees with :func:`calculate_gain` for ``relu`` (:math:`\sqrt2`) and ``leaky_relu``,
    and differs where torch's values are set by hand: ``tanh`` gives about 1.5925 (torch:
    5/3, which also counts the shrinking derivative), ``selu`` gives 1.0 (SELU is built so
    that :math:`\mathbb{E}[\text{selu}(z)^2]=1`; torch's 3/4 is an empirical compromise), and
    ``sigmoid`` about 1.846 (torch: 1; the second moment includes the nonzero mean).

    Args:
        fn: a callable (NumPy or torch function, ``nn.Module``), or an activation name:
            a key of :data:`initlab.models.ACTIVATIONS` (``"scaled_sigmoid"``, ...) or a
            ``torch.nn.functional``/``torch`` function (``"linear"`` is the identity), the same
            names :func:`initlab.theory.chi1` takes.

    Example:
        >>> import torch
        >>> round(gain_for(torch.relu), 6)
        1.414214
        >>> round(gain_for("tanh"), 4)
        1.5925
    """
    f = resolve(fn, "fn")
    second_moment = gaussian_expectation(lambda z: f(z) ** 2)
    if not (math.isfinite(second_moment) and second_moment > 0):
        raise ValueError(
            f"E[fn(z)^2] must be finite and positive to define a gain, got {second_moment!r} "
            f"for fn={fn!r}"
        )
    return 1.0 / math.sqrt(second_moment)
