"""Guarantees of the exercise machinery (issue 5): build, leaks, grading, hostile submissions.

Grading a notebook costs seconds, so every submission is graded once per session, in one
``python -m initlab.grading grade --jobs 2`` call (session-scoped fixture).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import psutil
import pytest
from _notebooks import FIXTURES, apply_fixture, master_solutions, solved

from initlab.grading import LeakError, check_no_leaks, grade, masters, student_notebook
from initlab.grading._build import build_chapter, solution_lines

ROOT = Path(__file__).resolve().parents[2]
CHAPTER = "03_xavier"
MASTER = ROOT / "exercises" / f"{CHAPTER}.ipynb"
STUDENT = ROOT / "chapters" / CHAPTER / "exercises.ipynb"
POINTS = {"q1": 2, "q2": 3, "q3": 4, "q4": 3, "q5": 2, "q6": 2}
WRONG = {  # fixture -> the question it must lose points on
    "q1_n_in_only": "q1",
    "q1_ignores_gain": "q1",
    "q2_no_sqrt3": "q2",
    "q3_normal_same_variance": "q3",
    "q3_no_receptive_field": "q3",
    "q4_tanh_gain": "q4",
    "q5_forward_ratio": "q5",
}
HOSTILE = [
    "raises",
    "infinite_loop",
    "exits",
    "segfault",
    "fake_success",
    "monkeypatch",
    "patch_checks",
]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A fresh build in a scratch root (the repository's files are not touched)."""
    root = tmp_path_factory.mktemp("root")
    (root / "exercises").mkdir()
    shutil.copy(MASTER, root / "exercises" / MASTER.name)
    text, zip_path = build_chapter(CHAPTER, root / "exercises" / MASTER.name, root / "out")
    bundle = root / "exercises" / "_autograder" / CHAPTER / "autograder.zip"
    bundle.parent.mkdir(parents=True)
    shutil.copy(zip_path, bundle)
    return root, text


@pytest.fixture(scope="session")
def hidden_test_sources(built: tuple[Path, str]) -> dict[str, str]:
    root, _ = built
    with zipfile.ZipFile(root / "exercises" / "_autograder" / CHAPTER / "autograder.zip") as zf:
        return {n: zf.read(n).decode() for n in zf.namelist() if n.startswith("tests/")}


def _test_functions(sources: dict[str, str], hidden: bool) -> list[str]:
    """Source text of each hidden (or public) test function in the autograder's test files."""
    out = []
    for src in sources.values():
        for block in src.split("@test_case(")[1:]:
            if ("hidden=True" in block.split("\n", 1)[0]) == hidden:
                out.append(block.split("\n", 1)[1])
    return out


