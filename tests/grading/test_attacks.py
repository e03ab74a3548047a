"""Red-team attacks on the sandboxed grader: one test per attack, each asserting the guarantee
it targets through the instructor's own path (``python -m initlab.grading grade``, then the
CSV and the feedback files).

The five guarantees (README "Instructors"):

1. a score depends only on what the answers compute (same notebook, same grade; nothing it
   does changes its own score or anyone else's);
2. nothing outside the sandbox changes, and it reads nothing but itself;
3. whatever it contains, the gradebook and every other feedback file are written, within
   ``--timeout`` plus the 30 s margin per submission;
4. the grader's memory, disk and time stay bounded whatever the submission sends;
5. nothing of the hidden tests beyond pass/fail counts reaches the feedback or the CSV.

The whole attack class is graded in one CLI call (a session fixture); an attack that still
breaks its guarantee is ``xfail(strict=True)`` with what breaks as the reason.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from _notebooks import FIXTURES, apply_fixture, solved

from initlab.grading import masters, student_notebook
from initlab.grading._grade import WORKER_MARGIN_S, feedback_name

CHAPTER = "03_xavier"
POINTS = {"q1": 2, "q2": 3, "q3": 4, "q4": 3, "q5": 2, "q6": 2}
TOTAL = sum(POINTS.values())
TIMEOUT, CELL_TIMEOUT, CALL_TIMEOUT = 40, 5, 4
ATTACKS = FIXTURES / "attacks"
#: attack fixture -> points it loses (applied to the solved notebook)
LOSES = {
    "lowprec": {"q1": 2, "q2": 1, "q5": 2},  # bfloat16, float16 and float8 answers
    "forged_done": {},  # its cell is skipped (out of order), the rest graded
    "big_frame": {},
    "stderr_flood": {},
    "shm_memfd": {},
    "int80": {},
    "busy_threads": {},
    "exit_in_hidden": {"q4": 2},  # the hidden test of q4
    "refs600k": {"q6": 2},
    "fat_values": {"q2": 1, "q5": 2, "q6": 2},
    "odd_values": {"q3": 4, "q5": 2, "q6": 2},
    "huge_errors": {"q5": 1},  # the hidden test of q5
}
#: the sum of n_in over the hidden q1 test's calls (64, 512, 3, 7, 1000, 10, 300, 300) / 300
HIDDEN_SLEEP_S = (64 + 512 + 3 + 7 + 1000 + 10 + 300 + 300) / 300


def _write(nb: nbformat.NotebookNode, path: Path) -> Path:
    nbformat.write(nb, path)
    return path


def _solved() -> nbformat.NotebookNode:
    return solved(student_notebook(CHAPTER), masters()[CHAPTER])


def _attack(dest: Path, name: str, subs: dict[str, str] | None = None) -> Path:
    text = (ATTACKS / f"{name}.py").read_text(encoding="utf-8")
    for k, v in (subs or {}).items():
        text = text.replace(k, v)
    tmp = dest / f".{name}.fixture.py"
    tmp.write_text(text, encoding="utf-8")
    nb = apply_fixture(_solved(), tmp)
    tmp.unlink()
    return _write(nb, dest / f"attack-{name}.ipynb")


def _tree(*tops: Path) -> dict[str, int]:
    out = {}
    for top in tops:
        for p in [top] if top.is_file() else sorted(top.rglob("*")):
            if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts:
                out[str(p)] = hash(p.read_bytes())
    return out


def _sample_rss(pid: int, peak: dict[str, int], stop: threading.Event) -> None:
    """Peak RSS of the grading parent and of its workers (not of the sandboxes)."""
    while not stop.is_set():
        try:
            parent = psutil.Process(pid)
            peak["parent"] = max(peak["parent"], parent.memory_info().rss)
            for c in parent.children():
                if "multiprocessing" in " ".join(c.cmdline()):
                    peak["worker"] = max(peak["worker"], c.memory_info().rss)
        except psutil.Error:
            pass
        stop.wait(0.2)


def _grade(root: Path, paths: list[Path | str], out: Path, fb: Path, cwd: Path) -> dict:
    cmd = [sys.executable, "-m", "initlab.grading", "grade", CHAPTER, *map(str, paths)]
    cmd += ["--out", str(out), "--jobs", "2", "--timeout", str(TIMEOUT)]
    cmd += ["--cell-timeout", str(CELL_TIMEOUT), "--call-timeout", str(CALL_TIMEOUT)]
    cmd += ["--feedback-dir", str(fb)]
    env = {**os.environ, "INITLAB_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    peak = {"parent": 0, "worker": 0}
    stop = threading.Event()
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
    sampler = threading.Thread(target=_sample_rss, args=(proc.pid, peak, stop), daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate(timeout=1200)
    stop.set()
    sampler.join()
    return {
        "rc": proc.returncode,
        "stdout": stdout,
        "stderr": stderr,
        "seconds": time.monotonic() - start,
        "peak": peak,
    }


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out, newline="", encoding="utf-8") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def _scores(row: dict[str, str]) -> dict[str, float]:
    return {q: float(row[q]) for q in POINTS}


@pytest.fixture(scope="session")
def attacked(sandbox: None, built: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Grade every attack notebook (and the files with odd names, links, FIFOs) at once."""
    subs = tmp_path_factory.mktemp("attack-subs")
    cwd = tmp_path_factory.mktemp("attack-cwd")
    out, fb = subs / "out" / "grades.csv", subs / "out" / "feedback"
    names: dict[str, Path | str] = {}
    # The slow ones first; the timing probe and its control start together.
    names["timing-probe"] = _attack(subs, "timing_channel", {"@SLEEP@": "True"}).rename(
        subs / "timing-probe.ipynb"
    )
    names["timing-control"] = _attack(subs, "timing_channel", {"@SLEEP@": "False"}).rename(
        subs / "timing-control.ipynb"
    )
    names["deaf_driver"] = _attack(subs, "deaf_driver")
    for n in LOSES:
        names[n] = _attack(subs, n)
    names["solved-a"] = _write(_solved(), subs / "solved-a.ipynb")
    names["blank"] = _write(
        nbformat.read(student_notebook(CHAPTER), as_version=4), subs / "blank.ipynb"
    )
    # -- files that are not plain notebooks -------------------------------------------------
    master = built / "exercises" / f"{CHAPTER}.ipynb"
    (subs / "link-master.ipynb").symlink_to(master)
    (subs / "link-shadow.ipynb").symlink_to("/etc/shadow")
    (subs / "linked-dir").symlink_to(built / "exercises")  # a folder that is a link
    names["link-master"] = subs / "link-master.ipynb"
    names["link-shadow"] = subs / "link-shadow.ipynb"
    names["link-dir"] = subs / "linked-dir" / f"{CHAPTER}.ipynb"
    os.link(master, subs / "hardlink.ipynb")  # as `tar x` or `unzip` of a crafted archive makes
    names["hardlink"] = subs / "hardlink.ipynb"
    os.mkfifo(subs / "fifo.ipynb")
    names["fifo"] = subs / "fifo.ipynb"
    deep = b'{"cells": ' + b"[" * 200_000 + b"]" * 200_000 + b', "metadata": {}}'
    (subs / "deep.ipynb").write_bytes(deep)
    names["deep"] = subs / "deep.ipynb"
    nb = _solved()
    as_dict = json.loads(nbformat.writes(nb))
    for c in as_dict["cells"]:
        if c["cell_type"] == "code":
            c["source"] = 5
            break
    (subs / "int-source.ipynb").write_text(json.dumps(as_dict))
    names["int-source"] = subs / "int-source.ipynb"
    as_dict = json.loads(nbformat.writes(nb))
    code = [c for c in as_dict["cells"] if c["cell_type"] == "code"]
    code[-1]["source"] = "# a lone surrogate: \ud800\n" + "".join(code[-1]["source"])
    (subs / "surrogate-source.ipynb").write_text(json.dumps(as_dict))  # ensure_ascii: \ud800
    names["surrogate-source"] = subs / "surrogate-source.ipynb"
    # -- odd names (each a solved notebook: each must get its 16 points and its feedback) --
    odd = {
        "non-utf8": os.fsdecode(os.fsencode(str(subs)) + b"/bad-\xff\xfe.ipynb"),
        "long-multibyte": str(subs / ("é" * 120 + ".ipynb")),
        "formula": str(subs / '=HYPERLINK("http://x"),\n+1.ipynb'),
        "same-stem-a": str(subs / "a" / "solved.ipynb"),
        "same-stem-b": str(subs / "b" / "solved.ipynb"),
    }
    odd["like-feedback"] = str(subs / feedback_name(str(subs / "solved-a.ipynb")))
    for key, p in odd.items():
        os.makedirs(os.path.dirname(p), exist_ok=True)
        nbformat.write(_solved(), p)
        names[key] = p
    watched = [built / "exercises", subs, cwd]
    before = _tree(*watched)
    run = _grade(built, list(names.values()), out, fb, cwd)
    after = _tree(*watched)
    for p in list(before) + list(after):
        if p.startswith(str(subs / "out")):
            before.pop(p, None)
            after.pop(p, None)
    rows = _rows(out)
    by_key = {k: rows.get(os.fsencode(str(p)).decode("utf-8", "backslashreplace"))
              for k, p in names.items()}  # fmt: skip
    feedback = {}
    for k, p in names.items():
        f = fb / feedback_name(str(p))
        feedback[k] = json.loads(f.read_text(encoding="utf-8")) if f.exists() else None
    texts = [out.read_text(encoding="utf-8")]
    texts += [p.read_text(encoding="utf-8") for p in fb.glob("*.json")]
    return {
        **run,
        "rows": by_key,
        "all_rows": rows,
        "feedback": feedback,
        "count": len(names),
        "texts": texts,
        "before": before,
        "after": after,
        "out": out,
        "fb": fb,
    }


