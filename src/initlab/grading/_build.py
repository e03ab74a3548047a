"""``python -m initlab.grading build``: student notebooks and autograder bundles from masters.

For each master ``exercises/<chapter>.ipynb`` (otter-assign format) this runs Otter Assign
(which also grades the solutions and fails unless they get full marks; ``run_tests=False``
skips that, for callers that check the masters themselves, as the test suite does), then
writes

* ``chapters/<chapter>/exercises.ipynb``: the student notebook, normalised so that a rebuild is
  byte-identical (cell ids derived from index and content, no outputs, no execution counts,
  sorted keys, ``mystnb.execution_mode: off`` so the book renders it without running it);
* ``exercises/_autograder/<chapter>/autograder.zip``: otter's bundle with all tests, hidden ones
  included (the folder is ignored by git).

Before writing, the student notebook is checked for leaks: no ``BEGIN SOLUTION`` marker, no
hidden test, no line of a solution.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

from ._paths import STUDENT_NOTEBOOK, autograder_zip, masters, repo_root, student_notebook
from .colab import add_setup_cell, launch_settings
from .markers import LEAK_MARKERS, solution_lines


class LeakError(RuntimeError):
    """A generated student notebook contains solution or hidden-test text."""


_ASSIGN = """
import sys
from otter.assign import main
run_tests, *paths = sys.argv[1:]
for master, out in zip(paths[::2], paths[1::2]):
    print("initlab: assigning", master, flush=True)
    main(master, out, no_pdfs=True, no_run_tests=run_tests == "0")
"""


def _run_assign(jobs: list[tuple[Path, Path]], run_tests: bool = True) -> list[tuple[Path, Path]]:
    """Run Otter Assign on each ``(master, out)`` in one child process; return, for each,
    (student notebook, autograder zip).

    A child process keeps otter's import-time warnings and its never-closed logging socket out
    of the caller (pytest runs with warnings as errors); one for several masters imports otter
    once (about 3.5 s of CPU).
    """
    cmd = [sys.executable, "-c", _ASSIGN, "1" if run_tests else "0"]
    cmd += [str(p) for pair in jobs for p in pair]
    env = {**os.environ, "INITLAB_PROGRESS": "0", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        started = re.findall(r"^initlab: assigning (.+)$", proc.stdout, flags=re.M)
        raise RuntimeError(
            f"otter assign failed for {started[-1] if started else jobs[0][0]} (do the "
            f"solutions pass every test?):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    made = []
    for master, out in jobs:
        zips = sorted((out / "autograder").glob("*.zip"))
        if len(zips) != 1:
            raise RuntimeError(f"otter assign wrote {len(zips)} autograder zips for {master}")
        made.append((out / "student" / master.name, zips[0]))
    return made


def check_no_leaks(student: nbformat.NotebookNode, master: nbformat.NotebookNode) -> None:
    """Raise :class:`LeakError` if ``student`` holds a marker, a hidden test or a solution line."""
    text = nbformat.writes(student)
    for marker in LEAK_MARKERS:
        if marker in text:
            raise LeakError(f"student notebook contains {marker!r}")
    for line in solution_lines(master):
        if line in text:
            raise LeakError(f"student notebook contains the solution line {line!r}")
    tests = student.metadata.get("otter", {}).get("tests", {})
    for name, source in tests.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.keyword) and node.arg == "hidden":
                if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                    raise LeakError(f"test {name} in the student notebook is not public")


def normalise(
    nb: nbformat.NotebookNode, master_name: str, student_name: str = STUDENT_NOTEBOOK
) -> str:
    """Return the student notebook as reproducible JSON text.

    Otter's init cell is pointed at the student notebook's own file name and tagged
    ``remove-cell``, so the book page starts with the exercise's title (the downloaded
    notebook keeps the cell).
    """
    nb.metadata.pop("widgets", None)
    nb.metadata["mystnb"] = {"execution_mode": "off"}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.source = cell.source.replace(
                f'otter.Notebook("{master_name}")', f'otter.Notebook("{student_name}")'
            ).replace("import otter\ngrader = ", "import otter\n\ngrader = ")  # ruff format
            if "otter.Notebook(" in cell.source:
                tags = cell.metadata.setdefault("tags", [])
                if "remove-cell" not in tags:
                    tags.append("remove-cell")
        cell.metadata.pop("execution", None)
        digest = hashlib.sha1(f"{cell.cell_type}\n{cell.source}".encode()).hexdigest()[:8]
        cell.id = f"c{i:02d}-{digest}"
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def build_chapter(
    chapter: str,
    master: Path,
    out_dir: Path,
    student_name: str = STUDENT_NOTEBOOK,
    run_tests: bool = True,
) -> tuple[str, Path]:
    """Build one chapter into ``out_dir``; return (student notebook text, autograder zip path)."""
    ((stu, zip_path),) = _run_assign([(master, out_dir)], run_tests)
    return _student_text(stu, master, student_name), zip_path


def _student_text(stu: Path, master: Path, student_name: str) -> str:
    """Otter's student notebook, checked for leaks, with the Colab setup cell, normalised."""
    student = nbformat.read(stu, as_version=4)
    check_no_leaks(student, nbformat.read(master, as_version=4))
    add_setup_cell(student, launch_settings(), student_name)  # Colab setup cell, first
    return normalise(student, master.name, student_name)


