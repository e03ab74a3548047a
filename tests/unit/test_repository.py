"""Guards on the repository itself: stored notebooks, the table of contents, what the book
executes, the installed pins, what CI runs."""

import importlib.util
import json
import os
import re
import stat
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("build_book", ROOT / "scripts" / "build_book.py")
build_book = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_book)
toc_files = build_book.toc_files  # the one _toc.yml walker


def tracked(pattern: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", pattern], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:  # not a git checkout (e.g. an sdist): fall back to the tree
        return [
            p for p in ROOT.rglob(pattern) if ".venv" not in p.parts and "_build" not in p.parts
        ]
    return [ROOT / line for line in out.stdout.split()]


NOTEBOOKS = tracked("*.ipynb")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_notebook_stored_without_outputs(path: Path) -> None:
    nb = json.loads(path.read_text())
    dirty = [
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; clear them"


def test_every_chapter_notebook_is_in_the_toc() -> None:
    listed = set(toc_files())
    chapter_nbs = [p for p in NOTEBOOKS if p.relative_to(ROOT).parts[0] == "chapters"]
    assert chapter_nbs, "no notebooks under chapters/"
    missing = [p.relative_to(ROOT).with_suffix("").as_posix() for p in chapter_nbs]
    missing = [m for m in missing if m not in listed]
    assert not missing, f"notebooks missing from _toc.yml: {missing}"


def test_every_toc_entry_exists() -> None:
    absent = [
        f
        for f in toc_files()
        if not any((ROOT / f).with_suffix(s).exists() for s in (".md", ".ipynb"))
    ]
    assert not absent, f"_toc.yml lists files that do not exist: {absent}"


def _requirements() -> list[str]:
    lines = [
        line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
    ]
    return [line for line in lines if line]


def test_requirements_are_exact_pins_and_installed() -> None:
    """Every requirement names one version, and that version is what this environment runs
    (so `make setup` installed what requirements.txt says, and the tests test it)."""
    reqs = _requirements()
    loose = [r for r in reqs if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+]+", r)]
    assert not loose, f"requirements must be exact pins: {loose}"
    wrong = []
    for req in reqs:
        name, pin = req.split("==")
        installed = Version(metadata.version(re.sub(r"\[.*\]", "", name)))
        if installed.public != Version(pin).public:
            wrong.append(f"{name}: pinned {pin}, installed {installed}")
    assert not wrong, wrong


def test_book_executes_every_chapter_notebook_but_the_student_exercises() -> None:
    """What the build executes (scripts/build_book.py reads _toc.yml and _config.yml)."""
    executed = {p.relative_to(ROOT).as_posix() for p in build_book.executed_notebooks()}
    chapters = {p.relative_to(ROOT).as_posix() for p in NOTEBOOKS}
    chapters = {c for c in chapters if c.startswith("chapters/")}
    students = {c for c in chapters if Path(c).name.startswith("exercises")}
    assert students and executed == chapters - students
    assert not any(p.startswith("exercises/") for p in executed)  # masters: never rendered


def test_ci_script_runs_make_test_with_the_browser_checks(tmp_path: Path) -> None:
    """Run .ci/run with a recording `make` (and a `chromium`) first on PATH."""
    log = tmp_path / "make.log"
    for tool, body in [
        ("make", f'echo "$PWD|$*|CI=$CI" >> {log}\n'),
        ("chromium", "exit 0\n"),
    ]:
        exe = tmp_path / tool
        exe.write_text("#!/bin/sh\n" + body)
        exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    assert calls == [f"{ROOT}|test|CI=true"], calls  # CI=true: make passes --require-*
