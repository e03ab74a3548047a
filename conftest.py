"""Test-suite wiring: order of the stages, per-notebook durations, a once-per-session book build.

Notebooks the book executes are executed once, in parallel, into the book's notebook cache
(``scripts/build_book.py --execute-only``): each is one test item that fails with the
notebook's traceback, in place of nbval's items, and the book build that follows finds
them cached instead of executing them a second time. It checks what ``--nbval-lax`` checks
(every cell runs; cells tagged ``raises-exception`` may raise), in the same kernel
environment. The other notebooks (exercise masters, student notebooks) run through nbval.
``INITLAB_NOTEBOOKS=nbval`` runs every notebook through nbval instead.
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("build_book", ROOT / "scripts" / "build_book.py")
build_book = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_book)
build_book.apply_kernel_env()  # the kernels' thread count and progress bars, set in one place

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


class BookNotebookFile(pytest.File):
    """The collector of one :class:`BookNotebook` (nbval's would start a kernel for nothing)."""

    def collect(self) -> list[pytest.Item]:
        return [BookNotebook.from_parent(self, name="executes")]


class BookNotebook(pytest.Item):
    """A notebook the book executes, run once into the book's cache (see the docstring)."""

    def runtest(self) -> None:
        result = _book_execution(self.session)[self.path.relative_to(ROOT).as_posix()]
        self.user_properties.append(("notebook_seconds", result["seconds"]))
        if result["status"] == "failed":
            raise NotebookFailed(result["traceback"] or "the notebook failed to execute")

    def repr_failure(self, excinfo: pytest.ExceptionInfo) -> str:
        if isinstance(excinfo.value, NotebookFailed):
            return f"{self.path.relative_to(ROOT)} failed:\n{build_book.ANSI.sub('', str(excinfo.value))}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, None, str]:
        return self.path, None, f"{self.path.relative_to(ROOT)} (executed for the book)"


class NotebookFailed(Exception):
    pass


def _book_execution(session: pytest.Session) -> dict[str, dict]:
    """Execute every collected book notebook once, in parallel; cached per session."""
    if not hasattr(session, "_initlab_book_report"):
        paths = sorted({item.path for item in session.items if isinstance(item, BookNotebook)})
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "report.json"
            proc = subprocess.run(
                [sys.executable, str(ROOT / "scripts" / "build_book.py"), "--execute-only",
                 str(out), *map(str, paths)],
                cwd=ROOT, text=True, capture_output=True,
            )  # fmt: skip
            if not out.exists():
                pytest.fail(
                    f"notebook execution failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
                )
            session._initlab_book_report = json.loads(out.read_text())
    return session._initlab_book_report


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if os.environ.get("INITLAB_NOTEBOOKS") != "nbval":
        in_book = {p.resolve() for p in build_book.executed_notebooks()}
        kept: list[pytest.Item] = []
        replaced: set[Path] = set()
        for item in items:
            path = Path(str(item.fspath)).resolve()
            if path in in_book and type(item).__module__.startswith("nbval"):
                if path not in replaced:
                    replaced.add(path)
                    book_file = BookNotebookFile.from_parent(item.parent.parent, path=path)
                    kept.extend(book_file.collect())
                continue
            kept.append(item)
        items[:] = kept
    items.sort(key=_stage)  # stable: keeps each file's own order


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        seconds = dict(report.user_properties).get("notebook_seconds")
        if seconds is None:  # an nbval cell: every phase counts
            _notebook_seconds[path] += report.duration
        elif report.when == "call":  # a book notebook: its kernel time
            _notebook_seconds[path] += seconds


def pytest_terminal_summary(terminalreporter) -> None:
    if not _notebook_seconds:
        return
    tr = terminalreporter
    tr.section("notebook durations (kernel time, all cells)")
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