def _expect(loses: dict[str, int]) -> dict[str, float]:
    return {q: float(p - loses.get(q, 0)) for q, p in POINTS.items()}


# --- guarantee 3: every row and every feedback file, in time --------------------------------


def test_every_submission_has_a_row_and_a_feedback_file(attacked) -> None:
    assert len(attacked["all_rows"]) == attacked["count"], attacked["stderr"][-3000:]
    missing = [k for k, r in attacked["rows"].items() if r is None]
    assert missing == [], missing
    assert [k for k, f in attacked["feedback"].items() if f is None] == []
    assert len(list(attacked["fb"].glob("*.json"))) == attacked["count"]


def test_every_row_within_the_timeout_and_margin(attacked) -> None:
    limit = TIMEOUT + WORKER_MARGIN_S
    slow = {k: r["seconds"] for k, r in attacked["rows"].items() if float(r["seconds"]) > limit}
    assert slow == {}
    # the whole class: at most every submission's limit, two at a time (and far less)
    assert attacked["seconds"] < attacked["count"] * limit / 2


@pytest.mark.parametrize("key", ["fifo", "deep", "int-source", "link-shadow", "link-master"])
def test_files_that_are_not_notebooks_are_not_graded(attacked, key: str) -> None:
    row = attacked["rows"][key]
    assert row["status"] == "not graded" and float(row["total"]) == 0, row
    assert float(row["seconds"]) < 10  # refused without waiting (a FIFO never blocks)


