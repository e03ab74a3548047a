"""Benchmark: build the whole book from an empty cache, as `make book` does, and time it.

Copies the repository (without .venv, _build, .git and generated autograder bundles) to a
temporary folder, then runs there what `make book` runs: ``python -m initlab.grading build``
(the student exercise notebooks) and ``scripts/build_book.py`` (Jupyter Book, every notebook
executed, warnings as errors). Nothing in the working tree is touched.

Prints the total wall time and one row per executed notebook (from the build log's
"Executed notebook in N seconds" lines, else the book's execution report), slowest first.
Targets: the whole book in under 5 minutes on 2 CPU cores, no notebook over 45 s; a
violation is flagged and makes the exit status 1 (as does a failed build).

Usage::

    .venv/bin/python benchmarks/bench_book.py            # build in a temp dir, then delete it
    .venv/bin/python benchmarks/bench_book.py --keep     # keep it (e.g. to run tests/site:
                                                          # INITLAB_SITE_DIR=<dir>/_build/html)
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
TOTAL_LIMIT_S = 300.0
NOTEBOOK_LIMIT_S = 45.0
SKIP_TOP = {".venv", "_build", ".git", ".pytest_cache", ".ruff_cache", ".hypothesis"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def copy_repo(dest: Path) -> None:
    """Copy the working tree (sources as they are now, committed or not) to ``dest``."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in ("__pycache__", ".ipynb_checkpoints", "_autograder")}
        if Path(folder).resolve() == ROOT:
            skip |= SKIP_TOP & set(names)
        return skip

    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True)
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


def notebook_times(log: str, book: Path) -> dict[str, float]:
    """{notebook path relative to the book: seconds}, from the log or the execution report."""
    log = ANSI.sub("", log)
    times: dict[str, float] = {}
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
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="initlab-bench-book-"))
    book = work / "book"
    py = sys.executable
    env = {
        **os.environ,
        "INITLAB_ROOT": str(book),
        "INITLAB_PROGRESS": "0",
        "PATH": f"{Path(py).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    print(f"copying {ROOT} -> {book} (without {', '.join(sorted(SKIP_TOP))})")
    copy_repo(book)
    print(f"{os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.2f}")

    status = 0
    rc_ex, log_ex, t_ex = run([py, "-m", "initlab.grading", "build"], book, env)
    print(f"exercises (python -m initlab.grading build): {t_ex:6.1f} s  exit {rc_ex}")
    rc_book, log_book, t_book = run([py, "scripts/build_book.py"], book, env)
    print(f"book (scripts/build_book.py, empty cache):     {t_book:6.1f} s  exit {rc_book}")
    if rc_ex or rc_book:
        status = 1
        tail = (log_ex if rc_ex else log_book).strip().splitlines()[-25:]
        print("BUILD FAILED; last lines of its log:\n  " + "\n  ".join(tail))

    times = notebook_times(log_book, book)
    total = t_ex + t_book
    print(f"\nload average after: {os.getloadavg()[0]:.2f}\n")
    print(f"{'notebook':56s} {'seconds':>8s}")
    for name, seconds in sorted(times.items(), key=lambda kv: -kv[1]):
        flag = f"  FLAG > {NOTEBOOK_LIMIT_S:.0f} s" if seconds > NOTEBOOK_LIMIT_S else ""
        print(f"{name:56s} {seconds:8.1f}{flag}")
        if flag:
            status = 1
    executed = sum(times.values())
    print(f"{'sum over ' + str(len(times)) + ' notebooks':56s} {executed:8.1f}")
    print(f"{'rest of the build (Sphinx, exercises, copying)':56s} {total - executed:8.1f}")
    flag = f"  FLAG > {TOTAL_LIMIT_S:.0f} s" if total > TOTAL_LIMIT_S else ""
    print(f"{'TOTAL wall time (make book from an empty cache)':56s} {total:8.1f}{flag}")
    if flag:
        status = 1
    if times:
        slowest = max(times.items(), key=lambda kv: kv[1])
        print(f"slowest notebook: {slowest[0]} {slowest[1]:.1f} s")

    if args.keep:
        print(f"\nkept: {book}  (site: {book / '_build' / 'html'})")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
