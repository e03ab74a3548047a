"""Otter-grader 7's solution markers, read in one place.

An Otter Assign master marks a question's solution in three ways:

* raw cells ``# BEGIN SOLUTION`` and ``# END SOLUTION`` fence the question's solution cells;
* inside a code cell, the lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` lines are
  removed from the student notebook;
* a line ending in ``# SOLUTION`` is removed too (its code replaced by ``...``).

:func:`solution_split` reads one cell's lines, :func:`solution_cells` a master's solution
cells, :func:`solution_lines` the lines a student notebook must never hold, and
:data:`LEAK_MARKERS` the marker text it must never hold.

Example:
    >>> solution_split("def f(x):\\n    # BEGIN SOLUTION\\n    return 2 * x\\n    # END SOLUTION")
    [('def f(x):', False), ('    return 2 * x', True)]
"""

from __future__ import annotations

import re

import nbformat

#: Otter's (and nbgrader's) marker text: a student notebook that holds any of it leaks.
LEAK_MARKERS: tuple[str, ...] = (
    "BEGIN SOLUTION",
    "END SOLUTION",
    "# SOLUTION",
    "BEGIN QUESTION",
    "BEGIN TESTS",
    "BEGIN TEST CONFIG",
    "BEGIN HIDDEN",
    "END HIDDEN",
    "hidden=True",
    "hidden: true",
)

BEGIN = re.compile(r"#+\s*BEGIN SOLUTION")  # "### BEGIN SOLUTION" is nbgrader's spelling
END = re.compile(r"#+\s*END SOLUTION")
_SUFFIX = re.compile(r"\s*#\s*SOLUTION\b.*$")


def fence(cell: nbformat.NotebookNode | dict) -> str | None:
    """``"begin"`` / ``"end"`` for a raw ``# BEGIN SOLUTION`` / ``# END SOLUTION`` cell, else None."""
    if cell["cell_type"] != "raw":
        return None
    head = cell["source"].strip()
    return "begin" if BEGIN.match(head) else "end" if END.match(head) else None


def solution_split(source: str) -> list[tuple[str, bool]]:
    """The lines of one code cell without marker lines, ``# SOLUTION`` suffixes cut, each with
    ``True`` when Otter Assign removes it from the student notebook."""
    out: list[tuple[str, bool]] = []
    inside = False
    for line in source.splitlines():
        if BEGIN.match(line.strip()):
            inside = True
        elif END.match(line.strip()):
            inside = False
        elif _SUFFIX.search(line):
            out.append((_SUFFIX.sub("", line), True))
        else:
            out.append((line, inside))
    return out


def solution_cells(master: nbformat.NotebookNode) -> list[str]:
    """The code cells between a master's raw solution fences, in order, markers removed:
    what a learner who solved every question would have written."""
    cells, inside = [], False
    for cell in master.cells:
        mark = fence(cell)
        if mark:
            inside = mark == "begin"
        elif inside and cell.cell_type == "code":
            cells.append("\n".join(line for line, _ in solution_split(cell.source)))
    return cells


def solution_lines(master: nbformat.NotebookNode) -> set[str]:
    """Every stripped line of a master that Otter Assign removes from the student notebook,
    longer than 8 characters and not a comment (shorter ones, ``return x``, prove no leak)."""
    lines = {
        line.strip()
        for cell in master.cells
        if cell.cell_type == "code"
        for line, removed in solution_split(cell.source)
        if removed
    }
    return {s for s in lines if len(s) > 8 and not s.startswith("#")}
