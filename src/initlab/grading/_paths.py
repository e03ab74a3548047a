"""Where the exercise sources, student notebooks and autograder bundles live."""

from __future__ import annotations

import os
import re
from pathlib import Path

STUDENT_NOTEBOOK = "exercises.ipynb"
AUTOGRADER_ZIP = "autograder.zip"


def repo_root() -> Path:
    """Return the course repository's root.

    ``$INITLAB_ROOT`` if set; otherwise the checkout this package was installed from (editable
    install), or the current directory if that holds an ``exercises/`` folder.
    """
    env = os.environ.get("INITLAB_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[3]
    if (here / "exercises").is_dir():
        return here
    return Path.cwd()


def masters(root: Path | None = None) -> dict[str, Path]:
    """Return ``{chapter: master notebook}`` for every ``exercises/<chapter>.ipynb``."""
    root = root or repo_root()
    return {
        p.stem: p
        for p in sorted((root / "exercises").glob("*.ipynb"))
        if not p.stem.startswith("_")
    }


_PART = re.compile(r"^(\d+)([a-z])_(.+)$")


def student_notebook(chapter: str, root: Path | None = None) -> Path:
    """Return where the student notebook of exercise set ``chapter`` goes.

    ``chapters/<chapter>/exercises.ipynb``; a chapter with several sets names them with a
    letter after its number, so ``04a_beyond_xavier`` goes to
    ``chapters/04_beyond_xavier/exercises_a.ipynb``.
    """
    chapters = (root or repo_root()) / "chapters"
    part = _PART.match(chapter)
    if part and not (chapters / chapter).is_dir():
        number, letter, name = part.groups()
        return chapters / f"{number}_{name}" / f"exercises_{letter}.ipynb"
    return chapters / chapter / STUDENT_NOTEBOOK


def autograder_zip(chapter: str, root: Path | None = None) -> Path:
    """Return ``exercises/_autograder/<chapter>/autograder.zip`` (ignored by git)."""
    return (root or repo_root()) / "exercises" / "_autograder" / chapter / AUTOGRADER_ZIP
