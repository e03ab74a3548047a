"""``python -m initlab.grading grade``: a gradebook from a folder of submissions.

Three kinds of process, and only one of them runs submission code:

* the **parent** (this module's :func:`grade`): checks the autograder bundle against the hash
  ``build`` recorded, checks that bubblewrap works, hands submissions to ``jobs`` workers and,
  after every worker has ended, writes the CSV and the feedback files atomically;
* a **worker** (trusted, :func:`grade_one`): reads the tests from the bundle's bytes, starts a
  :class:`~initlab.grading._session.Session` for the submission, and runs every test case,
  public and hidden, in its own interpreter, with each answer name bound to the learner's value
  (as data) or to a proxy that calls the learner's function in the sandbox;
* the **sandbox** (:mod:`initlab.grading._sandbox` under bubblewrap): runs the learner's cells
  and answers the worker's requests. It never sees a test, the bundle or another submission.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import json
import multiprocessing
import os
import re
import tempfile
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _protocol as P
from ._bwrap import NO_SANDBOX_HELP, sandbox_self_test
from ._paths import STUDENT_NOTEBOOK, autograder_zip, masters, repo_root

MESSAGE_LIMIT = 300


@dataclass
class Grade:
    """The grade of one submission: per-question scores, totals, status and what went wrong."""

    file: str
    graded: bool
    scores: dict[str, float] = field(default_factory=dict)
    possible_by_question: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    feedback: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    status: str = "not graded"
    cpu_seconds: float = 0.0  # the worker's and the sandbox's CPU time (not in the CSV)

    @property
    def total(self) -> float:
        return sum(self.scores.values())

    @property
    def possible(self) -> float:
        return sum(self.possible_by_question.values())


# --- the tests ----------------------------------------------------------------------------------


def _load_tests(bundle: bytes) -> list[Any]:
    """The bundle's test files (otter ``ExceptionTestFile``), sorted by question name."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # otter's dependencies warn on import
        from otter.test_files import ExceptionTestFile

    files = []
    with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
        for name in sorted(zf.namelist()):
            if name.startswith("tests/") and name.endswith(".py"):
                files.append(ExceptionTestFile.from_string(zf.read(name).decode(), path=name))
    return sorted(files, key=lambda tf: tf.name)


def _question_possible(ag_zip: Path) -> dict[str, float]:
    """Points per question, read from the autograder bundle's test files."""
    return {
        tf.name: float(sum(tc.points or 0 for tc in tf.test_cases))
        for tf in _load_tests(ag_zip.read_bytes())
    }


def _params(tc: Any) -> list[str]:
    return list(inspect.signature(tc.body.test_func).parameters)


class _Data:
    """A learner's value as it came from the sandbox (decoded afresh for every test)."""

    def __init__(self, tree: Any, blobs: list[bytes]) -> None:
        self.tree, self.blobs = tree, blobs


class Proxy:
    """Stands for a learner's function in the tests: each call runs in the sandbox."""

    def __init__(self, session: Any, name: str) -> None:
        self._session, self._name = session, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._session.call(self._name, args, kwargs)

    def __repr__(self) -> str:
        return f"<the learner's function {self._name}>"


def _notebook_name(cells: list[str]) -> str:
    """The file name the init cell opens (``exercises.ipynb``, ``exercises_a.ipynb``, ...)."""
    for source in cells:
        found = re.search(r"otter\.Notebook\(\s*[\"']([\w.-]+\.ipynb)[\"']", source)
        if found:
            return found.group(1)
    return STUDENT_NOTEBOOK


