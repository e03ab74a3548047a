"""The exceptions initlab raises for a bad argument, and the rule they follow.

Every public function checks its arguments before it changes anything, and names the
argument, the value it got and what is allowed:

* a value of the wrong **type** (a string where a number belongs, ``1.5`` where an int
  belongs, ``True`` where a number belongs) raises :class:`ArgumentTypeError`, a
  ``TypeError``;
* a value of the right type but outside what is allowed (``lr=0``, ``groups=0``, an unknown
  mode name) raises a ``ValueError``;
* where ``torch.nn.init`` raises a ``RuntimeError`` from a tensor op (``uniform_`` with
  ``a > b``, ``normal_`` with ``std < 0``, ``trunc_normal_`` with ``a > b``), initlab raises
  :class:`ArgumentError`, which is both a ``ValueError`` and a ``RuntimeError``, so code
  written against torch keeps catching it.

The checks themselves live in one private module (``initlab._checks``) that every other
module imports.

Example:
    >>> import torch
    >>> from initlab.init import uniform_
    >>> try:
    ...     uniform_(torch.empty(3), a=1.0, b=0.0)
    ... except RuntimeError as err:  # what torch code catches
    ...     isinstance(err, ValueError)
    True
"""

__all__ = ["ArgumentError", "ArgumentTypeError"]


class ArgumentError(ValueError, RuntimeError):
    """A bad argument where ``torch.nn.init`` raises a ``RuntimeError`` from the tensor op.

    It is a ``ValueError`` (this library's rule) and a ``RuntimeError`` (what code written
    against ``torch.nn.init`` catches), so both ``except`` clauses keep working.
    """


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type.

    A ``TypeError`` (the rule); also a ``ValueError``, because ``initlab.data``,
    ``initlab.models`` and ``initlab.train`` raised ``ValueError`` for these before the
    checks were unified, and code catching that keeps working.
    """
