"""Guarantees of the exercise machinery (issues 5 and 14): build, leaks, grading, a hostile class.

Grading costs seconds per submission, so every submission of a scenario is graded once per
session, in one ``python -m initlab.grading grade --jobs 2`` call (session-scoped fixtures).
Tests that need bubblewrap skip with a message where it is missing, unless
``--require-sandbox`` (``make test`` passes it when CI=true) makes that a failure.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nbformat
import psutil
import pytest
from _notebooks import FIXTURES, apply_fixture, master_solutions, solved

from initlab.grading import (
    Grade,
    LeakError,
    check_no_leaks,
    csv_cell,
    csv_text,
    masters,
    solution_lines,
    student_notebook,
)

ROOT = Path(__file__).resolve().parents[2]
CHAPTER = "03_xavier"
MASTER = ROOT / "exercises" / f"{CHAPTER}.ipynb"
STUDENT = ROOT / "chapters" / CHAPTER / "exercises.ipynb"
POINTS = {"q1": 2, "q2": 3, "q3": 4, "q4": 3, "q5": 2, "q6": 2}
TOTAL = sum(POINTS.values())
WRONG = {  # fixture -> the question it must lose points on
    "q1_n_in_only": "q1",
    "q1_ignores_gain": "q1",
    "q2_no_sqrt3": "q2",
    "q2_string_factor": "q2",
    "q3_normal_same_variance": "q3",
    "q3_no_receptive_field": "q3",
    "q4_tanh_gain": "q4",
    "q5_forward_ratio": "q5",
}
HOSTILE = {  # fixture (applied to the solution) -> points it must lose, error text expected
    "raises": ({}, "RuntimeError: hostile"),
    "infinite_loop": ({}, "CellTimeout"),
    "exits": ({}, "ended the process"),
    "segfault": ({}, "ended the process"),
    "unkillable_loop": ({}, "was skipped"),
    "memory_hog": ({}, "MemoryError"),
    "fake_success": ({"q5": 2}, ""),
    "monkeypatch": ({"q1": 2}, ""),
    "patch_checks": ({"q5": 2}, ""),
    "hang": ({"q4": 3}, "sigma_tanh did not return within"),
    "crash_in_call": ({"q5": 2}, "backward_variance_ratio ended the sandbox process"),
}
SLOW = ("unkillable_loop", "hang", "crash_in_call", "exits", "infinite_loop", "segfault")
TAMPER = sorted(p.stem for p in (FIXTURES / "tamper").glob("*.py"))
CONTAIN = ["survivor", "steal", "vandal"]
CALL_TIMEOUT = 4


def _bundle(root: Path, chapter: str = CHAPTER) -> Path:
    return root / "exercises" / "_autograder" / chapter / "autograder.zip"


@pytest.fixture(scope="session")
def hidden_test_sources(built: Path) -> dict[str, str]:
    with zipfile.ZipFile(_bundle(built)) as zf:
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


def _notebook(
    dest: Path,
    name: str,
    fixture: Path | None = None,
    answered: bool = True,
    chapter: str = CHAPTER,
    subs: dict[str, str] | None = None,
) -> Path:
    student, master = student_notebook(chapter), masters()[chapter]
    nb = solved(student, master) if answered else nbformat.read(student, as_version=4)
    if fixture is not None:
        text = fixture.read_text(encoding="utf-8")
        for key, value in (subs or {}).items():
            text = text.replace(key, value)
        tmp = dest / f".{name}.fixture.py"
        tmp.write_text(text, encoding="utf-8")
        nb = apply_fixture(nb, tmp)
        tmp.unlink()
    path = dest / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def _tree_hash(*tops: Path) -> dict[str, str]:
    """sha256 of every file under ``tops`` (a missing file shows as missing)."""
    out = {}
    for top in tops:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for p in files:
            if "__pycache__" in p.parts or ".pytest_cache" in p.parts:
                continue
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _run_grade(root: Path, paths: list[Path], out: Path, *extra: str, cwd: Path | None = None):
    cmd = [sys.executable, "-m", "initlab.grading", "grade", CHAPTER, *map(str, paths)]
    cmd += ["--out", str(out), "--jobs", "2", "--timeout", "200", "--cell-timeout", "4"]
    cmd += ["--call-timeout", str(CALL_TIMEOUT), *extra]
    env = {**os.environ, "INITLAB_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env, cwd=cwd)


def _read(out: Path, fb: Path) -> tuple[dict[str, dict[str, str]], dict[str, dict]]:
    with open(out, newline="") as f:
        rows = {Path(r["file"]).stem: r for r in csv.DictReader(f)}
    feedback = {}
    for p in sorted(fb.glob("*.json")):
        data = json.loads(p.read_text())
        feedback[Path(data["file"]).stem] = data
    return rows, feedback


@pytest.fixture(scope="session")
def graded(sandbox: None, built: Path, tmp_path_factory: pytest.TempPathFactory):
    """Grade the whole hostile class once, sandboxed; record hashes before and after."""
    root = built
    subs = tmp_path_factory.mktemp("submissions")
    cwd = tmp_path_factory.mktemp("cwd")
    (cwd / "instructor-notes.txt").write_text("do not touch")
    (subs / "victim.txt").write_text("another learner's file")
    out, fb = subs / "out" / "grades.csv", subs / "out" / "feedback"
    marks = {
        "@ROOT@": str(root),
        "@SUBS@": str(subs),
        "@BUNDLE@": str(_bundle(root)),
        "@OUT@": str(out),
        "@FEEDBACK@": str(fb),
        "@REPO@": str(ROOT),
    }
    paths = []
    # The hostile ones first, slowest first (they wait on limits and restarts): the two
    # workers then finish together instead of one waiting on a 14 s loop at the end.
    for n in sorted(HOSTILE, key=lambda n: n not in SLOW):
        where = "hostile" if (FIXTURES / "hostile" / f"{n}.py").exists() else "contain"
        paths.append(_notebook(subs, f"hostile-{n}", FIXTURES / where / f"{n}.py"))
    paths += [_notebook(subs, "solved"), _notebook(subs, "unmodified", answered=False)]
    paths += [_notebook(subs, f"wrong-{n}", FIXTURES / "wrong" / f"{n}.py") for n in WRONG]
    for n in TAMPER:
        paths.append(_notebook(subs, f"tamper-{n}", FIXTURES / "tamper" / f"{n}.py", False))
    for n in CONTAIN:
        paths.append(_notebook(subs, f"contain-{n}", FIXTURES / "contain" / f"{n}.py", subs=marks))
    # Graded after the poisoning attempt (vandal), in the same run: still zero.
    paths.append(_notebook(subs, "unmodified-after", answered=False))
    paths.append(_notebook(subs, "other-set", chapter="04b_beyond_xavier"))
    (subs / "not-a-notebook.ipynb").write_text("{ this is not json")
    paths.append(subs / "not-a-notebook.ipynb")
    watched = [root / "exercises", ROOT / "src", ROOT / "exercises", subs, cwd]
    ours = str(Path(sys.executable).parent)  # this checkout's environment, not another's
    before = _tree_hash(*watched)
    procs_before = {p.pid for p in psutil.process_iter()}
    start = time.monotonic()
    proc = _run_grade(root, paths, out, "--feedback-dir", str(fb), cwd=cwd)
    seconds = time.monotonic() - start
    written = _tree_hash(out, fb)
    time.sleep(2.5)  # the survivor fixture rewrites 1.5-2 s after it starts, well before this
    after = _tree_hash(*watched)
    for name in [str(out), *(str(p) for p in fb.glob("*.json"))]:
        before.pop(name, None)
        after.pop(name, None)
    left = [
        p
        for p in psutil.process_iter(["pid", "cmdline", "environ"])
        if p.pid not in procs_before
        and (
            str(subs) in " ".join(p.info["cmdline"] or [])
            or (
                ours in " ".join(p.info["cmdline"] or [])
                and "initlab.grading" in " ".join(p.info["cmdline"] or [])
            )
            or "initlab-survivor" in " ".join(p.info["cmdline"] or [])
            or "INITLAB_SURVIVOR" in (p.info["environ"] or {})
        )
    ]
    rows, feedback = _read(out, fb)
    return {
        "proc": proc,
        "rows": rows,
        "feedback": feedback,
        "fb": fb,
        "out": out,
        "before": before,
        "after": after,
        "written": written,
        "rewritten": _tree_hash(out, fb),
        "left": left,
        "seconds": seconds,
        "count": len(paths),
    }


def _scores(row: dict[str, str]) -> dict[str, float]:
    return {q: float(row[q]) for q in POINTS}


# --- build ------------------------------------------------------------------------------------


@pytest.mark.parametrize("chapter", sorted(masters()))
def test_rebuild_is_byte_identical_to_committed(built: Path, chapter: str) -> None:
    committed = student_notebook(chapter).read_text(encoding="utf-8")
    assert committed == student_notebook(chapter, built).read_text(encoding="utf-8"), (
        "run: python -m initlab.grading build"
    )


def test_a_build_without_graded_solutions_is_redone_by_one_with(built: Path) -> None:
    """``built`` skipped otter's test run: a plain build skips it as up to date, a build that
    grades the solutions (make exercises) does not."""
    from initlab.grading import up_to_date

    for chapter, master in masters(built).items():
        assert up_to_date(chapter, master, built)
        assert not up_to_date(chapter, master, built, tested=True)


def test_student_notebook_has_stubs_checks_and_stable_ids() -> None:
    nb = nbformat.read(STUDENT, as_version=4)
    text = STUDENT.read_text(encoding="utf-8")
    assert '"execution_count": null' in text and '"outputs": []' in text
    assert nb.cells[0].metadata.get("initlab_setup")  # the Colab setup cell, then otter's
    assert 'otter.Notebook("exercises.ipynb")' in nb.cells[1].source
    checks = re.findall(r'grader\.check\("(q\d)"\)', "\n".join(c.source for c in nb.cells))
    assert checks == sorted(POINTS) and len(POINTS) >= 5
    assert all(re.fullmatch(r"c\d\d-[0-9a-f]{8}", c.id) for c in nb.cells)
    assert nb.metadata["mystnb"] == {"execution_mode": "off"}


def test_no_solution_or_hidden_test_in_student_notebooks(
    built: Path, hidden_test_sources: dict[str, str]
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
    for text in (student_notebook(CHAPTER, built).read_text(), STUDENT.read_text()):
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


def test_a_modified_bundle_is_detected_and_rebuilt(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``grade`` compares the bundle with the hash ``build`` recorded and rebuilds on a
    mismatch (``build`` is stubbed here: it restores the bytes, as a real rebuild would)."""
    from initlab.grading import bundle_digest_ok, verified_bundle

    root = tmp_path / "root"
    shutil.copytree(built / "exercises", root / "exercises")
    bundle = _bundle(root)
    good = bundle.read_bytes()
    assert bundle_digest_ok(CHAPTER, root)
    with zipfile.ZipFile(bundle, "a") as zf:
        zf.writestr("tests/q9.py", "name = 'q9'\n")
    assert not bundle_digest_ok(CHAPTER, root)
    rebuilt = []

    def fake_build(chapters, root=None, force=False, check=False):
        rebuilt.append((chapters, force))
        bundle.write_bytes(good)
        return 0

    monkeypatch.setattr("initlab.grading._build.build", fake_build)  # what grade rebuilds with
    assert verified_bundle(CHAPTER, root) == good and rebuilt == [([CHAPTER], True)]


