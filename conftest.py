"""Test-suite wiring: markers and options, order of the stages, the notebook items, the book.

pytest builds nothing and starts nothing in the background. What takes minutes is a make
target whose artifacts the tests read (scripts/build_book.py writes them):

* ``make notebooks`` executes every notebook under chapters/ (the book's pages and the
  student exercise notebooks) once, in parallel, into the book's notebook cache, and writes
  ``_build/notebooks.json``: per notebook its status, seconds, traceback and the SHA-256 of the
  file it executed, with the hash of the library (src/initlab, requirements.txt) it ran
  against. Each notebook is one test item (marker ``notebooks``) that reads its entry: it
  fails with the notebook's traceback, or, when the report is missing or older than the
  notebook or the library, with the command to run. It checks what ``--nbval-lax`` checks
  (every cell runs; cells tagged ``raises-exception`` may raise), in the kernel environment
  of the book (:data:`KERNEL_ENV` of scripts/build_book.py); nbval still works by hand:
  ``pytest --nbval-lax --nbval-current-env chapters/00_setup_check.ipynb``.
* ``make book`` builds ``_build/html`` (warnings as errors) and writes ``_build/book.log`` and
  ``_build/book.json`` (status, failures, the SHA-256 of every input); the book and site
  tests (``built_book``) read them the same way.

The exercise masters (``exercises/``) are not executed as notebooks: their solutions are graded
instead, sandboxed (tests/grading/test_grading.py) and in-process (test_misconceptions.py),
which runs every cell of the solved notebook and every test, public and hidden.

Markers, applied here by path (registered in pyproject.toml, ``--strict-markers``):
``notebooks`` (chapters/*.ipynb), ``book`` (tests/book), ``browser`` (tests/site),
``sandbox`` (tests/grading but test_misconceptions.py), ``slow`` (minutes of work: the
wheel install, the sandboxed grading, the small failing book). `make test` runs the stages
in three pytest runs around the two builds (see the Makefile); a plain ``pytest`` runs every
stage in the order of :data:`_STAGES` and needs both artifacts.
"""

import importlib.util
import json
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
    "src/initlab",  # the doctests
    "tests/grading/test_misconceptions.py",
    "tests/packaging",
    "chapters",
    "tests/grading",
    "tests/book",
    "tests/site",
)
_MARKERS = (  # (path prefix, marker), first match wins
    ("chapters/", "notebooks"),
    ("tests/grading/test_misconceptions.py", None),
    ("tests/grading/", "sandbox"),
    ("tests/book/", "book"),
    ("tests/site/", "browser"),
)
_SLOW = ("tests/packaging/test_install.py", "tests/grading/test_grading.py",
         "tests/grading/test_attacks.py", "tests/book/test_execution_behaviour.py")  # fmt: skip
# pytest-timeout: 600 s per test (pyproject.toml) but where a session fixture does minutes of
# work for the whole file on a loaded machine (the first test's setup pays for it).
_LONG_TIMEOUT = {
    "tests/grading/test_grading.py": 1500,
    "tests/grading/test_attacks.py": 1500,
    "tests/packaging/test_install.py": 1200,
}
_notebook_seconds: dict[str, float] = defaultdict(float)

