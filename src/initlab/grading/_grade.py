"""``python -m initlab.grading grade``: a gradebook from a folder of submissions.

Every submission is graded by its own worker process (:mod:`initlab.grading._worker`) in a new
session, ``jobs`` at a time, under a wall-clock limit; a worker that runs over is killed with its
whole process tree (the Jupyter kernel included). The grade comes from the worker's JSON record,
which it writes from otter's results object after the kernel has stopped, never from anything
the submission prints.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._paths import autograder_zip, masters, repo_root


@dataclass
class Grade:
    """The grade of one submission: per-question scores, totals and what went wrong."""

    file: str
    graded: bool
    scores: dict[str, float] = field(default_factory=dict)
    possible_by_question: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    feedback: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.scores.values())

    @property
    def possible(self) -> float:
        return sum(self.possible_by_question.values())


def _kill_tree(pid: int) -> None:
    """Kill process ``pid`` and every descendant (the kernel runs in a session of its own)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        procs = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def _question_possible(ag_zip: Path) -> dict[str, float]:
    """Points per question, read from the autograder bundle's test files (for failed runs)."""
    import warnings
    import zipfile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # otter's dependencies warn on import
        from otter.test_files import ExceptionTestFile

    out: dict[str, float] = {}
    with zipfile.ZipFile(ag_zip) as zf:
        for name in sorted(zf.namelist()):
            if name.startswith("tests/") and name.endswith(".py"):
                tf = ExceptionTestFile.from_string(zf.read(name).decode(), path=name)
                out[tf.name] = float(sum(tc.points or 0 for tc in tf.test_cases))
    return out


def grade_submission(
    ag_zip: Path, submission: Path, timeout: float, cell_timeout: int, possible: dict[str, float]
) -> Grade:
    """Grade one submission in a worker process; never raises for a bad submission."""
    start = time.monotonic()
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="initlab-job-") as tmp:
        out = Path(tmp) / "result.json"
        log = Path(tmp) / "worker.log"
        cmd = [
            sys.executable,
            "-m",
            "initlab.grading._worker",
            str(ag_zip),
            str(submission.resolve()),
            str(out),
            str(cell_timeout),
            nonce,
        ]
        # one thread each: `jobs` submissions run at once, and the kernel inherits this
        threads = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        env = {**os.environ, **threads, "PYTHONHASHSEED": "0", "INITLAB_PROGRESS": "0"}
        with open(log, "wb") as logf:
            proc = subprocess.Popen(
                cmd,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=tmp,
                env=env,
            )
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_tree(proc.pid)
            proc.wait()
        grade = Grade(
            str(submission),
            graded=False,
            possible_by_question=dict(possible),
            scores={q: 0.0 for q in possible},
        )
        if timed_out:
            grade.errors.append(f"timed out after {timeout:g} s; not graded")
        elif not out.is_file():
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            grade.errors.append(f"grader process failed (exit {proc.returncode}): {tail[0][:200]}")
        else:
            record = json.loads(out.read_text(encoding="utf-8"))
            grade.graded = bool(record["graded"])
            grade.errors.extend(record["errors"])
            for q, info in record["questions"].items():
                grade.scores[q] = info["score"]
                grade.possible_by_question[q] = info["possible"]
            grade.feedback = record["questions"]
    grade.seconds = round(time.monotonic() - start, 2)
    return grade


def feedback_json(grade: Grade) -> dict[str, Any]:
    """The learner-facing feedback: scores and failed *public* tests' messages only."""
    return {
        "file": grade.file,
        "graded": grade.graded,
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


def _write_csv(grades: list[Grade], questions: list[str], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", *questions, "total", "possible", "error"])
        for g in grades:
            w.writerow(
                [
                    g.file,
                    *(f"{g.scores.get(q, 0.0):g}" for q in questions),
                    f"{g.total:g}",
                    f"{g.possible:g}",
                    " | ".join(g.errors),
                ]
            )


def grade(
    chapter: str,
    submissions: list[Path],
    out: Path | None = None,
    jobs: int = 1,
    timeout: float = 120.0,
    cell_timeout: int | None = None,
    feedback_dir: Path | None = None,
    root: Path | None = None,
) -> list[Grade]:
    """Grade ``submissions`` for ``chapter``; write the CSV (and feedback files); return grades.

    Builds the chapter's autograder bundle first if it is missing.
    """
    root = root or repo_root()
    if chapter not in masters(root):
        raise ValueError(f"chapter must be one of {list(masters(root))}, got {chapter!r}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs!r}")
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    cell_timeout = cell_timeout or max(5, int(timeout // 2))
    ag_zip = autograder_zip(chapter, root)
    if not ag_zip.is_file():
        from ._build import build

        build([chapter], root=root)
    possible = _question_possible(ag_zip)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        grades = list(
            pool.map(
                lambda s: grade_submission(ag_zip, Path(s), timeout, cell_timeout, possible),
                submissions,
            )
        )
    if out is not None:
        _write_csv(grades, sorted(possible), Path(out))
    if feedback_dir is not None:
        feedback_dir = Path(feedback_dir)
        feedback_dir.mkdir(parents=True, exist_ok=True)
        for i, g in enumerate(grades):
            name = f"{i:03d}-{Path(g.file).stem}.json"
            (feedback_dir / name).write_text(
                json.dumps(feedback_json(g), indent=1) + "\n", encoding="utf-8"
            )
    return grades
