"""Benchmark: the whole book from an empty cache (`make book`) and `make test`, timed.

Copies the repository (without .venv, _build, .git and generated autograder bundles) to a
temporary folder, then runs there what `make book` runs: ``python -m initlab.grading build
--no-run-tests`` (the student exercise notebooks) and ``scripts/build_book.py`` (every notebook executed,
warnings as errors). With ``--tests`` it then times `make test` as CI runs it, in a fresh
clone of the committed state with its own, warm ``.venv`` (``make setup`` first, not timed),
from an empty notebook cache. Nothing in the working tree is touched; the book's copy
imports initlab from its own ``src``.

Prints the wall times and one row per executed notebook (from the build's report, the log's
"Executed notebook in N seconds" lines, or the book's execution table), slowest first.
Targets: the book in at most 180 s and `make test` in at most 6 minutes on 2 CPU cores, no
notebook over 45 s; a violation is flagged and makes the exit status 1 (as does a failure).

Usage::

    .venv/bin/python benchmarks/bench_book.py            # the book, in a temp dir
    .venv/bin/python benchmarks/bench_book.py --tests    # the book, then make test
    .venv/bin/python benchmarks/bench_book.py --source ../main   # another checkout
    .venv/bin/python benchmarks/bench_book.py --keep     # keep it (e.g. to run tests/site:
                                                          # --site-dir=<dir>/_build/html)
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOTAL_LIMIT_S = 180.0
TEST_LIMIT_S = 360.0
NOTEBOOK_LIMIT_S = 45.0
SKIP_TOP = {".venv", "_build", ".git", ".pytest_cache", ".ruff_cache", ".hypothesis"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def copy_repo(dest: Path, source: Path = ROOT) -> None:
    """Copy a working tree (sources as they are now, committed or not) to ``dest``."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in ("__pycache__", ".ipynb_checkpoints", "_autograder")}
        if Path(folder).resolve() == source.resolve():
            skip |= SKIP_TOP & set(names)
        return skip

    shutil.copytree(source, dest, ignore=ignore, symlinks=True)


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True)
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


def notebook_times(log: str, book: Path) -> dict[str, float]:
    """{notebook path relative to the book: seconds}, from the log or the execution report."""
    log = ANSI.sub("", log)
    times: dict[str, float] = {}
    for seconds, path in re.findall(r"^\s+([\d.]+) s  (?:ok|failed)\s+(\S+\.ipynb)$", log, re.M):
        times[path] = float(seconds)  # build_book.py's report of its parallel execution
    if times:
        return times
    for path, seconds in re.findall(
        r"^(\S+\.ipynb): Executed notebook in ([\d.]+) seconds", log, re.M
    ):
        p = Path(path)
        times[(p.relative_to(book) if p.is_absolute() else p).as_posix()] = float(seconds)
    if times:
        return times
    for page in (book / "_build" / "html").rglob("*.html"):
        text = page.read_text(errors="replace")
        if "Run Time (s)" not in text:
            continue
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", text, re.S)[1:]:
            cells = [
                html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
                for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
            ]
            try:
                times[f"{cells[0]}.ipynb"] = float(cells[3])
            except (IndexError, ValueError):
                continue
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    parser.add_argument("--tests", action="store_true", help="also time make test")
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout to time")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="initlab-bench-book-"))
    status = 0
    print(f"{os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.2f}")
    total = bench_book(work / "book", args.source)
    if total is None or total > TOTAL_LIMIT_S:
        status = 1
    if args.tests:
        seconds = bench_tests(work / "tests", args.source)
        if seconds is None or seconds > TEST_LIMIT_S:
            status = 1
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    if args.keep:
        print(f"\nkept: {work}  (site: {work / 'book' / '_build' / 'html'})")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return status


