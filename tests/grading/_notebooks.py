"""Build submissions for the grading tests: the student notebook with answers filled in."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from initlab.grading import solution_cells

FIXTURES = Path(__file__).parent / "fixtures"
ANSWER_TAG = "otter_answer_cell"


def master_solutions(master: Path) -> list[str]:
    """The solution code cells of a master, in order, with otter's markers removed."""
    return solution_cells(nbformat.read(master, as_version=4))


def answer_cells(nb: nbformat.NotebookNode) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if ANSWER_TAG in c.metadata.get("tags", [])]


def question_of(nb: nbformat.NotebookNode, index: int) -> str:
    """The question whose grader.check cell follows cell ``index``."""
    for cell in nb.cells[index:]:
        m = re.search(r'grader\.check\("(q\d+)"\)', cell.source)
        if m:
            return m.group(1)
    raise LookupError(index)


def solved(student: Path, master: Path) -> nbformat.NotebookNode:
    """The student notebook with every answer cell replaced by the master's solution."""
    nb = nbformat.read(student, as_version=4)
    idx, sols = answer_cells(nb), master_solutions(master)
    assert len(idx) == len(sols), (len(idx), len(sols))
    for i, src in zip(idx, sols, strict=True):
        nb.cells[i].source = src
    return nb


def apply_fixture(nb: nbformat.NotebookNode, fixture: Path) -> nbformat.NotebookNode:
    """Apply a fixture file made of sections, each starting with a header line
    ``# fixture: replace qN`` (qN's answer cell becomes the section) or
    ``# fixture: after qN`` (a new cell after qN's answer cell)."""
    text = fixture.read_text(encoding="utf-8")
    sections = re.split(r"(?m)^(?=# fixture: )", text)
    for section in (s for s in sections if s.strip()):
        header = section.splitlines()[0]
        action, _, where = header.removeprefix("# fixture:").strip().partition(" ")
        (i,) = [i for i in answer_cells(nb) if question_of(nb, i) == where]
        if action == "replace":
            nb.cells[i].source = section
        elif action == "after":
            nb.cells.insert(i + 1, nbformat.v4.new_code_cell(section))
        else:
            raise ValueError(f"unknown fixture action {action!r} in {fixture}")
    return nb