# --- the gradebook ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("alice.ipynb", "alice.ipynb"),
        ("1.5", "1.5"),
    ],
)
def test_csv_cells_cannot_be_formulas(value: str, cell: str) -> None:
    assert csv_cell(value) == cell


def test_csv_escapes_every_column() -> None:
    g = Grade("=cmd|' /C calc'!A0.ipynb", True, {"q1": 1.0}, {"q1": 2.0}, ["-1+1 @x"])
    g.status = "ok"
    rows = list(csv.reader(csv_text([g], ["q1"]).splitlines()))
    assert rows[0] == ["file", "q1", "total", "possible", "seconds", "status", "error"]
    assert rows[1][0].startswith("'=") and rows[1][-1].startswith("'-")


# --- grading a hostile class --------------------------------------------------------------------


def test_every_submission_has_a_row_and_exit_code_reports_the_ungraded(graded) -> None:
    proc, rows = graded["proc"], graded["rows"]
    assert len(rows) == graded["count"], proc.stderr[-3000:]
    assert list(next(iter(rows.values()))) == [
        "file",
        *POINTS,
        "total",
        "possible",
        "seconds",
        "status",
        "error",
    ]
    assert set(graded["feedback"]) == set(rows)
    assert proc.returncode == 1  # the non-notebook and the wrong set are not graded
    assert "not graded" in proc.stdout
    assert all(float(r["seconds"]) > 0 for r in rows.values() if r["status"] == "ok")


