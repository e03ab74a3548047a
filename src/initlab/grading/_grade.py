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

import contextlib
import csv
import hashlib
import inspect
import io
import json
import math
import multiprocessing
import os
import re
import stat
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _wire as W
from ._bwrap import NO_SANDBOX_HELP, sandbox_self_test
from ._paths import STUDENT_NOTEBOOK, autograder_zip, masters, repo_root

MESSAGE_LIMIT = 300
MAX_NOTEBOOK_BYTES = 16 << 20
MAX_CELLS = 2000
MAX_JSON_CONTAINERS = 200_000  # a notebook of 2000 cells has about 20 000 (parsing 5M took 24 s)
MAX_ERRORS = 30  # errors kept per submission
ERROR_CELL = 4000  # characters of the CSV's error cell
WORKER_MARGIN_S = 30.0  # past --timeout, before the parent kills a grading worker
WORKER_MEMORY = 8 << 30  # address space of a grading worker (torch, otter, the tests)


@dataclass
class Grade:
    """The grade of one submission: per-question scores, totals, status and what went wrong."""

    file: str
    graded: bool
    scores: dict[str, float] = field(default_factory=dict)
    possible_by_question: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    feedback: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # until the hidden tests began (the CSV's column; see grade_one)
    wall_seconds: float = 0.0  # all of it (the command's summary)
    hidden_from: float | None = None  # time.monotonic() when the hidden tests began
    status: str = "not graded"
    cpu_seconds: float = 0.0  # the worker's and the sandbox's CPU time (not in the CSV)

    @property
    def total(self) -> float:
        return sum(self.scores.values())

    @property
    def possible(self) -> float:
        return sum(self.possible_by_question.values())


# --- the tests ----------------------------------------------------------------------------------


def load_tests(bundle: bytes) -> list[Any]:
    """The bundle's test files (otter ``ExceptionTestFile``), sorted by question name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # otter's dependencies warn on import
        from otter.test_files import ExceptionTestFile

    files = []
    with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
        for name in sorted(zf.namelist()):
            if name.startswith("tests/") and name.endswith(".py"):
                files.append(ExceptionTestFile.from_string(zf.read(name).decode(), path=name))
    return sorted(files, key=lambda tf: tf.name)


def _params(tc: Any) -> list[str]:
    return list(inspect.signature(tc.body.test_func).parameters)


class _Data:
    """A learner's value as it came from the sandbox (decoded afresh for every test)."""

    def __init__(self, node: Any, blobs: list[bytes]) -> None:
        self.node, self.blobs = node, blobs


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
        found = re.search(r"otter\.Notebook\(\s*[\"']([\w.-]{1,80}\.ipynb)[\"']", source)
        if found:
            return found.group(1)
    return STUDENT_NOTEBOOK


