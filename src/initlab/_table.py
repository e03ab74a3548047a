"""Plain-text tables (private; public as :func:`initlab.plots.format_table`).

The one table printer behind ``Records``, ``Prediction`` and ``Comparison``, and the one
notebooks use instead of hand-built f-string tables.
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
    """Return a plain-text table: right-aligned columns, a rule under the header.

    Floats are formatted with ``fmt`` (one format spec for every column, or one per column;
    NaN prints as ``-``); everything else with ``str``.

    Example:
        >>> print(format_table(["layer", "var"], [["linear1", 0.98765], ["linear2", 1.5]]))
          layer    var
        -------  -----
        linear1  0.988
        linear2    1.5
    """
    specs = [fmt] * len(header) if isinstance(fmt, str) else list(fmt)
    if len(specs) != len(header):
        raise ValueError(f"fmt must be one format or one per column ({len(header)}), got {fmt!r}")
    cells = [list(map(str, header))]
    cells += [[_fmt(v, s) for v, s in zip(row, specs, strict=True)] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