def _hidden_only(sources: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(name, distinctive lines) of each hidden test: lines > 25 chars not in a public test."""
    public = "\n".join(_test_functions(sources, False))
    out = []
    for body in _test_functions(sources, True):
        name = re.search(r"def (\w+)", body).group(1)
        lines = [s.strip() for s in body.splitlines() if len(s.strip()) > 25]
        out.append((name, [s for s in lines if s not in public]))
    return out


def _submission(dest: Path, name: str, fixture: Path | None = None, answered: bool = True) -> Path:
    nb = solved(STUDENT, MASTER) if answered else nbformat.read(STUDENT, as_version=4)
    if fixture is not None:
        nb = apply_fixture(nb, fixture)
    path = dest / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="session")
def graded(built: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory):
    """Grade every submission once, through the command line; return (exit code, results)."""
    root, _ = built
    subs = tmp_path_factory.mktemp("submissions")
    paths = [_submission(subs, "solved"), _submission(subs, "unmodified", answered=False)]
    paths += [_submission(subs, f"wrong-{n}", FIXTURES / "wrong" / f"{n}.py") for n in WRONG]
    paths += [_submission(subs, f"hostile-{n}", FIXTURES / "hostile" / f"{n}.py") for n in HOSTILE]
    (subs / "not-a-notebook.ipynb").write_text("{ this is not json")
    paths.append(subs / "not-a-notebook.ipynb")
    out, fb = subs / "grades.csv", subs / "feedback"
    cmd = [
        sys.executable,
        "-m",
        "initlab.grading",
        "grade",
        CHAPTER,
        *map(str, paths),
        "--out",
        str(out),
        "--jobs",
        "2",
        "--timeout",
        "240",
        "--cell-timeout",
        "40",
        "--feedback-dir",
        str(fb),
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "INITLAB_ROOT": str(root)},
    )
    with open(out, newline="") as f:
        rows = {Path(r["file"]).stem: r for r in csv.DictReader(f)}
    feedback = {}
    for p in sorted(fb.glob("*.json")):
        data = json.loads(p.read_text())
        feedback[Path(data["file"]).stem] = data
    return proc, rows, feedback, fb


def _scores(row: dict[str, str]) -> dict[str, float]:
    return {q: float(row[q]) for q in POINTS}


# --- build ------------------------------------------------------------------------------------


def test_rebuild_is_byte_identical_to_committed(built: tuple[Path, str]) -> None:
    assert STUDENT.read_text(encoding="utf-8") == built[1], "run: python -m initlab.grading build"


def test_student_notebook_has_stubs_checks_and_stable_ids() -> None:
    nb = nbformat.read(STUDENT, as_version=4)
    text = STUDENT.read_text(encoding="utf-8")
    assert '"execution_count": null' in text and '"outputs": []' in text
    assert 'otter.Notebook("exercises.ipynb")' in nb.cells[0].source
    checks = re.findall(r'grader\.check\("(q\d)"\)', "\n".join(c.source for c in nb.cells))
    assert checks == sorted(POINTS) and len(POINTS) >= 5
    assert all(re.fullmatch(r"c\d\d-[0-9a-f]{8}", c.id) for c in nb.cells)
    assert nb.metadata["mystnb"] == {"execution_mode": "off"}


def test_no_solution_or_hidden_test_in_student_notebooks(
    built: tuple[Path, str], hidden_test_sources: dict[str, str]
) -> None:
    master = nbformat.read(MASTER, as_version=4)
    sol = solution_lines(master)
    assert len(sol) >= 5
    hidden = _hidden_only(hidden_test_sources)
    assert len(hidden) >= 5 and all(lines for _, lines in hidden)
    for student in (ROOT / "chapters").glob("*/exercises*.ipynb"):
        text = student.read_text()
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text, student
    # This master's solution lines and hidden tests, against its own student notebook (other
    # chapters may legitimately share a generic line such as "with torch.no_grad():").
    for text in (built[1], student_notebook(CHAPTER).read_text()):
        assert not [line for line in sol if line in text]
        for name, lines in hidden:
            assert name not in text
            assert not [s for s in lines if json.dumps(s)[1:-1] in text], name


@pytest.mark.parametrize("chapter", sorted(masters()))
def test_every_committed_student_notebook_passes_the_leak_check(chapter: str) -> None:
    """Every exercise set: no marker, no solution line, no hidden test in the committed
    student notebook (the check ``build`` runs before writing)."""
    student = nbformat.read(student_notebook(chapter), as_version=4)
    check_no_leaks(student, nbformat.read(masters()[chapter], as_version=4))


def test_leak_check_catches_a_solution_line() -> None:
    master = nbformat.read(MASTER, as_version=4)
    leaky = nbformat.read(STUDENT, as_version=4)
    leaky.cells[-1].source += "\n" + master_solutions(MASTER)[0]
    with pytest.raises(LeakError):
        check_no_leaks(leaky, master)


# --- grading ----------------------------------------------------------------------------------


def test_every_submission_has_a_row_and_exit_code_reports_the_ungraded(graded) -> None:
    proc, rows, feedback, _ = graded
    assert len(rows) == 2 + len(WRONG) + len(HOSTILE) + 1, proc.stderr[-2000:]
    assert list(next(iter(rows.values())))[:6] == ["file", "q1", "q2", "q3", "q4", "q5"]
    assert set(feedback) == set(rows)
    assert proc.returncode == 1  # the segfault and the non-notebook could not be graded
    assert "not graded" in proc.stdout


def test_solutions_score_full_marks(graded) -> None:
    row = graded[1]["solved"]
    assert _scores(row) == POINTS and float(row["total"]) == float(row["possible"]) == 16
    assert row["error"] == ""


def test_unmodified_student_notebook_scores_zero(graded) -> None:
    row = graded[1]["unmodified"]
    assert float(row["total"]) == 0 and float(row["possible"]) == 16


@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_answer_loses_points_on_its_question_only(graded, name: str) -> None:
    scores = _scores(graded[1][f"wrong-{name}"])
    question = WRONG[name]
    assert scores[question] < POINTS[question]
    assert {q: s for q, s in scores.items() if q != question} == {
        q: p for q, p in POINTS.items() if q != question
    }


@pytest.mark.parametrize(
    ("name", "lost", "error"),
    [
        ("raises", {}, ["RuntimeError: hostile"]),
        ("infinite_loop", {}, ["KeyboardInterrupt"]),
        ("exits", {}, ["SystemExit: 0", "SystemExit: os._exit and os.abort are disabled"]),
        ("fake_success", {"q5": 2}, ["`grader` was redefined"]),
        ("monkeypatch", {"q1": 2}, ["numpy.allclose was replaced", "math.isclose was replaced"]),
    ],
)
def test_hostile_submission_gets_its_true_score_and_an_error(graded, name, lost, error) -> None:
    row = graded[1][f"hostile-{name}"]
    want = {q: p - lost.get(q, 0) for q, p in POINTS.items()}
    assert _scores(row) == want, row
    assert graded[2][f"hostile-{name}"]["graded"]
    for part in error:
        assert part in row["error"], row["error"]


def test_tampering_with_the_grading_helpers_is_reported(graded) -> None:
    row = graded[1]["hostile-patch_checks"]
    assert "tampering" in row["error"]
    assert "initlab.grading.checks.close was replaced" in row["error"]


def test_dead_kernel_and_garbage_get_zero_and_an_error(graded) -> None:
    for name, error in [("hostile-segfault", "kernel died"), ("not-a-notebook", "not a readable")]:
        row = graded[1][name]
        assert float(row["total"]) == 0 and float(row["possible"]) == 16
        assert error in row["error"] and not graded[2][name]["graded"]


def test_feedback_lists_public_failures_but_no_hidden_test_code(
    graded, hidden_test_sources: dict[str, str]
) -> None:
    fb = graded[2]["wrong-q1_n_in_only"]["questions"]["q1"]
    assert fb["score"] == 0 and fb["failed_public_tests"]
    assert "n_in + n_out" in fb["failed_public_tests"][0]["message"]
    fb = graded[2]["wrong-q1_ignores_gain"]["questions"]["q1"]  # a public test varies the gain
    assert fb["score"] == 0 and fb["failed_hidden_tests"] == 1
    assert "the gain multiplies the standard deviation" in fb["failed_public_tests"][0]["message"]
    texts = [p.read_text() for p in graded[3].glob("*.json")]
    for name, lines in _hidden_only(hidden_test_sources):
        for text in texts:
            assert name not in text
            assert not [s for s in lines if json.dumps(s)[1:-1] in text]


def test_wall_clock_limit_kills_the_submission_and_its_kernel(built, tmp_path: Path) -> None:
    root, _ = built
    sub = _submission(tmp_path, "unkillable", FIXTURES / "hostile" / "unkillable_loop.py")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    (g,) = grade(CHAPTER, [sub], out=tmp_path / "g.csv", timeout=12, cell_timeout=2, root=root)
    assert not g.graded and g.total == 0 and g.possible == 16
    assert "timed out after 12 s" in g.errors[0]
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not left