def test_solutions_score_full_marks(graded) -> None:
    row = graded["rows"]["solved"]
    assert _scores(row) == POINTS and float(row["total"]) == float(row["possible"]) == TOTAL
    assert row["error"] == "" and row["status"] == "ok"


def test_unmodified_student_notebook_scores_zero(graded) -> None:
    for name in ("unmodified", "unmodified-after"):
        row = graded["rows"][name]
        assert (
            float(row["total"]) == 0 and float(row["possible"]) == TOTAL and row["status"] == "ok"
        )


@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_answer_loses_points_on_its_question_only(graded, name: str) -> None:
    scores = _scores(graded["rows"][f"wrong-{name}"])
    question = WRONG[name]
    assert scores[question] < POINTS[question]
    assert {q: s for q, s in scores.items() if q != question} == {
        q: p for q, p in POINTS.items() if q != question
    }


def test_a_string_for_a_number_fails_with_a_type_message(graded) -> None:
    fb = graded["feedback"]["wrong-q2_string_factor"]["questions"]["q2"]
    assert fb["score"] == 2
    (failed,) = fb["failed_public_tests"]
    assert (
        "uniform_var_factor is str" in failed["message"]
        and "should be a number" in failed["message"]
    ), failed


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_submission_gets_its_true_score_and_an_error(graded, name: str) -> None:
    lost, error = HOSTILE[name]
    row = graded["rows"][f"hostile-{name}"]
    assert _scores(row) == {q: p - lost.get(q, 0) for q, p in POINTS.items()}, row
    assert graded["feedback"][f"hostile-{name}"]["graded"] and row["status"] == "ok"
    assert error in row["error"], row["error"]


