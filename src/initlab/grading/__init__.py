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

from ._build import (
    LeakError,
    build,
    build_chapter,
    bundle_digest_ok,
    check_no_leaks,
    up_to_date,
)
from ._bwrap import sandbox_self_test
from ._grade import (
    Grade,
    csv_cell,
    csv_text,
    feedback_json,
    grade,
    verified_bundle,
)
from ._paths import autograder_zip, masters, repo_root, student_notebook
from .markers import LEAK_MARKERS, solution_cells, solution_lines, solution_split

__all__ = [
    "Grade",
    "LEAK_MARKERS",
    "LeakError",
    "autograder_zip",
    "build",
    "build_chapter",
    "bundle_digest_ok",
    "check_no_leaks",
    "csv_cell",
    "csv_text",
    "feedback_json",
    "grade",
    "masters",
    "repo_root",
    "sandbox_self_test",
    "solution_cells",
    "solution_lines",
    "solution_split",
    "student_notebook",
    "up_to_date",
    "verified_bundle",
]