def _env(copy: Path) -> dict[str, str]:
    py = sys.executable
    return {
        **os.environ,
        "INITLAB_ROOT": str(copy),
        "INITLAB_PROGRESS": "0",
        "PYTHONPATH": str(copy / "src"),
        "PATH": f"{Path(py).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _fresh_copy(dest: Path, source: Path) -> tuple[dict[str, str], int, str, float]:
    """Copy ``source`` to ``dest`` and build the student notebooks there, as make does."""
    print(f"copying {source} -> {dest} (without {', '.join(sorted(SKIP_TOP))})")
    copy_repo(dest, source)
    env = _env(dest)
    cmd = [sys.executable, "-m", "initlab.grading", "build", "--no-run-tests"]
    rc_ex, log_ex, t_ex = run(cmd, dest, env)
    print(
        f"exercises (python -m initlab.grading build --no-run-tests): {t_ex:6.1f} s  exit {rc_ex}"
    )
    return env, rc_ex, log_ex, t_ex


def bench_book(book: Path, source: Path) -> float | None:
    """Time `make book` from an empty cache in a copy at ``book``; None if it failed."""
    py = sys.executable
    env, rc_ex, log_ex, t_ex = _fresh_copy(book, source)
    rc_book, log_book, t_book = run([py, "scripts/build_book.py"], book, env)
    print(f"book (scripts/build_book.py, empty cache):     {t_book:6.1f} s  exit {rc_book}")
    failed = bool(rc_ex or rc_book)
    if failed:
        tail = (log_ex if rc_ex else log_book).strip().splitlines()[-25:]
        print("BUILD FAILED; last lines of its log:\n  " + "\n  ".join(tail))

    times = notebook_times(log_book, book)
    total = t_ex + t_book
    print(f"\n{'notebook':56s} {'seconds':>8s}")
    for name, seconds in sorted(times.items(), key=lambda kv: -kv[1]):
        flag = f"  FLAG > {NOTEBOOK_LIMIT_S:.0f} s" if seconds > NOTEBOOK_LIMIT_S else ""
        print(f"{name:56s} {seconds:8.1f}{flag}")
        failed |= bool(flag)
    executed = sum(times.values())
    print(f"{'sum over ' + str(len(times)) + ' notebooks (kernel time)':56s} {executed:8.1f}")
    flag = f"  FLAG > {TOTAL_LIMIT_S:.0f} s" if total > TOTAL_LIMIT_S else ""
    print(f"{'TOTAL wall time (make book from an empty cache)':56s} {total:8.1f}{flag}")
    if times:
        slowest = max(times.items(), key=lambda kv: kv[1])
        print(f"slowest notebook: {slowest[0]} {slowest[1]:.1f} s")
    return None if failed else total


def bench_tests(copy: Path, source: Path) -> float | None:
    """Time `make test` with a warm ``.venv`` in a fresh clone of ``source`` (its committed
    state), as CI runs it; None if it failed.

    The clone gets its own ``.venv`` first (``make setup``, not timed): the grading sandbox
    imports initlab from the clone's editable install, so a copy run with another checkout's
    environment would not test what CI tests.
    """
    print("\nmake test (fresh clone, warm .venv, empty notebook cache, as in CI):")
    subprocess.run(["git", "clone", "--quiet", str(source), str(copy)], check=True)
    env = {**os.environ, "CI": "true"}  # make test then passes --require-browser/-sandbox
    rc_setup, log_setup, t_setup = run(["make", "setup"], copy, env)
    print(f"make setup (not timed): {t_setup:.1f} s, exit {rc_setup}")
    if rc_setup:
        print("SETUP FAILED; last lines:\n  " + "\n  ".join(log_setup.strip().splitlines()[-30:]))
        return None
    rc, log, total = run(["make", "test"], copy, env)
    summary = [line for line in log.strip().splitlines() if " passed" in line or " failed" in line]
    print(f"  {summary[-1] if summary else log.strip().splitlines()[-1:]}")
    flag = f"  FLAG > {TEST_LIMIT_S:.0f} s" if total > TEST_LIMIT_S else ""
    print(f"{'TOTAL wall time (make test, warm .venv)':56s} {total:8.1f}{flag}")
    if rc:
        print("TESTS FAILED; last lines:\n  " + "\n  ".join(log.strip().splitlines()[-30:]))
        return None
    return total


if __name__ == "__main__":
    sys.exit(main())
