"""grader.check works on Colab: otter's Colab path, with the tests the setup cell writes.

Each run is a child process (otter's import-time warnings stay out of pytest), started in an empty
working directory: no notebook file and no test files there. The notebook reaches it only through
the stand-in for Colab's ``blocking_request("get_ipynb")`` (see ``_colab_session.py``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from _offline import ROOT

from initlab.grading.colab import launch_settings

CHAPTER = "03_xavier"
STUDENT = ROOT / "chapters" / CHAPTER / "exercises.ipynb"
MASTER = ROOT / "exercises" / f"{CHAPTER}.ipynb"


def _grading_helpers():
    path = ROOT / "tests" / "grading" / "_notebooks.py"
    spec = importlib.util.spec_from_file_location("_grading_notebooks", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _session(nb: nbformat.NotebookNode, tmp_path: Path) -> dict:
    served = tmp_path / "served" / "submission.ipynb"  # elsewhere, under another name
    served.parent.mkdir()
    nbformat.write(nb, served)
    work = tmp_path / "content"
    work.mkdir()
    env = {**os.environ, "MPLBACKEND": "Agg", "INITLAB_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    script = Path(__file__).with_name("_colab_session.py")
    proc = subprocess.run(
        [sys.executable, str(script), str(served), str(tmp_path / "result.json")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp_path / "result.json").read_text())


@pytest.fixture(scope="module")
def helpers():
    return _grading_helpers()


def test_grader_check_passes_a_correct_notebook_on_colab(helpers, tmp_path: Path) -> None:
    result = _session(helpers.solved(STUDENT, MASTER), tmp_path)
    assert result["start_files"] == []
    assert result["errors"] == []
    settings = launch_settings(ROOT)
    assert [call[-1] for call in result["pip_calls"]] == [
        f"initlab[notebooks,grading] @ git+{settings.url}@{settings.branch}"
    ]
    assert result["otter_on_colab_path"], "otter did not take its Colab code path"
    tests = nbformat.read(STUDENT, as_version=4).metadata.otter.tests
    assert result["tests_written"] == sorted(f"{q}.py" for q in tests)
    assert result["grades"] == {q: 1.0 for q in tests}, result["grades"]


def test_grader_check_fails_a_wrong_answer_on_colab(helpers, tmp_path: Path) -> None:
    nb = helpers.solved(STUDENT, MASTER)
    wrong = helpers.FIXTURES / "wrong" / "q1_n_in_only.py"
    result = _session(helpers.apply_fixture(nb, wrong), tmp_path)
    assert result["otter_on_colab_path"]
    assert result["grades"]["q1"] < 1.0, result["grades"]
    assert all(g == 1.0 for q, g in result["grades"].items() if q != "q1"), result["grades"]
