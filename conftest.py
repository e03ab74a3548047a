"""Test-suite wiring: order of the stages, per-notebook durations, a once-per-session book build."""

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("INITLAB_PROGRESS", "0")

_STAGES = (
    "tests/unit",
    "tests/grading",
    "tests/packaging",
    "chapters",
    "exercises",
    "tests/book",
    "tests/site",
)
_notebook_seconds: dict[str, float] = defaultdict(float)


def _stage(item: pytest.Item) -> int:
    rel = Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix()
    return next((i for i, s in enumerate(_STAGES) if rel.startswith(s)), len(_STAGES))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_stage)  # stable: keeps each file's own order


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _notebook_seconds[path] += report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    if not _notebook_seconds:
        return
    tr = terminalreporter
    tr.section("notebook durations (nbval, all cells)")
    for path, seconds in sorted(_notebook_seconds.items(), key=lambda kv: -kv[1]):
        tr.write_line(f"{seconds:7.1f} s  {path}")
    tr.write_line(
        f"{sum(_notebook_seconds.values()):7.1f} s  total over {len(_notebook_seconds)} notebooks"
    )


@pytest.fixture(scope="session")
def built_book() -> Path:
    """Build the book once per session (warnings as errors) and return _build/html."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_book.py")],
        cwd=ROOT,
        text=True,
        capture_output=True,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"the book build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}", pytrace=False
        )
    return ROOT / "_build" / "html"
