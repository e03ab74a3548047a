"""The deprecated ``torch.nn.init`` aliases without the trailing underscore (private; the
aliases themselves are in :mod:`initlab.init`)."""

import warnings
from collections.abc import Callable
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")


def deprecated_alias(meth: Callable[_P, _R]) -> Callable[_P, _R]:
    """The alias without the trailing underscore, warning as torch's ``_make_deprecate``."""
    new_name = meth.__name__
    old_name = new_name[:-1]

    def deprecated_init(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        warnings.warn(
            f"`nn.init.{old_name}` is now deprecated in favor of `nn.init.{new_name}`.",
            FutureWarning,
            stacklevel=2,
        )
        return meth(*args, **kwargs)

    deprecated_init.__doc__ = f"{old_name}(...): deprecated, use :func:`{new_name}`."
    deprecated_init.__name__ = old_name
    return deprecated_init