NOTEBOOKS_CMD = "make notebooks"
BOOK_CMD = "make book"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("initlab", "the course's checks")
    group.addoption(
        "--require-browser",
        action="store_true",
        help="fail, instead of skipping, the browser checks of tests/site when Chromium is "
        "missing (make test sets it when CI=true)",
    )
    group.addoption(
        "--require-sandbox",
        action="store_true",
        help="fail, instead of skipping, the grading tests that need the bubblewrap sandbox "
        "(make test sets it when CI=true)",
    )
    group.addoption(
        "--site-dir",
        metavar="DIR",
        help="check the built site in DIR (a _build/html built elsewhere; its sources are read "
        "from two folders up) instead of this checkout's _build/html. Write --site-dir=DIR: "
        "pytest reads a separate DIR as a test path before it knows this option",
    )
    group.addoption(
        "--chromium",
        metavar="PATH",
        help="the Chromium executable of the browser checks (default /usr/bin/chromium, "
        "else chromium on PATH)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Hypothesis (property tests): no per-example deadline, the machines are shared and loaded.
    try:
        from hypothesis import settings
    except ImportError:  # pragma: no cover - requirements.txt pins it
        return
    settings.register_profile("initlab", deadline=None, print_blob=True)
    settings.load_profile("initlab")


def _relpath(item: pytest.Item) -> str:
    path = Path(str(item.fspath)).resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.as_posix()


def _stage(item: pytest.Item) -> int:
    rel = _relpath(item)
    return next((i for i, s in enumerate(_STAGES) if rel.startswith(s)), len(_STAGES))


# ---------------------------------------------------------------- the notebooks


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """One :class:`BookNotebook` per notebook under chapters/ (nbval's own items instead when
    ``--nbval`` or ``--nbval-lax`` is given)."""
    opt = parent.config.option
    if getattr(opt, "nbval", False) or getattr(opt, "nbval_lax", False):
        return None
    if (
        file_path.suffix == ".ipynb"
        and file_path.resolve().is_relative_to(ROOT / "chapters")
        and ".ipynb_checkpoints" not in file_path.parts
    ):
        return BookNotebookFile.from_parent(parent, path=file_path)
    return None


class BookNotebookFile(pytest.File):
    def collect(self) -> list[pytest.Item]:
        return [BookNotebook.from_parent(self, name="executes")]


class NotebookFailed(Exception):
    pass


def _notebook_report(config: pytest.Config) -> dict:
    """``_build/notebooks.json`` (read once per session); fails when it is missing or was made
    for another library or pins."""
    cached = config.stash.get(_REPORT_KEY, None)
    if cached is None:
        path = build_book.REPORT
        rel = path.relative_to(ROOT)
        if not path.is_file():
            cached = {"error": f"no {rel}: run `{NOTEBOOKS_CMD}` first (it executes every "
                               "notebook under chapters/ and writes the report these tests read)"}  # fmt: skip
        else:
            cached = json.loads(path.read_text())
            if cached.get("library") != build_book.source_hash():
                cached["error"] = (
                    f"{rel} is stale: src/initlab or requirements.txt changed since the notebooks "
                    f"ran; run `{NOTEBOOKS_CMD}`"
                )
        config.stash[_REPORT_KEY] = cached
    if "error" in cached:
        raise NotebookFailed(cached["error"])
    return cached["notebooks"]


_REPORT_KEY = pytest.StashKey[dict]()


class BookNotebook(pytest.Item):
    """A notebook, as ``make notebooks`` executed it (see the module docstring)."""

    def runtest(self) -> None:
        report = _notebook_report(self.config)
        name = self.path.resolve().relative_to(ROOT).as_posix()
        if name not in report:
            raise NotebookFailed(f"{name} is not in the notebook report: run `{NOTEBOOKS_CMD}`")
        result = report[name]
        if result.get("sha256") != build_book.file_hash(self.path):
            raise NotebookFailed(
                f"{name} changed since it was executed: run `{NOTEBOOKS_CMD}` (only what "
                "changed runs again)"
            )
        self.user_properties.append(("notebook_seconds", result["seconds"] or 0.0))
        if result["status"] == "failed":
            raise NotebookFailed(result["traceback"] or "the notebook failed to execute")

    def repr_failure(self, excinfo: pytest.ExceptionInfo) -> str:
        if isinstance(excinfo.value, NotebookFailed):
            text = build_book.ANSI.sub("", str(excinfo.value))
            return f"{self.path.resolve().relative_to(ROOT)}: {text}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, None, str]:
        rel = self.path.resolve().relative_to(ROOT)
        return self.path, None, f"{rel} (executed by `{NOTEBOOKS_CMD}`)"


# ---------------------------------------------------------------- markers, order, timeouts


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    for item in items:
        rel = _relpath(item)
        marker = next((m for prefix, m in _MARKERS if rel.startswith(prefix)), None)
        if marker:
            item.add_marker(marker)
        if rel.startswith(_SLOW):
            item.add_marker("slow")
        if rel in _LONG_TIMEOUT and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(_LONG_TIMEOUT[rel]))
    items.sort(key=_stage)  # stable: keeps each file's own order


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path, _, name = report.nodeid.partition("::")
    if path.endswith(".ipynb"):
        seconds = dict(report.user_properties).get("notebook_seconds")
        if name != "executes":  # an nbval cell: every phase counts
            _notebook_seconds[path] += report.duration
        elif seconds is not None and report.when == "call":  # its kernel time, from the report
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


# ---------------------------------------------------------------- the book


def book_problem() -> str | None:
    """Why ``_build/html`` cannot be checked (no build, a failed one, a stale one), with the
    command to run; None when it is the build of the current sources."""
    rel = build_book.BOOK_RECORD.relative_to(ROOT)
    if not build_book.BOOK_RECORD.is_file():
        return f"no book build ({rel} is missing): run `{BOOK_CMD}`"
    record = json.loads(build_book.BOOK_RECORD.read_text())
    if record.get("status") != "ok":
        log = build_book.BOOK_LOG
        tail = log.read_text(errors="replace")[-6000:] if log.is_file() else ""
        lines = "\n  ".join(record.get("failures") or [])
        return (
            f"the book build failed (exit {record.get('returncode')}):\n  {lines}\n"
            f"fix it and run `{BOOK_CMD}`; its log ({log.relative_to(ROOT)}) ends:\n{tail}"
        )
    now = build_book.input_hashes()
    built = record.get("inputs") or {}
    changed = sorted(k for k in now.keys() | built.keys() if now.get(k) != built.get(k))
    if changed:
        more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
        return (
            f"_build/html is stale: {', '.join(changed[:8])}{more} changed since the book was "
            f"built; run `{BOOK_CMD}`"
        )
    return None


@pytest.fixture(scope="session")
def built_book() -> Path:
    """``_build/html`` as ``make book`` built it (warnings as errors); fails with the command
    to run when there is no build, a failed one or one older than its sources."""
    problem = book_problem()
    if problem:
        pytest.fail(problem, pytrace=False)
    return ROOT / "_build" / "html"
