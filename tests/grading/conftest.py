"""Shared fixtures of the grading tests; makes the helper modules ``_notebooks`` and
``_misconceptions`` importable (pytest runs with --import-mode=importlib)."""

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from initlab.grading import build, masters, sandbox_self_test  # noqa: E402


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh build of every master in a scratch root (the repository's files are untouched).

    Otter Assign does not grade the masters here (``run_tests=False``, the same bundle and
    student notebook, half the time): the suite checks them itself, in the sandbox
    (test_grading's ``test_every_master_solution_scores_full_marks_sandboxed``), in-process
    (test_misconceptions' ``test_solutions_score_full_marks``, through the grader's in-process
    session and its scoring function).
    """
    root = tmp_path_factory.mktemp("root")
    (root / "exercises").mkdir()
    for master in masters().values():
        shutil.copy(master, root / "exercises" / master.name)
    assert build(root=root, run_tests=False) == 0
    return root


@pytest.fixture(scope="session")
def sandbox(pytestconfig: pytest.Config) -> None:
    """Skip (or, with ``--require-sandbox``, fail) where bubblewrap cannot sandbox."""
    why = sandbox_self_test()
    if why is not None:
        msg = (
            f"bubblewrap sandbox unavailable ({why}); install Debian's `bubblewrap` to run "
            "the grading tests"
        )
        if pytestconfig.getoption("require_sandbox"):
            pytest.fail(f"{msg}. --require-sandbox forbids skipping them.", pytrace=False)
        pytest.skip(msg)