def _message(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return W.short(text, MESSAGE_LIMIT)


def read_submission(path: Path) -> bytes:
    """The bytes of a submitted file, which must be a file of its own: no component of the
    path as given is a symbolic link (each folder is opened with ``O_NOFOLLOW`` from the one
    before), a regular file (not a FIFO, a device or a folder) with no other name (a hard
    link could be another learner's or the master's file), at most
    :data:`MAX_NOTEBOOK_BYTES`. Raises ``ValueError`` saying which rule it breaks, having
    read nothing else."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    p = Path(path)
    base, parts = (p.parts[0], p.parts[1:]) if p.is_absolute() else (".", p.parts)
    fd = os.open(base, flags | os.O_DIRECTORY)
    try:
        for i, part in enumerate(parts):
            more = os.O_NONBLOCK if i == len(parts) - 1 else os.O_DIRECTORY
            try:
                new = os.open(part, flags | more, dir_fd=fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    if stat.S_ISLNK(os.lstat(part, dir_fd=fd).st_mode):
                        raise ValueError(
                            "a path through a symbolic link (submit the notebook itself)"
                        ) from None
                raise ValueError(f"cannot be opened ({os.strerror(exc.errno or 0)})") from None
            os.close(fd)
            fd = new
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_nlink != 1:
            raise ValueError("a hard link: the same file has another name (submit a copy)")
        if info.st_size > MAX_NOTEBOOK_BYTES:
            raise ValueError(f"larger than {MAX_NOTEBOOK_BYTES >> 20} MiB")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_NOTEBOOK_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"larger than {MAX_NOTEBOOK_BYTES >> 20} MiB")
    return data


def notebook_cells(raw: bytes) -> list[str]:
    """The code cells of a notebook's bytes; ``ValueError`` if it is not one."""
    import nbformat

    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_CONTAINERS:  # before any parsing
        raise ValueError(f"a notebook of more than {MAX_JSON_CONTAINERS} JSON objects and lists")
    try:
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
        cells = [c.source for c in nb.cells if c.cell_type == "code"]
    except Exception as exc:  # noqa: BLE001 - not a notebook, whatever the reason
        raise ValueError(_message(exc)) from None
    if not all(isinstance(c, str) for c in cells) or len(cells) > MAX_CELLS:
        raise ValueError(f"not a notebook of at most {MAX_CELLS} code cells")
    # JSON can spell lone surrogates (\\ud800), which no UTF-8 wire carries: escape them.
    return [c.encode("utf-8", "backslashreplace").decode("utf-8") for c in cells]


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
    from ._session import Session, SubmissionTimeout

    start, cpu = time.monotonic(), time.process_time()
    g = Grade(submission, graded=False)
    try:
        raw = read_submission(Path(os.fsdecode(submission)))
        cells = notebook_cells(raw)
    except ValueError as exc:
        _blank(g, _tests(bundle))
        g.errors.append(f"not a readable notebook: {W.short(exc)}")
        g.seconds = g.wall_seconds = round(time.monotonic() - start, 2)
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
        files = _tests(bundle)
        _blank(g, files)
        session.start()
        score(files, session, g)
    except SubmissionTimeout:
        g.errors.append(f"timed out after {timeout:g} s; not graded")
        g.scores = {q: 0.0 for q in g.scores}
        g.feedback, g.status, g.graded = {}, "not graded", False
    except Exception as exc:
        g.errors.append(f"grading failed: {_message(exc)}")
        g.scores = {q: 0.0 for q in g.scores}
        g.feedback, g.status, g.graded = {}, "not graded", False
    finally:
        session.kill()
    g.errors[:0] = [f"cell {i}: {e}" for i, e in sorted(session.cell_errors.items())]
    end = time.monotonic()
    # The CSV shows the time until the hidden tests began: a learner's function that takes
    # time in proportion to a hidden input must not write it into the gradebook.
    g.seconds = round(min(end, g.hidden_from or end) - start, 2)
    g.wall_seconds = round(end - start, 2)
    g.cpu_seconds = round(time.process_time() - cpu + session.cpu_seconds, 2)
    return g


def _blank(g: Grade, files: list[Any]) -> None:
    """Every question of ``files`` in ``g``, with its points and a score of 0."""
    for tf in files:
        g.possible_by_question[tf.name] = float(sum(tc.points or 0 for tc in tf.test_cases))
        g.scores[tf.name] = 0.0


def _tests(bundle: bytes) -> list[Any]:
    key = hashlib.sha256(bundle).hexdigest()
    if key not in _TESTS:
        _TESTS[key] = load_tests(bundle)
    return _TESTS[key]


def score(files: list[Any], session: Any, g: Grade) -> Grade:
    """The one scoring function: every test of ``files`` on the answers ``session`` gives.

    ``session`` is a :class:`~initlab.grading._session.Session` (the sandbox) or an
    :class:`~initlab.grading._session.InProcessSession` (the test suite's trusted notebooks),
    whose notebook has run: each answer name is bound to the learner's value (decoded afresh
    from the wire for every test) or to a :class:`Proxy` of their function. Sets ``g``'s
    scores, feedback, status and errors; returns ``g``.
    """
    _blank(g, files)
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
        return g
    with warnings.catch_warnings():  # a warning is not a failure, in any process
        warnings.simplefilter("ignore")
        visible = _run_tests(files, env, g, session)
    g.errors.extend(msg for _, msg in sorted(visible.items()))
    g.graded, g.status = True, "ok"
    return g


def _seed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _run_tests(files: list[Any], env: dict[str, Any], g: Grade, session: Any) -> dict[str, str]:
    """Every public test of every question, then every hidden one (so nothing the sandbox saw
    of a hidden test's inputs can reach a public test's message). Each test starts from
    generators seeded by its name, and each of its calls into the sandbox from a seed of its
    name and the call's number: the same answers always get the same score. Returns the
    functions that hung or crashed before the hidden tests began (what the learner may see)."""
    visible: dict[str, str] = {}
    for hidden in (False, True):
        if hidden:
            # Functions that hung or crashed so far; later ones did so on hidden inputs,
            # which only the count of failed hidden tests may reflect.
            g.hidden_from, visible = time.monotonic(), dict(session.hung)
        for tf in files:
            fb = g.feedback.setdefault(tf.name, {"failed_public": [], "failed_hidden": 0})
            for tc in tf.test_cases:
                if bool(tc.hidden) != hidden:
                    continue
                _seed(W.seed_of(tc.name))
                session.begin_test(tc.name)
                try:
                    kwargs = {}
                    for p in _params(tc):
                        v = env.get(p)
                        if isinstance(v, _Data):  # a fresh copy for every test
                            v = W.decode(v.node, v.blobs, [])
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
    return visible


# --- output -------------------------------------------------------------------------------------


def display_name(name: str) -> str:
    """A submission's path as text: bytes that are not UTF-8 shown as ``\\xNN`` escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _text(value: Any, limit: int | None = None) -> str:
    """``str(value)`` that any UTF-8 file can hold (lone surrogates escaped), cut to ``limit``."""
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def feedback_name(name: str) -> str:
    """The feedback file of submission ``name``: a sanitised stem (at most 60 characters)
    and a short hash of the full path's bytes, so distinct submissions never share a file."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", display_name(Path(name).stem))[:60].strip("._")
    return f"{stem or 'submission'}-{hashlib.sha256(os.fsencode(name)).hexdigest()[:10]}.json"


def feedback_json(grade: Grade) -> dict[str, Any]:
    """The learner-facing feedback: scores, failed *public* tests' messages, hidden counts."""
    return {
        "file": display_name(grade.file),
        "graded": grade.graded,
        "status": grade.status,
        "total": grade.total,
        "possible": grade.possible,
        "errors": [_text(e, MESSAGE_LIMIT) for e in grade.errors[:MAX_ERRORS]],
        "questions": {
            q: {
                "score": grade.scores.get(q, 0.0),
                "possible": grade.possible_by_question[q],
                "failed_public_tests": [
                    {k: _text(v, MESSAGE_LIMIT) for k, v in f.items()}
                    for f in grade.feedback.get(q, {}).get("failed_public", [])
                ],
                "failed_hidden_tests": grade.feedback.get(q, {}).get("failed_hidden", 0),
            }
            for q in sorted(grade.possible_by_question)
        },
    }


def csv_cell(value: Any) -> str:
    """``value`` as a CSV cell that no spreadsheet runs as a formula (a leading ``'``)."""
    text = _text(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def csv_text(grades: list[Grade], questions: list[str]) -> str:
    """The gradebook as CSV text: one row per grade, every cell passed through :func:`csv_cell`;
    the error cell holds at most :data:`MAX_ERRORS` errors in :data:`ERROR_CELL` characters."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file", *questions, "total", "possible", "seconds", "status", "error"])
    for g in grades:
        row = [display_name(g.file), *(f"{g.scores.get(q, 0.0):g}" for q in questions)]
        row += [f"{g.total:g}", f"{g.possible:g}", f"{g.seconds:.2f}", g.status]
        row.append(_text(" | ".join(_text(e, MESSAGE_LIMIT) for e in g.errors[:MAX_ERRORS]),
                         ERROR_CELL))  # fmt: skip
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


def _worker(conn: Any, bundle: bytes, args: tuple[Any, ...]) -> None:
    """A grading worker: grades the submissions the parent sends, one at a time."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    while True:
        try:
            submission = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(grade_one(bundle, submission, *args))


class _Worker:
    """A worker process and the submission it grades now, with the parent's deadline."""

    def __init__(self, ctx: Any, bundle: bytes, args: tuple[Any, ...]) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, bundle, args), daemon=True)
        self.proc.start()
        child.close()
        self.index: int | None = None
        self.until = math.inf

    def stop(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()
        from ._bwrap import reap

        reap(self.proc.pid)  # the sandboxes a killed worker could not clean up


def _pool(submissions: list[str], jobs: int, bundle: bytes, args: tuple[Any, ...],
          limit: float) -> list[Grade]:  # fmt: skip
    """Grade ``submissions`` with ``jobs`` workers; the parent keeps each one's clock: a
    worker past ``limit`` seconds on one submission, or one that dies, is killed and replaced,
    and costs only that submission its grade."""
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")
    todo = list(range(len(submissions)))[::-1]
    grades: list[Grade | None] = [None] * len(submissions)
    idle: list[_Worker] = []
    busy: list[_Worker] = []
    try:
        while todo or busy:
            while todo and len(busy) < jobs:
                w = idle.pop() if idle else _Worker(ctx, bundle, args)
                w.index, w.until = todo.pop(), time.monotonic() + limit
                busy.append(w)
                with contextlib.suppress(OSError):  # a dead worker: its recv reports it
                    w.conn.send(submissions[w.index])
            left = min(w.until for w in busy) - time.monotonic()
            ready = wait([w.conn for w in busy], timeout=max(0.0, left))
            for w in list(busy):
                why = None
                if w.conn in ready:
                    try:
                        grades[w.index] = w.conn.recv()
                    except Exception as exc:  # noqa: BLE001 - the worker died mid-answer
                        why = f"the grader's worker stopped ({_message(exc)})"
                elif time.monotonic() >= w.until:
                    why = f"not graded within {limit:g} s (the --timeout and a margin)"
                else:
                    continue
                busy.remove(w)
                if why is None:
                    idle.append(w)
                    continue
                w.stop()
                grades[w.index] = Grade(submissions[w.index], graded=False, errors=[why])
    finally:
        for w in idle + busy:
            w.stop()
    return [g for g in grades if g is not None]


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

    Every submission gets a row within ``timeout`` + :data:`WORKER_MARGIN_S` seconds of its
    start, whatever it contains. Raises :class:`~initlab.grading._bwrap.SandboxUnavailable`
    if ``sandbox`` and no bubblewrap sandbox can be made here.
    """
    from ._bwrap import SandboxUnavailable

    root = root or repo_root()
    if chapter not in masters(root):
        raise ValueError(f"chapter must be one of {list(masters(root))}, got {chapter!r}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs!r}")
    for name, v in (("timeout", timeout), ("call_timeout", call_timeout)):
        if not v > 0:
            raise ValueError(f"{name} must be > 0 seconds, got {v!r}")
    cell_timeout = cell_timeout or max(5.0, timeout / 4)
    if sandbox:
        why = sandbox_self_test()
        if why is not None:
            raise SandboxUnavailable(NO_SANDBOX_HELP.format(why=why))
    bundle = verified_bundle(chapter, root)
    files = load_tests(bundle)
    questions = [tf.name for tf in files]
    args = (sandbox, timeout, cell_timeout, call_timeout)
    names = [os.fsdecode(s) for s in submissions]
    grades = _pool(names, jobs, bundle, args, timeout + WORKER_MARGIN_S)
    for g in grades:
        if not g.possible_by_question:  # a worker that failed
            _blank(g, files)
        if not sandbox:
            g.status = "unsandboxed" if g.status == "ok" else f"{g.status}; unsandboxed"
    # Every worker has ended: only now are the gradebook and the feedback written.
    if out is not None:
        _atomic_write(Path(out), csv_text(grades, questions))
    if feedback_dir is not None:
        for g in grades:
            text = json.dumps(feedback_json(g), indent=1, ensure_ascii=False) + "\n"
            _atomic_write(Path(feedback_dir) / feedback_name(g.file), text)
    return grades