def test_deaf_driver_is_stopped_within_the_limit(attacked) -> None:
    row = attacked["rows"]["deaf_driver"]
    assert float(row["seconds"]) <= TIMEOUT + WORKER_MARGIN_S, row
    assert float(row["total"]) < TOTAL or row["status"] != "ok", row


def test_a_lone_surrogate_in_a_cell_still_gets_a_row(attacked) -> None:
    """A JSON ``\\ud800`` escape in a comment of a solved notebook: graded as it is."""
    row = attacked["rows"]["surrogate-source"]
    assert row["status"] == "ok" and float(row["total"]) == TOTAL, row


@pytest.mark.parametrize(
    "key",
    ["non-utf8", "long-multibyte", "formula", "same-stem-a", "same-stem-b",
     "like-feedback"],
)  # fmt: skip
def test_odd_names_get_their_grade_and_their_own_feedback(attacked, key: str) -> None:
    row, fb = attacked["rows"][key], attacked["feedback"][key]
    assert _scores(row) == POINTS and row["status"] == "ok", row
    assert fb["total"] == TOTAL and fb["file"] == row["file"]


def test_no_csv_cell_is_a_formula(attacked) -> None:
    reader = csv.reader(io.StringIO(attacked["out"].read_text(encoding="utf-8")))
    cells = [c for row in reader for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]


# --- guarantee 1: the score is what the answers compute -------------------------------------


@pytest.mark.parametrize("name", sorted(LOSES))
def test_attack_gets_exactly_its_true_score(attacked, name: str) -> None:
    row = attacked["rows"][name]
    assert row["status"] == "ok" and _scores(row) == _expect(LOSES[name]), row
    assert "NameError" not in row["error"] and "AttributeError" not in row["error"], row


@pytest.mark.parametrize("name", ["forged_done", "big_frame", "int80"])
def test_wire_attacks_cost_only_their_own_cell(attacked, name: str) -> None:
    assert "ended the process" in attacked["rows"][name]["error"], attacked["rows"][name]


