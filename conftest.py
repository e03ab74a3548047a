"""Test-suite wiring: order of the stages, per-notebook durations, a once-per-session book build.

Every notebook of the book (its pages and the student exercise notebooks) is executed once,
in parallel, into the book's notebook cache (``scripts/build_book.py
--execute-only``): each is one test item that fails with the notebook's traceback, in place
of nbval's items, and the book build that follows finds its pages cached instead of
executing them a second time. It checks what ``--nbval-lax`` checks (every cell runs; cells
tagged ``raises-exception`` may raise), in the same kernel environment (:data:`KERNEL_ENV`
of scripts/build_book.py). ``INITLAB_NOTEBOOKS=nbval`` runs every notebook through nbval
instead. The exercise masters (``exercises/``) are not executed as notebooks: their solutions
are graded instead, with the tests of their bundles, sandboxed (tests/grading/test_grading.py,
full marks for every set) and in-process (test_misconceptions.py), which runs every cell of
the solved notebook and every test, public and hidden.

The execution starts in the background when the session starts (a plain ``pytest``, which
collects every notebook under chapters/) or else once the tests are collected, and runs
while the stages before the notebooks (unit tests, the in-process misconception checks, the
packaging checks) run; the notebook items wait for it. The stages with wall-clock limits
(the sandboxed grading) come after it. When it has finished, the book build
(Sphinx, one core) starts in the background too, while the sandboxed grading runs; the book
and site tests wait for it (``built_book``).
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("build_book", ROOT / "scripts" / "build_book.py")
build_book = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_book)
build_book.apply_kernel_env()  # the kernels' thread count and progress bars, set in one place

_STAGES = (
    "tests/unit",
    "tests/grading/test_misconceptions.py",
    "tests/packaging",
    "chapters",
    "tests/grading",
    "tests/book",
    "tests/site",
)
_notebook_seconds: dict[str, float] = defaultdict(float)


def _relpath(item: pytest.Item) -> str:
    return Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix()


def _stage(item: pytest.Item) -> int:
    rel = _relpath(item)
    return next((i for i, s in enumerate(_STAGES) if rel.startswith(s)), len(_STAGES))


class BookNotebookFile(pytest.File):
    """The collector of one :class:`BookNotebook` (nbval's would start a kernel for nothing)."""

    def collect(self) -> list[pytest.Item]:
        return [BookNotebook.from_parent(self, name="executes")]


class BookNotebook(pytest.Item):
    """A notebook, run once in the parallel execution (see the module docstring)."""

    def runtest(self) -> None:
        report = _book_execution(self.session)
        name = self.path.relative_to(ROOT).as_posix()
        if name not in report:
            raise NotebookFailed(f"{name} was not in the parallel execution (started early?)")
        result = report[name]
        self.user_properties.append(("notebook_seconds", result["seconds"]))
        if result["status"] == "failed":
            raise NotebookFailed(result["traceback"] or "the notebook failed to execute")

    def repr_failure(self, excinfo: pytest.ExceptionInfo) -> str:
        if isinstance(excinfo.value, NotebookFailed):
            return f"{self.path.relative_to(ROOT)} failed:\n{build_book.ANSI.sub('', str(excinfo.value))}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, None, str]:
        return self.path, None, f"{self.path.relative_to(ROOT)} (executed in parallel)"


class NotebookFailed(Exception):
    pass


def _background(
    session: pytest.Session, name: str, command: Callable[[Path], list[str]]
) -> tuple[subprocess.Popen, Path]:
    """Start ``command(folder)`` in the background once per session under ``name``; return
    the process and its private temporary folder, which holds its output in ``log.txt`` (a
    file: a full pipe would block it). The session's end kills what still runs."""
    runs = session.__dict__.setdefault("_initlab_background", {})
    if name not in runs:
        tmp = tempfile.TemporaryDirectory(prefix=f"initlab-{name}-")
        folder = Path(tmp.name)
        with open(folder / "log.txt", "w") as log:
            proc = subprocess.Popen(
                command(folder),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # killed as a group if the session ends early
            )
        runs[name] = (proc, tmp)
    proc, tmp = runs[name]
    return proc, Path(tmp.name)


def _start_execution(session: pytest.Session, paths: list[Path] | None = None) -> None:
    """Start executing ``paths`` (default: every collected notebook), in the background, once."""
    if paths is None:
        paths = sorted({item.path for item in session.items if isinstance(item, BookNotebook)})
    script = str(ROOT / "scripts" / "build_book.py")
    _background(
        session,
        "notebooks",
        lambda folder: [sys.executable, script, "--execute-only", str(folder / "report.json"),
                        *map(str, paths)],
    )  # fmt: skip


def _book_execution(session: pytest.Session) -> dict[str, dict]:
    """Wait for the parallel execution of the notebooks; its report, per notebook."""
    if not hasattr(session, "_initlab_book_report"):
        _start_execution(session)
        proc, tmp = session._initlab_background["notebooks"]
        proc.wait()
        folder = Path(tmp.name)
        out = folder / "report.json"
        if not out.exists():
            log = (folder / "log.txt").read_text(errors="replace")
            pytest.fail(f"notebook execution failed:\n{log[-8000:]}")
        session._initlab_book_report = json.loads(out.read_text())
        if _wants_book(session):
            _start_book_build(session)
    return session._initlab_book_report


def _wants_book(session: pytest.Session) -> bool:
    """Whether a collected test needs the book built here (the site tests read
    ``$INITLAB_SITE_DIR`` instead when it is set)."""
    stages = ("tests/book",) if os.environ.get("INITLAB_SITE_DIR") else ("tests/book", "tests/site")
    return any(_relpath(item).startswith(stages) for item in session.items)


def _start_book_build(session: pytest.Session) -> tuple[subprocess.Popen, Path]:
    """Start ``scripts/build_book.py`` (warnings as errors) in the background, once."""
    script = str(ROOT / "scripts" / "build_book.py")
    return _background(session, "book", lambda folder: [sys.executable, script])


def pytest_sessionstart(session: pytest.Session) -> None:
    """A plain ``pytest`` (no paths named) collects every notebook under chapters/: start
    executing them now, before the collection (about 8 s on one core) has finished."""
    config = session.config
    if (
        config.args_source == pytest.Config.ArgsSource.TESTPATHS
        and not config.option.collectonly
        and not config.option.keyword
        and not config.option.markexpr
        and os.environ.get("INITLAB_NOTEBOOKS") != "nbval"
    ):
        notebooks = [
            p.resolve()
            for p in sorted((ROOT / "chapters").rglob("*.ipynb"))
            if ".ipynb_checkpoints" not in p.parts
        ]
        _start_execution(session, notebooks)


def pytest_collection_finish(session: pytest.Session) -> None:
    if not session.config.option.collectonly and any(
        isinstance(item, BookNotebook) for item in session.items
    ):
        _start_execution(session)


def pytest_sessionfinish(session: pytest.Session) -> None:
    for proc, tmp in session.__dict__.get("_initlab_background", {}).values():
        if proc.poll() is None:  # the session ended before it did
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        tmp.cleanup()


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if os.environ.get("INITLAB_NOTEBOOKS") != "nbval":
        kept: list[pytest.Item] = []
        replaced: set[Path] = set()
        for item in items:
            path = Path(str(item.fspath)).resolve()
            if type(item).__module__.startswith("nbval"):
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
def built_book(request: pytest.FixtureRequest) -> Path:
    """The book, built once per session (warnings as errors); returns _build/html. The build
    usually started in the background when the notebooks had run (see the docstring)."""
    proc, folder = _start_book_build(request.session)
    proc.wait()
    if proc.returncode != 0:
        text = (folder / "log.txt").read_text(errors="replace")
        pytest.fail(f"the book build failed:\n{text[-12000:]}", pytrace=False)
    return ROOT / "_build" / "html"
