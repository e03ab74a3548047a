"""Per-layer record tables of :func:`initlab.diagnostics.record` (private; pandas-free)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from initlab._table import format_table


@dataclass
class LayerRecord:
    """Statistics of one hooked module, all over every element of the batch.

    ``mean``/``var`` describe the module's output: the pre-activation for a
    ``linear``/``conv`` row, the activation for an ``activation`` row. ``grad_var``
    is the variance of the loss gradient w.r.t. that output; ``weight_var`` and
    ``weight_grad_var`` those of the weight and its gradient (NaN for activations).
    ``saturated``/``dead`` are NaN where they do not apply (see :data:`SATURATION_THRESHOLD`).
    ``output``/``grad`` hold the detached tensors when ``record(..., keep=True)``.
    """

    name: str
    kind: str
    module: str
    mean: float
    var: float
    grad_var: float = math.nan
    weight_var: float = math.nan
    weight_grad_var: float = math.nan
    saturated: float = math.nan
    dead: float = math.nan
    output: torch.Tensor | None = None
    grad: torch.Tensor | None = None


_TABLE_FIELDS = [f.name for f in fields(LayerRecord) if f.name not in ("output", "grad")]
_NUMERIC_FIELDS = _TABLE_FIELDS[3:]


class Records(list):
    """A list of :class:`LayerRecord` that prints as a table and converts to NumPy."""

    def column(self, field: str) -> list:
        """The values of one field, in layer order."""
        if field not in {f.name for f in fields(LayerRecord)}:
            raise ValueError(f"field must be one of {_TABLE_FIELDS}, got {field!r}")
        return [getattr(r, field) for r in self]

    def to_numpy(self, field: str) -> np.ndarray:
        """One numeric field as a float64 array (NaN where it does not apply)."""
        if field not in _NUMERIC_FIELDS:
            raise ValueError(f"field must be a numeric field {_NUMERIC_FIELDS}, got {field!r}")
        return np.asarray(self.column(field), dtype=np.float64)

    def select(self, kind: str) -> Records:
        """Only the rows of one kind: ``"linear"``, ``"conv"`` or ``"activation"``."""
        if kind not in ("linear", "conv", "activation"):
            raise ValueError(f"kind must be 'linear', 'conv' or 'activation', got {kind!r}")
        return Records(r for r in self if r.kind == kind)

    def __str__(self) -> str:
        return format_table(_TABLE_FIELDS, [[getattr(r, f) for f in _TABLE_FIELDS] for r in self])

    __repr__ = __str__