def _message(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return P.short(text, MESSAGE_LIMIT)


_TESTS: dict[str, list[Any]] = {}


def grade_one(
    bundle: bytes,
    submission: str,
    sandboxed: bool,
    timeout: float,
    cell_timeout: float,
    call_timeout: float,
) -> Grade:
    """Grade one submission (in a worker process); never raises for a bad submission."""
    import nbformat

    from ._session import Session, SubmissionTimeout

    start, cpu = time.monotonic(), time.process_time()
    g = Grade(submission, graded=False)
    try:
        raw = Path(submission).read_bytes()
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
        cells = [c.source for c in nb.cells if c.cell_type == "code"]
    except Exception as exc:  # not a notebook at all
        g.errors.append(f"not a readable notebook: {_message(exc)}")
        g.seconds = round(time.monotonic() - start, 2)
        return g
    session = Session(
        cells,
        raw,
        _notebook_name(cells),
        sandboxed=sandboxed,
        cell_timeout=cell_timeout,
        call_timeout=call_timeout,
        deadline=start + timeout,
    )
    try:
        session.launch()  # the sandbox imports torch while this process reads the tests
        key = hashlib.sha256(bundle).hexdigest()
        if key not in _TESTS:
            _TESTS[key] = _load_tests(bundle)
        files = _TESTS[key]
        for tf in files:
            g.possible_by_question[tf.name] = float(sum(tc.points or 0 for tc in tf.test_cases))
            g.scores[tf.name] = 0.0
        session.start()
        env: dict[str, Any] = {}
        names = sorted({p for tf in files for tc in tf.test_cases for p in _params(tc)} - {"env"})
        found = 0
        for name in names:
            kind, data = session.value(name)
            if kind == "callable":
                env[name] = Proxy(session, name)
            elif kind == "value":
                env[name] = _Data(*data)
            found += kind != "missing"
        if not found:
            g.status = "wrong notebook"
            g.errors.append(f"none of the answers {', '.join(names)} is defined")
        else:
            _run_tests(files, env, g)
            g.graded, g.status = True, "ok"
    except SubmissionTimeout:
        g.errors.append(f"timed out after {timeout:g} s; not graded")
        g.scores = {q: 0.0 for q in g.scores}
        g.feedback = {}
    except Exception as exc:
        g.errors.append(f"grading failed: {_message(exc)}")
        g.scores = {q: 0.0 for q in g.scores}
        g.feedback = {}
    finally:
        session.kill()
    g.errors[:0] = [f"cell {i}: {e}" for i, e in sorted(session.cell_errors.items())]
    g.seconds = round(time.monotonic() - start, 2)
    g.cpu_seconds = round(time.process_time() - cpu + session.cpu_seconds, 2)
    return g


def _run_tests(files: list[Any], env: dict[str, Any], g: Grade) -> None:
    """Every public test of every question, then every hidden one (so nothing the sandbox saw
    of a hidden test's inputs can reach a public test's message)."""
    for hidden in (False, True):
        for tf in files:
            fb = g.feedback.setdefault(tf.name, {"failed_public": [], "failed_hidden": 0})
            for tc in tf.test_cases:
                if bool(tc.hidden) != hidden:
                    continue
                try:
                    kwargs = {}
                    for p in _params(tc):
                        v = env.get(p)
                        if isinstance(v, _Data):  # a fresh copy for every test
                            v = P.decode(v.tree, v.blobs, [])
                        kwargs[p] = env if p == "env" else v
                    tc.body.test_func(**kwargs)
                    g.scores[tf.name] += float(tc.points or 0)
                except Exception as exc:
                    if hidden:
                        fb["failed_hidden"] += 1
                    else:
                        msg = _message(exc)
                        fb["failed_public"].append({"test": tc.name, "message": msg})
                    del exc
    g.errors.extend(msg for _, msg in sorted(_hung(env).items()))


def _hung(env: dict[str, Any]) -> dict[str, str]:
    for v in env.values():
        if isinstance(v, Proxy):
            return dict(v._session.hung)
    return {}


# --- output -------------------------------------------------------------------------------------


def feedback_json(grade: Grade) -> dict[str, Any]:
    """The learner-facing feedback: scores, failed *public* tests' messages, hidden counts."""
    return {
        "file": grade.file,
        "graded": grade.graded,
        "status": grade.status,
        "total": grade.total,
        "possible": grade.possible,
        "errors": grade.errors,
        "questions": {
            q: {
                "score": grade.scores.get(q, 0.0),
                "possible": grade.possible_by_question[q],
                "failed_public_tests": grade.feedback.get(q, {}).get("failed_public", []),
                "failed_hidden_tests": grade.feedback.get(q, {}).get("failed_hidden", 0),
            }
            for q in sorted(grade.possible_by_question)
        },
    }


def csv_cell(value: Any) -> str:
    """``value`` as a CSV cell that no spreadsheet runs as a formula (a leading ``'``)."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def csv_text(grades: list[Grade], questions: list[str]) -> str:
    """The gradebook as CSV text: one row per grade, every cell passed through :func:`csv_cell`."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file", *questions, "total", "possible", "seconds", "status", "error"])
    for g in grades:
        row = [g.file, *(f"{g.scores.get(q, 0.0):g}" for q in questions)]
        row += [f"{g.total:g}", f"{g.possible:g}", f"{g.seconds:.2f}", g.status]
        row.append(" | ".join(g.errors))
        w.writerow([csv_cell(c) for c in row])
    return buf.getvalue()