@pytest.mark.parametrize("name", TAMPER)
def test_tampering_gives_a_blank_notebook_nothing(graded, name: str) -> None:
    row = graded["rows"][f"tamper-{name}"]
    assert float(row["total"]) == 0 and float(row["possible"]) == TOTAL, row


@pytest.mark.parametrize("name", CONTAIN)
def test_containment_attacks_keep_full_marks(graded, name: str) -> None:
    row = graded["rows"][f"contain-{name}"]
    assert _scores(row) == POINTS and row["status"] == "ok", row


def test_no_file_outside_the_sandbox_changed(graded) -> None:
    """The masters, the bundle, the repository's src/ and exercises/, every submission, the
    victim file and the grader's working directory are byte-identical after grading."""
    before, after = graded["before"], graded["after"]
    assert before.keys() == after.keys(), set(before) ^ set(after)
    assert [f for f in before if before[f] != after[f]] == []
    assert not any("planted" in f for f in after)


def test_no_process_survives_and_the_gradebook_stays_written(graded) -> None:
    assert graded["left"] == []
    assert graded["written"] == graded["rewritten"]
    assert "initlab-survivor" not in graded["out"].read_text()


def test_nothing_of_the_hidden_tests_or_bundle_reaches_any_output(
    graded, hidden_test_sources: dict[str, str]
) -> None:
    texts = [graded["out"].read_text()] + [p.read_text() for p in graded["fb"].glob("*.json")]
    for name, lines in _hidden_only(hidden_test_sources):
        for text in texts:
            assert name not in text
            assert not [s for s in lines if s in text or json.dumps(s)[1:-1] in text]
    stolen = graded["rows"]["contain-steal"]["error"]
    assert "RuntimeError: no " in stolen and len(stolen) < 400  # it read nothing, and is cut
    assert "root:" not in stolen and "Stable Training" not in stolen


def test_a_blank_notebook_after_a_poisoning_attempt_scores_zero(graded, built: Path) -> None:
    from initlab.grading import bundle_digest_ok

    assert bundle_digest_ok(CHAPTER, built)
    assert float(graded["rows"]["unmodified-after"]["total"]) == 0


def test_a_notebook_of_another_set_is_flagged(graded) -> None:
    row = graded["rows"]["other-set"]
    assert row["status"] == "wrong notebook" and float(row["total"]) == 0
    assert "none of the answers" in row["error"]


def test_garbage_is_not_graded(graded) -> None:
    row = graded["rows"]["not-a-notebook"]
    assert row["status"] == "not graded" and "not a readable notebook" in row["error"]


