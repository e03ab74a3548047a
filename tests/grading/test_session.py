"""The grader's side of one submission (``initlab.grading._session``): the parent keeps the
clock, and the same answers always get the same score (issue 24, guarantees 1 and 3)."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
import torch
from _notebooks import solved

from initlab.grading import Grade, InProcessSession, load_tests, masters, score, student_notebook
from initlab.grading._session import LearnerError, Session


def _session(cells: list[str], call_timeout: float = 2.0) -> Session:
    s = Session(
        cells,
        b"{}",
        "x.ipynb",
        sandboxed=True,
        cell_timeout=5,
        call_timeout=call_timeout,
        deadline=time.monotonic() + 60,
    )
    s.start()
    return s


def test_a_call_has_one_deadline_whatever_it_calls_back(sandbox: None) -> None:
    """A learner's function that keeps calling the test's callable restarts no timer: the call
    ends at --call-timeout, is reported as hung, and the next call still works."""
    loop = "import time\ndef loop(g):\n    while True:\n        g(1)\n        time.sleep(0.01)"
    s = _session([loop, "def ok(x):\n    return x + 1"])
    try:
        start = time.monotonic()
        with pytest.raises(LearnerError, match="did not return within 2 s"):
            s.call("loop", (lambda x: x,), {})
        assert time.monotonic() - start < 2 + 3  # the limit, and the kill
        assert s.call("ok", (1,), {}) == 2  # a fresh sandbox serves the next function
    finally:
        s.kill()


def test_a_flood_of_callbacks_is_cut_at_the_limit(sandbox: None) -> None:
    from initlab.grading._session import MAX_CALLBACKS

    s = _session(["def many(g):\n    for _ in range(20_000):\n        g(1)\n    return 0"], 60)
    try:
        with pytest.raises(LearnerError, match=f"more than {MAX_CALLBACKS} callbacks"):
            s.call("many", (lambda x: x,), {})
    finally:
        s.kill()


def test_cell_errors_are_frozen_before_the_tests(sandbox: None) -> None:
    """A crash during a (hidden) call restarts the notebook; that run adds no error."""
    cells = [
        "import os, time",
        "raise ValueError(f'run at {time.time_ns()}')",  # a different error on every run
        "def crash(x):\n    os._exit(3)",
        "def secret(x):\n    raise RuntimeError(f'seen {x}')",
    ]
    s = _session(cells)
    try:
        first = dict(s.cell_errors)
        assert list(first) == [1] and first[1].startswith("ValueError: run at ")
        with pytest.raises(LearnerError, match="ended the sandbox process"):
            s.call("crash", ("HIDDEN",), {})
        with pytest.raises(LearnerError, match="seen 1"):
            s.call("secret", (1,), {})  # served by a fresh run of the notebook ...
        assert s.starts == 2 and s.cell_errors == first  # ... which reported nothing
    finally:
        s.kill()


@pytest.mark.parametrize("chapter", ["05_initialization_at_scale"])
def test_the_same_notebook_gets_the_same_score_whatever_the_process_seed(
    built, chapter: str
) -> None:
    """Exercise 05's coordinate check draws random nets in the test and in the learner's
    init: with every test and call seeded from its name, two gradings under different
    global seeds give the same scores and the same messages."""
    nb = solved(student_notebook(chapter), masters()[chapter])
    files = load_tests(built.joinpath("exercises", "_autograder", chapter,
                                      "autograder.zip").read_bytes())  # fmt: skip
    results = []
    for seed in (1, 2):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        session = InProcessSession([c.source for c in nb.cells if c.cell_type == "code"])
        try:
            session.start()
            g = score(files, session, Grade("x", graded=False))
        finally:
            session.kill()
        results.append((g.scores, g.feedback))
    assert results[0] == results[1]
    assert sum(results[0][0].values()) == sum(
        sum(float(tc.points or 0) for tc in tf.test_cases) for tf in files
    )


def test_a_worker_that_dies_costs_only_its_submission(sandbox: None, built, tmp_path) -> None:
    """A grading worker killed mid-class (out of memory, say): its submission's row says so,
    a new worker grades the rest, and the gradebook is written (was: every row 'not graded:
    BrokenProcessPool')."""
    import csv
    import os
    import subprocess
    import sys

    import nbformat
    import psutil

    blank = nbformat.read(student_notebook("03_xavier"), as_version=4)
    paths = [tmp_path / f"b{i}.ipynb" for i in range(3)]
    for p in paths:
        nbformat.write(blank, p)
    cmd = [sys.executable, "-m", "initlab.grading", "grade", "03_xavier", *map(str, paths)]
    cmd += ["--out", str(tmp_path / "g.csv"), "--jobs", "1", "--timeout", "60"]
    proc = subprocess.Popen(cmd, env={**os.environ, "INITLAB_ROOT": str(built)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    killed, until = None, time.monotonic() + 60
    while killed is None and time.monotonic() < until:
        for child in psutil.Process(proc.pid).children():
            if "spawn_main" in " ".join(child.cmdline()):  # a worker, not the tracker
                child.kill()
                killed = child.pid
                break
        time.sleep(0.1)
    out, err = proc.communicate(timeout=600)
    assert killed is not None
    with open(tmp_path / "g.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3, err[-2000:]
    stopped = [r for r in rows if "worker stopped" in r["error"]]
    assert len(stopped) == 1 and stopped[0]["status"] == "not graded", rows
    assert [r["status"] for r in rows if r not in stopped] == ["ok", "ok"], rows
    assert proc.returncode == 1  # one submission not graded


def test_a_learners_oserror_is_their_exception_not_a_crash(sandbox: None) -> None:
    """FileNotFoundError, EOFError, ConnectionError... raised by the learner's function are
    theirs: the test sees them, the sandbox lives on (was: 'ended the sandbox process')."""
    s = _session(["def f(x):\n    if x:\n        raise FileNotFoundError('no ' + str(x))\n"
                  "    return 0"])  # fmt: skip
    try:
        with pytest.raises(FileNotFoundError, match="f raised FileNotFoundError: no 1"):
            s.call("f", (1,), {})
        assert s.call("f", (0,), {}) == 0 and s.starts == 1 and s.hung == {}
    finally:
        s.kill()


def _test_file(name: str, cases: list[tuple[bool, object]]):
    """A stand-in for an otter test file: (hidden, test function) per case, 1 point each."""
    from types import SimpleNamespace as NS

    return NS(name=name, test_cases=[
        NS(name=f"{name}_{i}", hidden=h, points=1, body=NS(test_func=fn))
        for i, (h, fn) in enumerate(cases)
    ])  # fmt: skip


def test_what_a_function_does_on_hidden_inputs_stays_out_of_the_errors(sandbox: None) -> None:
    """A function that hangs only on a hidden test's input: the hidden test fails (counted),
    and no error text tells the learner it hung there."""
    s = _session(["def f(x):\n    while x == 2:\n        pass\n    return x"])

    def public(f):
        assert f(1) == 1

    def hidden(f):
        assert f(2) == 2

    try:
        g = score([_test_file("q1", [(False, public), (True, hidden)])], s, Grade("x", False))
    finally:
        s.kill()
    assert g.scores == {"q1": 1.0} and g.feedback["q1"]["failed_hidden"] == 1
    assert s.hung and not any("did not return" in e for e in g.errors), g.errors


def test_a_notebook_of_millions_of_json_objects_is_refused_before_parsing() -> None:
    """The second red team's 16.5 MB of ``{}`` cost nbformat 24 s and 2.85 GB; a real
    notebook has a few thousand objects. Refused in milliseconds, graded 'not a notebook'."""
    from initlab.grading._grade import MAX_JSON_CONTAINERS, notebook_cells

    raw = b'{"cells": [], "metadata": {"x": [' + b"{}," * (MAX_JSON_CONTAINERS + 1) + b"{}]}}"
    start = time.monotonic()
    with pytest.raises(ValueError, match="JSON objects and lists"):
        notebook_cells(raw)
    assert time.monotonic() - start < 1
    nb = solved(student_notebook("05_initialization_at_scale"),
                masters()["05_initialization_at_scale"])  # fmt: skip
    import nbformat

    assert notebook_cells(nbformat.writes(nb).encode())  # a real one passes
