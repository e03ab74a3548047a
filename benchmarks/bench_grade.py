"""Seconds per submission of the sandboxed grader, per exercise set and ``--jobs``.

A class of ``--n`` submissions (half the solved notebook, half the blank one) is graded
through the command instructors use (``python -m initlab.grading grade``), once per
``--jobs`` value; the wall time over the class, per submission, and the grader's own
per-submission figures (wall and CPU, which include the sandbox's) are printed, with the
machine's load average, since the machines here are shared.

    python benchmarks/bench_grade.py 03_xavier 05_initialization_at_scale --jobs 1 2 --n 6
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "grading"))

from _notebooks import solved  # noqa: E402

from initlab.grading import masters, student_notebook  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("chapters", nargs="+")
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--n", type=int, default=6, help="submissions per class (even)")
    args = p.parse_args()
    for chapter in args.chapters:
        with tempfile.TemporaryDirectory(prefix="initlab-bench-") as tmp:
            folder = Path(tmp)
            student, master = student_notebook(chapter), masters()[chapter]
            paths = []
            for i in range(args.n):
                nb = solved(student, master) if i % 2 == 0 else nbformat.read(student, 4)
                paths.append(folder / f"s{i}.ipynb")
                nbformat.write(nb, paths[-1])
            for jobs in args.jobs:
                load = os.getloadavg()[0]
                start = time.monotonic()
                cmd = [sys.executable, "-m", "initlab.grading", "grade", chapter, *map(str, paths)]
                cmd += ["--jobs", str(jobs), "--out", str(folder / "g.csv")]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                wall = time.monotonic() - start
                if proc.returncode != 0:
                    print(proc.stdout, proc.stderr[-3000:])
                    return 1
                own = re.search(r"per submission: ([\d.]+) s wall, ([\d.]+) s CPU", proc.stdout)
                print(
                    f"{chapter} --jobs {jobs}: {args.n} submissions in {wall:.1f} s "
                    f"({wall / args.n:.1f} s each); grader's own figures per submission: "
                    f"{own.group(1)} s wall, {own.group(2)} s CPU; load average {load:.1f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
