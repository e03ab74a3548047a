"""Command line of ``python -m initlab.grading``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ._build import build
from ._bwrap import SandboxUnavailable
from ._grade import display_name, grade


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m initlab.grading",
        description="Build the exercise notebooks from their masters, or grade submissions.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "build",
        help="write chapters/<chapter>/exercises.ipynb and the "
        "autograder bundles from exercises/<chapter>.ipynb",
    )
    b.add_argument("chapters", nargs="*", help="chapter folder names (default: every master)")
    b.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a committed student notebook is out of date or a "
        "bundle does not match the hash build recorded",
    )
    b.add_argument(
        "--force", action="store_true", help="rebuild even the masters that did not change"
    )
    b.add_argument(
        "--no-run-tests",
        action="store_true",
        help="do not grade the master's solutions while building (faster; the bundle is the "
        "same, but a solution that fails its own tests is not caught)",
    )
    b.add_argument(
        "--jobs", type=int, default=None, help="masters built at once (default: the CPUs)"
    )
    g = sub.add_parser("grade", help="grade submissions into a CSV gradebook")
    g.add_argument("chapter", help="chapter folder name, e.g. 03_xavier")
    g.add_argument("submissions", nargs="+", type=Path, help="submitted .ipynb files")
    g.add_argument("--out", type=Path, default=Path("grades.csv"), help="CSV (default grades.csv)")
    g.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default 1)")
    g.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="wall-clock seconds per submission, restarts included (default 300)",
    )
    g.add_argument(
        "--cell-timeout",
        type=float,
        default=None,
        help="seconds before one notebook cell is interrupted (default timeout/4, at least 5)",
    )
    g.add_argument(
        "--call-timeout",
        type=float,
        default=10.0,
        help="seconds one call of a learner's function may take (default 10); a function "
        "that runs over fails the tests that use it, and only those",
    )
    g.add_argument(
        "--feedback-dir",
        type=Path,
        default=None,
        help="write one JSON feedback file per submission here",
    )
    g.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run submissions as plain processes, without bubblewrap (trusted submissions "
        "only; every row then says 'unsandboxed')",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code (grade: 0 iff every submission was graded)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["grade"]:
        # A submission named like an option (``-x.ipynb``, from ``grade 03 *.ipynb`` in the
        # submissions folder) is a file, not an option: it must not stop the class's grading.
        argv = [f"./{a}" if a.startswith("-") and os.path.lexists(a) else a for a in argv]
    args = _parser().parse_args(argv)
    if args.command == "build":
        return build(
            args.chapters or None,
            check=args.check,
            force=args.force,
            run_tests=not args.no_run_tests,
            jobs=args.jobs,
        )
    start = time.monotonic()
    try:
        grades = grade(
            args.chapter,
            args.submissions,
            out=args.out,
            jobs=args.jobs,
            timeout=args.timeout,
            cell_timeout=args.cell_timeout,
            call_timeout=args.call_timeout,
            feedback_dir=args.feedback_dir,
            sandbox=not args.no_sandbox,
        )
    except SandboxUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ungraded = [g.file for g in grades if not g.graded]
    n = max(1, len(grades))
    print(
        f"graded {len(grades) - len(ungraded)}/{len(grades)} submissions in "
        f"{time.monotonic() - start:.1f} s -> {args.out} (per submission: "
        f"{sum(g.wall_seconds for g in grades) / n:.1f} s wall, "
        f"{sum(g.cpu_seconds for g in grades) / n:.1f} s CPU)"
    )
    for f in ungraded:
        print(f"  not graded: {display_name(f)}")
    return 0 if not ungraded else 1
