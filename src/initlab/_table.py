"""Plain-text tables (private; public as :func:`initlab.plots.format_table`).

:func:`format_table` is the printer behind ``Records``, ``Prediction`` and ``Comparison``,
and the one notebooks use instead of hand-built f-string tables; :class:`RowTable` is the
fixed-width list behind ``InitSummary`` and ``LSUVResult``.
"""

import math
from collections.abc import Sequence
from typing import Any


def _fmt(v: Any, spec: str) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else format(v, spec)
    return str(v)


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str | Sequence[str] = ".3g"
) -> str:
    """Return a plain-text table: a rule under the header, numbers right-aligned, and columns
    that hold only text (``str`` in every row) left-aligned.

    Floats (NumPy's included) are formatted with ``fmt`` (one format spec for every column, or
    one per column; NaN prints as ``-``); everything else with ``str``.

    Example:
        >>> print(format_table(["layer", "var"], [["linear1", 0.98765], ["linear2", 1.5]]))
        layer      var
        -------  -----
        linear1  0.988
        linear2    1.5
    """
    specs = [fmt] * len(header) if isinstance(fmt, str) else list(fmt)
    if len(specs) != len(header):
        raise ValueError(f"fmt must be one format or one per column ({len(header)}), got {fmt!r}")
    if any(len(row) != len(header) for row in rows):
        raise ValueError(f"every row must have {len(header)} cells, like the header")
    left = [bool(rows) and all(isinstance(row[i], str) for row in rows) for i in range(len(header))]
    cells = [list(map(str, header))]
    cells += [[_fmt(v, s) for v, s in zip(row, specs, strict=True)] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if lt else c.rjust(w) for c, w, lt in zip(r, widths, left, strict=True)
        ).rstrip()

    lines = [line(r) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class RowTable(list):
    """A list of rows (named tuples) that prints as a fixed-width table, in IPython too.

    Subclasses set :attr:`columns`: ``(field, header, width and alignment, format spec)``,
    e.g. ``("std", "std", ">10", ".4g")``; a tuple value prints as a list.
    """

    columns: tuple[tuple[str, str, str, str], ...] = ()

    def __str__(self) -> str:
        head = " ".join(format(title, width) for _, title, width, _ in self.columns)
        rows = [
            " ".join(
                format(str(list(v)) if isinstance(v := getattr(row, field), tuple) else v,
                       width + spec)
                for field, _, width, spec in self.columns
            )
            for row in self
        ]  # fmt: skip
        return "\n".join([head, "-" * len(head), *rows])

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython's pretty printer
        p.text(str(self))