def _stamp(chapter: str, master: Path, root: Path) -> tuple[Path, str]:
    """Return (stamp file beside the bundle, hash of the master and of initlab.grading)."""
    digest = hashlib.sha256(master.read_bytes())
    for src in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(src.read_bytes())
    return autograder_zip(chapter, root).with_name("master.sha256"), digest.hexdigest()


def _bundle_stamp(chapter: str, root: Path) -> Path:
    return autograder_zip(chapter, root).with_name("autograder.sha256")


def bundle_digest_ok(chapter: str, root: Path, data: bytes | None = None) -> bool:
    """Whether the bundle (or ``data``, its bytes) has the sha256 that ``build`` recorded."""
    stamp, bundle = _bundle_stamp(chapter, root), autograder_zip(chapter, root)
    if data is None:
        if not bundle.is_file():
            return False
        data = bundle.read_bytes()
    return stamp.is_file() and stamp.read_text().strip() == hashlib.sha256(data).hexdigest()


def up_to_date(chapter: str, master: Path, root: Path, tested: bool = False) -> bool:
    """Whether the chapter was built here from this master and this package (and, with
    ``tested``, by a build that graded the solutions)."""
    stamp, digest = _stamp(chapter, master, root)
    if not (student_notebook(chapter, root).is_file() and bundle_digest_ok(chapter, root)):
        return False
    words = stamp.read_text().split() if stamp.is_file() else []
    return words[:1] == [digest] and (not tested or words[1:] == ["tested"])


def build(
    chapters: list[str] | None = None,
    check: bool = False,
    root: Path | None = None,
    force: bool = False,
    run_tests: bool = True,
    jobs: int | None = None,
) -> int:
    """Build every (or the named) chapter; with ``check`` only compare. Return an exit code.

    A chapter whose master (and this package) did not change since its last build here, and
    whose student notebook and bundle exist, is skipped unless ``force`` or ``check`` (or
    ``run_tests`` and its last build did not grade the solutions). Up to
    ``jobs`` (default: the number of CPUs) chapters run Otter Assign at once; the files are
    written, and the report printed, in chapter order.
    """
    root = root or repo_root()
    found = masters(root)
    wanted = chapters or list(found)
    unknown = [c for c in wanted if c not in found]
    if unknown:
        raise ValueError(f"chapters {unknown} have no master in exercises/; known: {list(found)}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    todo = [c for c in wanted if check or force or not up_to_date(c, found[c], root, run_tests)]
    workers = max(1, min(len(todo), jobs or os.cpu_count() or 1))
    groups = [todo[i::workers] for i in range(workers)]  # one otter process per group
    with tempfile.TemporaryDirectory(prefix="initlab-build-") as tmp:

        def assign(group: list[str]) -> list[tuple[Path, Path]]:
            return _run_assign([(found[c], Path(tmp) / c) for c in group], run_tests)

        built = {}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for group, made in zip(groups, pool.map(assign, groups), strict=True):
                for chapter, (stu, zip_path) in zip(group, made, strict=True):
                    name = student_notebook(chapter, root).name
                    built[chapter] = (_student_text(stu, found[chapter], name), zip_path)
        return _write(wanted, built, check, root, run_tests)


def _write(
    wanted: list[str], built: dict[str, tuple[str, Path]], check: bool, root: Path, tested: bool
) -> int:
    """Write (or, with ``check``, compare) what ``build`` made, in chapter order."""
    found = masters(root)
    status = 0
    for chapter in wanted:
        if chapter not in built:
            print(f"{chapter}: up to date ({student_notebook(chapter, root).relative_to(root)})")
            continue
        target = student_notebook(chapter, root)
        text, zip_path = built[chapter]
        if check:
            same = target.is_file() and target.read_text(encoding="utf-8") == text
            print(f"{chapter}: {'up to date' if same else 'OUT OF DATE'} ({target})")
            status |= 0 if same else 1
            bundle = autograder_zip(chapter, root)
            if bundle.exists() and not bundle_digest_ok(chapter, root):
                print(
                    f"{chapter}: MODIFIED BUNDLE ({bundle} does not match the hash build recorded)"
                )
                status |= 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        bundle = autograder_zip(chapter, root)
        bundle.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(zip_path, bundle)
        digest_of_bundle = hashlib.sha256(bundle.read_bytes()).hexdigest()
        _bundle_stamp(chapter, root).write_text(digest_of_bundle + "\n")
        stamp, digest = _stamp(chapter, found[chapter], root)
        stamp.write_text(f"{digest} {'tested' if tested else 'untested'}\n")
        print(f"{chapter}: wrote {target.relative_to(root)} and {bundle.relative_to(root)}")
    return status