# --- the command ----------------------------------------------------------------------------------


def verified_bundle(chapter: str, root: Path) -> bytes:
    """The chapter's bundle bytes, after checking them against the hash ``build`` recorded.

    A missing bundle is built; one that does not match its recorded hash is rebuilt (and a
    rebuilt bundle that still does not match is refused).
    """
    from ._build import build, bundle_digest_ok

    ag_zip = autograder_zip(chapter, root)
    if not ag_zip.is_file():
        build([chapter], root=root)
    data = ag_zip.read_bytes()
    if not bundle_digest_ok(chapter, root, data):
        print(
            f"{chapter}: the autograder bundle does not match the hash recorded by build; rebuilding"
        )
        build([chapter], root=root, force=True)
        data = ag_zip.read_bytes()
        if not bundle_digest_ok(chapter, root, data):
            raise RuntimeError(f"the rebuilt bundle {ag_zip} does not match its recorded hash")
    return data


def grade(
    chapter: str,
    submissions: list[Path],
    out: Path | None = None,
    jobs: int = 1,
    timeout: float = 300.0,
    cell_timeout: float | None = None,
    feedback_dir: Path | None = None,
    root: Path | None = None,
    call_timeout: float = 10.0,
    sandbox: bool = True,
) -> list[Grade]:
    """Grade ``submissions`` for ``chapter``; write the CSV (and feedback files); return grades.

    Raises :class:`~initlab.grading._bwrap.SandboxUnavailable` if ``sandbox`` and no
    bubblewrap sandbox can be made here.
    """
    from ._bwrap import SandboxUnavailable

    root = root or repo_root()
    if chapter not in masters(root):
        raise ValueError(f"chapter must be one of {list(masters(root))}, got {chapter!r}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs!r}")
    for name, v in (("timeout", timeout), ("call_timeout", call_timeout)):
        if v <= 0:
            raise ValueError(f"{name} must be > 0 seconds, got {v!r}")
    cell_timeout = cell_timeout or max(5.0, timeout / 4)
    if sandbox:
        why = sandbox_self_test()
        if why is not None:
            raise SandboxUnavailable(NO_SANDBOX_HELP.format(why=why))
    bundle = verified_bundle(chapter, root)
    questions = [tf.name for tf in _load_tests(bundle)]
    args = (sandbox, timeout, cell_timeout, call_timeout)
    ctx = multiprocessing.get_context("spawn")
    grades: list[Grade] = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = [pool.submit(grade_one, bundle, str(s), *args) for s in submissions]
        for s, fut in zip(submissions, futures, strict=True):
            try:
                grades.append(fut.result())
            except (BrokenProcessPool, Exception) as exc:  # a worker died: no grade
                g = Grade(str(s), graded=False, errors=[f"grader worker failed: {_message(exc)}"])
                grades.append(g)
    possible = _question_possible_from(bundle)
    for g in grades:
        for q, p in possible.items():
            g.possible_by_question.setdefault(q, p)
            g.scores.setdefault(q, 0.0)
        if not sandbox:
            g.status = "unsandboxed" if g.status == "ok" else f"{g.status}; unsandboxed"
    # Every worker has ended: only now are the gradebook and the feedback written.
    if out is not None:
        _atomic_write(Path(out), csv_text(grades, questions))
    if feedback_dir is not None:
        for i, g in enumerate(grades):
            name = f"{i:03d}-{Path(g.file).stem}.json"
            _atomic_write(Path(feedback_dir) / name, json.dumps(feedback_json(g), indent=1) + "\n")
    return grades


def _question_possible_from(bundle: bytes) -> dict[str, float]:
    return {
        tf.name: float(sum(tc.points or 0 for tc in tf.test_cases)) for tf in _load_tests(bundle)
    }
