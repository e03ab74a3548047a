"""Grade a solved student notebook with a misconception fixture applied, fast and in-process.

A fixture file ``fixtures/misconceptions/<set>/<name>.py`` starts with header lines::

    # expect: q3 score 1 of 4
    # message: a uniform U(-a, a) has variance a**2/3
    # secret: 0.4          (optional, repeatable: text no failed-test message may contain)

followed by the usual ``# fixture: replace qN`` / ``# fixture: after qN`` sections
(``_notebooks.apply_fixture``). ``# message: (hidden only)`` says that only hidden tests catch it.

:func:`run_set` runs the notebook in the grader's in-process session (the sandbox's driver in a
thread, the same messages and codec; ``grader.check`` cells and otter's init cell skipped) and
scores it with the grader's one scoring function, :func:`initlab.grading.score`, on the tests of
the set's autograder bundle: the score and messages a learner gets. A question's
tests are re-run for a fixture only when one of their parameters differs from the solved
notebook's (compared by value, and functions by their code, defaults and the code of the
functions they call), so a fixture costs about the time of its own question's tests.
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from _notebooks import FIXTURES, apply_fixture, solved

from initlab.grading import (
    Grade,
    InProcessSession,
    autograder_zip,
    load_tests,
    masters,
    score,
    student_notebook,
)

MISCONCEPTIONS = FIXTURES / "misconceptions"
_EXPECT = re.compile(r"#\s*expect:\s*(q\d+)\s+score\s+([\d.]+)\s+of\s+([\d.]+)\s*$")


@dataclass
class Fixture:
    path: Path
    question: str
    score: float
    possible: float
    messages: list[str]
    secrets: list[str]
    sections: str

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.stem}"


@dataclass
class QuestionResult:
    score: float
    possible: float
    failed_public: list[str] = field(default_factory=list)
    failed_hidden: list[str] = field(default_factory=list)


def parse_fixture(path: Path) -> Fixture:
    """Read a fixture's header (expect / message / secret lines) and its sections."""
    text = path.read_text(encoding="utf-8")
    head, sep, rest = text.partition("# fixture: ")
    assert sep, f"{path}: no '# fixture: replace|after qN' section"
    expect = [m for line in head.splitlines() if (m := _EXPECT.match(line.strip()))]
    assert len(expect) == 1, f"{path}: needs exactly one '# expect: qN score S of P' line"
    q, s, p = expect[0].groups()
    messages = [
        line.split("message:", 1)[1].strip()
        for line in head.splitlines()
        if line.startswith("# message:")
    ]
    assert messages, f"{path}: needs a '# message: <substring>' line (or '(hidden only)')"
    secrets = [
        line.split("secret:", 1)[1].strip()
        for line in head.splitlines()
        if line.startswith("# secret:")
    ]
    return Fixture(path, q, float(s), float(p), messages, secrets, sep + rest)


def fixture_sets() -> dict[str, list[Path]]:
    """Fixture files per exercise set (only sets that have a master)."""
    out: dict[str, list[Path]] = {}
    for chapter in masters():
        folder = MISCONCEPTIONS / chapter
        out[chapter] = sorted(folder.glob("*.py")) if folder.is_dir() else []
    return out


def test_sources(chapter: str, root: Path) -> dict[str, str]:
    """The set's otter test files (``tests/qN.py``) from its autograder bundle under ``root``."""
    with zipfile.ZipFile(autograder_zip(chapter, root)) as zf:
        return {
            Path(n).stem: zf.read(n).decode()
            for n in zf.namelist()
            if n.startswith("tests/") and n.endswith(".py")
        }


def execute(nb: nbformat.NotebookNode) -> tuple[InProcessSession, list[str]]:
    """Run the notebook's code cells in the grader's in-process session (the sandbox's driver
    in a thread, over the same wire); return the session and the cells' errors."""
    session = InProcessSession([c.source for c in nb.cells if c.cell_type == "code"])
    session.start()
    return session, [e for _, e in sorted(session.cell_errors.items())]


def _fingerprint(value: Any, ns: dict[str, Any], depth: int = 0) -> Any:
    code = getattr(value, "__code__", None)
    if code is not None:
        called = tuple(
            (n, _fingerprint(ns[n], ns, depth + 1))
            for n in code.co_names
            if depth < 2 and callable(ns.get(n)) and hasattr(ns.get(n), "__code__")
        )
        return ("fn", code.co_code, repr(code.co_consts), repr(value.__defaults__), called)
    try:
        return ("value", repr(value))
    except Exception:  # noqa: BLE001
        return ("object", id(value))


def run_tests(chapter: str, root: Path, session: InProcessSession,
              only: set[str] | None = None) -> dict[str, QuestionResult]:  # fmt: skip
    """Score the session's answers with the set's tests (all, or the questions in ``only``)
    through the grader's one scoring function, :func:`initlab.grading.score`."""
    files = [tf for tf in set_tests(chapter, root) if only is None or tf.name in only]
    g = score(files, session, Grade("fixture", graded=False))
    out = {}
    for tf in files:
        fb = g.feedback.get(tf.name, {"failed_public": [], "failed_hidden": 0})
        res = QuestionResult(g.scores[tf.name], g.possible_by_question[tf.name])
        res.failed_public = [f["message"] for f in fb["failed_public"]]
        res.failed_hidden = ["a hidden test"] * fb["failed_hidden"]
        out[tf.name] = res
    return out


_LOADED: dict[tuple[str, Path], list[Any]] = {}


def set_tests(chapter: str, root: Path) -> list[Any]:
    """The set's test files, as the grader loads them from the bundle built under ``root``."""
    key = (chapter, root)
    if key not in _LOADED:
        _LOADED[key] = load_tests(autograder_zip(chapter, root).read_bytes())
    return _LOADED[key]


def params(source: str) -> set[str]:
    """The parameter names of every test function in an otter test file."""
    names = set()
    for m in re.finditer(r"def test_\w+\(([^)]*)\)", source):
        names |= {p.strip() for p in m.group(1).split(",") if p.strip()}
    return names


@dataclass
class SetRun:
    baseline: dict[str, QuestionResult]
    baseline_errors: list[str]
    fixtures: dict[str, tuple[Fixture, dict[str, QuestionResult], list[str]]]


def run_set(chapter: str, root: Path) -> SetRun:
    """Grade the solved notebook and every misconception fixture of ``chapter`` with the
    tests of the bundle built under ``root``."""
    master = masters()[chapter]
    student = student_notebook(chapter)
    with tempfile.TemporaryDirectory(prefix="initlab-misc-") as tmp:
        sources = test_sources(chapter, root)
        base, base_errors = execute(solved(student, master))
        try:
            baseline = run_tests(chapter, root, base)
            base_ns = base.namespace
            base_prints = {
                n: _fingerprint(base_ns.get(n), base_ns)
                for s in sources.values()
                for n in params(s)
            }
        finally:
            base.kill()
        results = {}
        for path in fixture_sets()[chapter]:
            fx = parse_fixture(path)
            sections = Path(tmp) / "sections.py"
            sections.write_text(fx.sections, encoding="utf-8")
            session, errors = execute(apply_fixture(solved(student, master), sections))
            try:
                ns = session.namespace
                changed = {
                    q
                    for q, src in sources.items()
                    if any(_fingerprint(ns.get(n), ns) != base_prints[n] for n in params(src))
                }
                got = run_tests(chapter, root, session, only=changed)
            finally:
                session.kill()
            results[fx.name] = (fx, {**baseline, **got}, errors)
    return SetRun(baseline, base_errors, results)