def test_neighbours_of_attacks_keep_full_marks(attacked) -> None:
    """The solved notebooks, graded beside busy threads, floods and restarts."""
    for key in ("solved-a", "non-utf8", "long-multibyte", "same-stem-a", "same-stem-b"):
        assert _scores(attacked["rows"][key]) == POINTS, (key, attacked["rows"][key])
    assert float(attacked["rows"]["blank"]["total"]) == 0


def test_a_link_in_the_folder_is_not_followed(attacked) -> None:
    """Broke at 69793b2 (full marks from the master); held since ddc3416 (read_submission)."""
    row = attacked["rows"]["link-dir"]
    assert row["status"] == "not graded" and float(row["total"]) == 0, row


def test_a_hard_link_to_the_master_gets_nothing(attacked) -> None:
    """Broke at 69793b2 (full marks from the master); held since ddc3416 (read_submission)."""
    row = attacked["rows"]["hardlink"]
    assert row["status"] == "not graded" and float(row["total"]) == 0, row


# --- guarantee 2: nothing outside changes ---------------------------------------------------


def test_nothing_outside_the_sandboxes_changed(attacked) -> None:
    before, after = attacked["before"], attacked["after"]
    assert before.keys() == after.keys(), set(before) ^ set(after)
    assert [f for f in before if before[f] != after[f]] == []


# --- guarantee 4: the grader's memory and output stay bounded -------------------------------


def test_grader_memory_and_spools_stay_bounded(attacked) -> None:
    peak = attacked["peak"]
    print(
        f"\npeak RSS: parent {peak['parent'] >> 20} MiB, worker {peak['worker'] >> 20} MiB; "
        f"stderr {len(attacked['stderr'])} B, stdout {len(attacked['stdout'])} B; "
        f"CSV {attacked['out'].stat().st_size} B; class of {attacked['count']} in "
        f"{attacked['seconds']:.1f} s"
    )
    assert 0 < peak["parent"] < 1 << 30 and 0 < peak["worker"] < 3 << 30
    assert len(attacked["stderr"]) < 64 << 10, attacked["stderr"][-2000:]
    assert max(len(r["error"]) for r in attacked["all_rows"].values()) <= 4000
    assert max(len(t) for t in attacked["texts"]) < 64 << 10


# --- guarantee 5: nothing of the hidden tests comes back ------------------------------------


def test_hidden_inputs_never_reach_any_text(attacked) -> None:
    for text in attacked["texts"]:
        assert "HIDDEN-" not in text
    for key in ("exit_in_hidden", "huge_errors"):
        err = attacked["rows"][key]["error"]
        assert "128" not in err and "384" not in err and "997" not in err, err


def test_hidden_inputs_do_not_reach_the_seconds_column(attacked) -> None:
    probe, control = attacked["rows"]["timing-probe"], attacked["rows"]["timing-control"]
    assert _scores(probe) == _scores(control) == POINTS
    gap = float(probe["seconds"]) - float(control["seconds"])
    print(
        f"\nseconds: probe {probe['seconds']}, control {control['seconds']}, gap {gap:.2f} s, "
        f"hidden n_in sum / 300 = {HIDDEN_SLEEP_S:.2f} s"
    )
    assert abs(gap) < HIDDEN_SLEEP_S / 2, "the hidden calls' time is in the seconds column"


# --- the command line: file names that look like options -----------------------------------


@pytest.fixture(scope="session")
def option_named(sandbox: None, built: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``cd submissions && grade 03_xavier *.ipynb``: a learner's file named like an option."""
    subs = tmp_path_factory.mktemp("option-subs")
    _write(_solved(), subs / "alice.ipynb")
    _write(nbformat.read(student_notebook(CHAPTER), as_version=4), subs / "-x.ipynb")
    names = sorted(p.name for p in subs.glob("*.ipynb"))
    return {**_grade(built, names, subs / "g.csv", subs / "fb", subs), "out": subs / "g.csv"}


def test_a_file_named_like_an_option_does_not_stop_the_class(option_named) -> None:
    """Broke at 69793b2 (argparse took ``-x.ipynb`` for an option; held since ddc3416)."""
    assert option_named["out"].exists(), option_named["stderr"][-500:]
    assert float(_rows(option_named["out"])["alice.ipynb"]["total"]) == TOTAL


def test_report(attacked) -> None:
    """The measured numbers of every row (printed with -s)."""
    print()
    for key, row in attacked["rows"].items():
        print(f"{key:18} {row['status']:12} {row['total']:>4} {row['seconds']:>7}  "
              f"{row['error'][:110]!r}")  # fmt: skip