def test_feedback_lists_public_failures_but_no_hidden_test_code(graded) -> None:
    fb = graded["feedback"]["wrong-q1_n_in_only"]["questions"]["q1"]
    assert fb["score"] == 0 and fb["failed_public_tests"]
    assert "n_in + n_out" in fb["failed_public_tests"][0]["message"]
    # a public test varies the gain
    fb = graded["feedback"]["wrong-q1_ignores_gain"]["questions"]["q1"]
    assert fb["score"] == 0 and fb["failed_hidden_tests"] == 1
    assert "the gain multiplies the standard deviation" in fb["failed_public_tests"][0]["message"]


def test_speed(graded) -> None:
    """Seconds per submission (under load, two at a time), reported for the README."""
    per = graded["seconds"] / graded["count"]
    print(f"\n{graded['count']} submissions in {graded['seconds']:.1f} s: {per:.2f} s each")
    print(*[s for s in graded["proc"].stdout.splitlines() if s.startswith("graded ")])
    assert per < 30


# --- every set, the wall-clock limit, --no-sandbox ----------------------------------------------


def _no_sandbox_run(built: Path, tmp: Path) -> tuple:
    """A solved and a junk notebook graded with --no-sandbox: (process, rows)."""
    paths = [_notebook(tmp, "solved"), tmp / "junk.ipynb"]
    paths[1].write_text("junk")
    proc = _run_grade(built, paths, tmp / "g.csv", "--no-sandbox")
    return proc, _read(tmp / "g.csv", tmp)[0]


_BACKGROUND: dict = {}  # the --no-sandbox run, started beside the masters' grades


@pytest.fixture(scope="session")
def masters_graded(
    sandbox: None, built: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Grade]:
    """Every set's solved notebook, graded sandboxed, three grades at a time (each is mostly
    one core, partly waiting on its sandbox), with the --no-sandbox run beside them."""
    from concurrent.futures import ThreadPoolExecutor

    from initlab.grading import grade

    def one(chapter: str) -> Grade:
        tmp = tmp_path_factory.mktemp(f"master-{chapter}")
        sub = _notebook(tmp, f"solved-{chapter}", chapter=chapter)
        (g,) = grade(chapter, [sub], out=tmp / "g.csv", root=built, call_timeout=30)
        return g

    with ThreadPoolExecutor(max_workers=3) as pool:
        tmp = tmp_path_factory.mktemp("no-sandbox")
        _BACKGROUND["no-sandbox"] = pool.submit(_no_sandbox_run, built, tmp)
        return dict(zip(sorted(masters()), pool.map(one, sorted(masters())), strict=True))


@pytest.fixture(scope="session")
def no_sandbox_graded(built: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """The --no-sandbox run (no bubblewrap needed): the one started beside the masters'
    grades if it was, else run now."""
    if "no-sandbox" in _BACKGROUND:
        return _BACKGROUND["no-sandbox"].result()
    return _no_sandbox_run(built, tmp_path_factory.mktemp("no-sandbox"))


@pytest.mark.parametrize("chapter", sorted(masters()))
def test_every_master_solution_scores_full_marks_sandboxed(
    masters_graded: dict[str, Grade], chapter: str
) -> None:
    g = masters_graded[chapter]
    assert g.status == "ok" and g.errors == [], g.errors
    assert g.total == g.possible > 0, (g.scores, g.feedback)


def test_wall_clock_limit_stops_the_submission(sandbox: None, built: Path, tmp_path: Path) -> None:
    from initlab.grading import grade

    sub = _notebook(tmp_path, "unkillable", FIXTURES / "hostile" / "unkillable_loop.py")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    (g,) = grade(CHAPTER, [sub], out=tmp_path / "g.csv", timeout=5, cell_timeout=60, root=built)
    assert not g.graded and g.total == 0 and g.possible == TOTAL
    assert "timed out after 5 s" in g.errors[-1]
    time.sleep(1)
    assert {p.pid for p in psutil.Process().children(recursive=True)} - before == set()


def test_no_sandbox_marks_every_row(no_sandbox_graded: tuple) -> None:
    proc, rows = no_sandbox_graded
    assert rows["solved"]["status"] == "unsandboxed" and float(rows["solved"]["total"]) == TOTAL
    assert rows["junk"]["status"] == "not graded; unsandboxed", proc.stderr[-2000:]
