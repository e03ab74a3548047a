"""Auto-graded exercises: build student notebooks from masters, grade submissions.

One master notebook per chapter, ``exercises/<chapter>.ipynb``, in Otter Assign's format
(otter-grader 7): solutions between ``# BEGIN SOLUTION`` / ``# END SOLUTION``, public and hidden
tests with points. Two commands::

    python -m initlab.grading build [CHAPTER...] [--check]
    python -m initlab.grading grade CHAPTER SUBMISSION... --out grades.csv \\
        [--jobs N] [--timeout 300] [--call-timeout 10] [--feedback-dir DIR] [--no-sandbox]

``build`` writes the student notebook ``chapters/<chapter>/exercises.ipynb`` (reproducible:
a rebuild is byte-identical) and the autograder bundle ``exercises/_autograder/<chapter>/``
with the bundle's sha256 beside it. ``grade`` checks that hash, runs every submission in a
bubblewrap sandbox (:mod:`initlab.grading._session`) that can see the system, the Python
environment and the ``initlab`` package only, and decides the score in its own trusted
process: every test, public and hidden, runs there, on the learner's answers sent out of the
sandbox as data (JSON and ``.npy``, never pickle) or on proxies that call the learner's
functions inside it. One CSV row per submission: file, each question's score, total,
possible, seconds, status, error.

Example:
    >>> from initlab.grading import build, grade
    >>> build(["03_xavier"])  # doctest: +SKIP
    >>> grades = grade("03_xavier", [Path("alice.ipynb")], out=Path("grades.csv"))  # doctest: +SKIP
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "LeakError": "_build",
    "build": "_build",
    "build_chapter": "_build",
    "bundle_digest_ok": "_build",
    "check_no_leaks": "_build",
    "up_to_date": "_build",
    "sandbox_self_test": "_bwrap",
    "Grade": "_grade",
    "csv_cell": "_grade",
    "csv_text": "_grade",
    "feedback_json": "_grade",
    "grade": "_grade",
    "score": "_grade",
    "verified_bundle": "_grade",
    "load_tests": "_grade",
    "InProcessSession": "_session",
    "autograder_zip": "_paths",
    "masters": "_paths",
    "repo_root": "_paths",
    "student_notebook": "_paths",
    "LEAK_MARKERS": "markers",
    "solution_cells": "markers",
    "solution_lines": "markers",
    "solution_split": "markers",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    # Lazy, so that the sandbox's driver (initlab.grading._sandbox) imports nothing of the
    # grader's side when its package is imported.
    if name in _WHERE:
        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    if name == "sandbox":  # the sandbox a submission runs in (launch, limits, self-test)
        return import_module(f"{__name__}._bwrap")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
