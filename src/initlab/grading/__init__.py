"""Auto-graded exercises: build student notebooks from masters, grade submissions.

One master notebook per chapter, ``exercises/<chapter>.ipynb``, in Otter Assign's format
(otter-grader 7): solutions between ``# BEGIN SOLUTION`` / ``# END SOLUTION``, public and hidden
tests with points. Two commands::

    python -m initlab.grading build [CHAPTER...] [--check]
    python -m initlab.grading grade CHAPTER SUBMISSION... --out grades.csv \\
        [--jobs N] [--timeout 120] [--feedback-dir DIR]

``build`` writes the student notebook ``chapters/<chapter>/exercises.ipynb`` (reproducible:
a rebuild is byte-identical) and the autograder bundle ``exercises/_autograder/<chapter>/``.
``grade`` grades every submission in its own process under a time limit and writes one CSV row
per submission: file, each question's score, total, possible, error.

Tests check properties of a correct answer (a formula, a distribution by a Kolmogorov–Smirnov
test, a variance within a tolerance derived from the sample size), never one seed's numbers; they
compute with the helpers of :mod:`initlab.grading.checks`, which are bound before the
submission runs, so monkeypatching numpy, torch, math or builtins does not change a grade.

Example:
    >>> from initlab.grading import build, grade
    >>> build(["03_xavier"])  # doctest: +SKIP
    >>> grades = grade("03_xavier", [Path("alice.ipynb")], out=Path("grades.csv"))  # doctest: +SKIP
"""

from ._build import LeakError, build, check_no_leaks
from ._grade import Grade, feedback_json, grade
from ._paths import autograder_zip, masters, repo_root, student_notebook

__all__ = [
    "Grade",
    "LeakError",
    "autograder_zip",
    "build",
    "check_no_leaks",
    "feedback_json",
    "grade",
    "masters",
    "repo_root",
    "student_notebook",
]
