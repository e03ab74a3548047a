"""The book's execution settings, tested by what they do: a notebook that raises, or that
prints to stderr (a warning), fails the build (`_config.yml`: ``allow_errors: false``,
``nb_execution_raise_on_error``, ``stderr_output: warn`` with ``-W``)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _notebook(source: str) -> str:
    cell = {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": []}
    return json.dumps(
        {
            "cells": [{**cell, "source": source}],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )


def start_build(tmp: Path) -> subprocess.Popen:
    """Write a two-notebook book (one raises, one warns) under ``tmp`` and start building it
    with the course's settings; the log goes to ``tmp / "log.txt"`` (the fixture
    ``tiny_book_build`` waits for it)."""
    book = tmp / "book"
    book.mkdir()
    for name in ("_config.yml", "references.bib"):
        shutil.copy(ROOT / name, book / name)
    shutil.copytree(ROOT / "_ext", book / "_ext")
    (book / "intro.md").write_text("# Intro\n")
    (book / "b_raises.ipynb").write_text(_notebook("1 / 0"))
    (book / "a_warns.ipynb").write_text(
        _notebook("import warnings\nwarnings.warn('deliberate', UserWarning)")
    )
    (book / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n  - file: a_warns\n  - file: b_raises\n"
    )
    with open(tmp / "log.txt", "w") as log:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "jupyter-book"), "build", str(book), "-W", "-n",
             "--keep-going"],
            stdout=log, stderr=subprocess.STDOUT, cwd=book,
        )  # fmt: skip


def test_a_raising_or_warning_notebook_fails_the_build(tiny_book_build) -> None:
    returncode, log = tiny_book_build  # built when asked for (tests/book/conftest.py)
    assert returncode != 0, log[-3000:]
    assert "b_raises.ipynb: WARNING: Executing notebook failed" in log, log[-3000:]
    assert "ZeroDivisionError" in log
    warned = [line for line in log.splitlines() if "a_warns.ipynb" in line and "WARNING" in line]
    assert any("stderr" in line.lower() for line in warned), warned or log[-3000:]
