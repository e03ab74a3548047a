"""Run the course's notebooks on Google Colab: the setup cell, and otter's tests there.

Colab opens a notebook straight from the repository, with nothing installed and no file beside
it. So every chapter and exercise notebook starts with a *setup cell* that, only when
``"google.colab" in sys.modules``, pip-installs the library from the book's repository (with
otter-grader for the exercises) and does nothing anywhere else (``make lab``, Binder, the book
build). It is tagged ``remove-cell``, so the rendered page does not show it.

``grader.check`` on Colab: otter 7 recognises Colab and there reads tests only from a ``tests/``
folder of test files (it refuses the notebook-metadata tests our student notebooks carry, because
Colab keeps the notebook in the browser, not on disk). The exercise setup cell therefore calls
:func:`write_otter_files`, which asks Colab's front end for the open notebook
(``google.colab._message.blocking_request("get_ipynb")``), writes it to the working folder under
the name its ``otter.Notebook(...)`` cell opens, and writes its public tests, exactly as stored in
its metadata, as otter test files into ``tests/``. Otter's own Colab code path does the rest.

Where the setup cell installs from is set in one place: ``repository.url`` and
``repository.branch`` in ``_config.yml`` (which the book's launch buttons use too) and
``initlab.__version__``. ``scripts/setup_cell.py`` writes the cell into the chapter notebooks;
``python -m initlab.grading build`` writes it into the student notebooks.

Example:
    >>> settings = LaunchSettings("https://github.com/o/r", "main", "0.1.0")
    >>> settings.requirement(("grading",))
    'initlab[grading] @ git+https://github.com/o/r@main'
    >>> "google.colab" in setup_cell_source(settings, "exercises.ipynb")
    True
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SETUP_KEY = "initlab_setup"  # cell metadata key that marks the setup cell
HIDE_TAG = "remove-cell"


@dataclass(frozen=True)
class LaunchSettings:
    """Where learners' environments get the course from: repository URL, branch (or tag), version."""

    url: str
    branch: str
    version: str

    def requirement(self, extras: tuple[str, ...]) -> str:
        """The pip requirement that installs the library from the repository at ``branch``."""
        extra = f"[{','.join(extras)}]" if extras else ""
        return f"initlab{extra} @ git+{self.url}@{self.branch}"


def launch_settings(root: Path | None = None) -> LaunchSettings:
    """Read the repository URL and branch from ``_config.yml`` and the version from initlab."""
    import yaml

    from initlab import __version__

    from ._paths import repo_root

    path = (root or repo_root()) / "_config.yml"
    if not path.is_file():
        raise FileNotFoundError(f"no _config.yml at {path}: the book's settings are missing")
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    repo = config.get("repository") or {}
    url, branch = str(repo.get("url", "")).rstrip("/"), str(repo.get("branch", ""))
    if not url.startswith("https://") or not branch:
        raise ValueError(
            f"_config.yml: repository.url must be an https URL and repository.branch a branch or "
            f"tag, got url={url!r}, branch={branch!r}"
        )
    return LaunchSettings(url, branch, __version__)


def setup_cell_source(settings: LaunchSettings, notebook: str | None = None) -> str:
    """The setup cell's code; ``notebook`` (the student notebook's file name) for exercises.

    An exercise notebook's cell also installs otter-grader (``initlab[grading]``) and writes
    the notebook and its public tests where otter looks for them on Colab.
    """
    extras = ("notebooks", "grading") if notebook else ("notebooks",)
    lines = [
        f"# Colab only: install the course's library, initlab {settings.version}, from the book's",
        "# repository. Anywhere else (make lab, Binder, the book build) this cell does nothing.",
        "import sys",
        "",
        'if "google.colab" in sys.modules:',
        "    import importlib",
        "    import subprocess",
        "",
        f'    requirement = "{settings.requirement(extras)}"',
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", requirement], check=True)',
        "    importlib.invalidate_caches()",
    ]
    if notebook:
        lines += [
            "    from initlab.grading.colab import write_otter_files",
            "",
            f'    write_otter_files("{notebook}")',
        ]
    return "\n".join(lines)


def is_setup_cell(cell: Any) -> bool:
    """Whether ``cell`` is a setup cell written by :func:`add_setup_cell`."""
    return cell.get("cell_type") == "code" and bool(cell.get("metadata", {}).get(SETUP_KEY))


def add_setup_cell(nb: Any, settings: LaunchSettings, notebook: str | None = None) -> bool:
    """Make the setup cell ``nb``'s first cell (insert it, or update one already there).

    Idempotent: returns whether ``nb`` changed. Setup cells found elsewhere in ``nb`` are
    removed, so there is exactly one, first.
    """
    import nbformat

    source = setup_cell_source(settings, notebook)
    cells = nb.cells
    current = cells[0] if cells and is_setup_cell(cells[0]) else None
    others = [i for i, c in enumerate(cells) if is_setup_cell(c) and c is not current]
    if (
        current is not None
        and not others
        and current.source == source
        and HIDE_TAG in current.metadata.get("tags", [])
    ):
        return False
    for i in reversed(others):
        del cells[i]
    if current is None:
        current = nbformat.v4.new_code_cell(source)
        if "id" in current:  # nbformat >= 4.5: a fixed id keeps reruns byte-identical
            current.id = "colab-setup"
        cells.insert(0, current)
    current.source = source
    current.metadata[SETUP_KEY] = True
    tags = current.metadata.setdefault("tags", [])
    if HIDE_TAG not in tags:
        tags.append(HIDE_TAG)
    return True


def write_otter_files(notebook: str, tests_dir: str = "tests", timeout: float = 60) -> list[Path]:
    """On Colab: write the open notebook and its public tests where otter 7 reads them there.

    Asks Colab's front end for the notebook (``google.colab._message.blocking_request``),
    writes it to ``notebook`` in the working folder (``otter.Notebook(notebook)`` reads its
    metadata) and each test stored in its metadata (``metadata.otter.tests``, the public tests
    only: hidden tests never reach a student notebook) to ``tests_dir/<question>.py``, the
    layout otter's test-file mode reads. Returns the files written.

    Raises:
        RuntimeError: not on Colab, or Colab did not return the notebook.
        ValueError: the notebook carries no otter tests.
    """
    try:
        from google.colab import _message  # type: ignore[import-not-found]
    except ImportError as exc:
        raise RuntimeError("write_otter_files runs on Google Colab only") from exc
    import nbformat

    reply = _message.blocking_request("get_ipynb", request="", timeout_sec=timeout)
    if not isinstance(reply, dict) or not isinstance(reply.get("ipynb"), dict):
        raise RuntimeError(f"Colab did not return the notebook (reply: {str(reply)[:200]!r})")
    with warnings.catch_warnings():  # Colab's copy may lack cell ids; nbformat adds them
        warnings.simplefilter("ignore")
        nb = nbformat.reads(json.dumps(reply["ipynb"]), as_version=4)
    tests = nb.metadata.get("otter", {}).get("tests", {})
    if not tests:
        raise ValueError(f"notebook={notebook!r}: its metadata holds no otter tests")
    folder = Path(tests_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, test in tests.items():
        path = folder / f"{name}.py"
        if isinstance(test, str):
            path.write_text(test, encoding="utf-8")
        else:  # otter's OK format, as `otter assign` writes it into a test file
            path.write_text(f"OK_FORMAT = True\n\ntest = {test!r}\n", encoding="utf-8")
        written.append(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nbformat.write(nb, notebook)
    print(f"otter: wrote {notebook} and {len(written)} test files to {folder}/", file=sys.stdout)
    return [Path(notebook), *written]
