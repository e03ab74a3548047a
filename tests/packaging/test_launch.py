"""The launch paths agree and work: settings in one place, the Colab setup cell, the CI workflow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
import yaml
from _offline import ROOT, setup_cell_script

import initlab
from initlab.grading.colab import (
    SETUP_KEY,
    LaunchSettings,
    add_setup_cell,
    launch_settings,
    setup_cell_source,
)

SETTINGS = launch_settings(ROOT)
SCRIPT = setup_cell_script()
TOC_NOTEBOOKS = SCRIPT.toc_notebooks(ROOT)
STUDENT = ROOT / "chapters" / "03_xavier" / "exercises.ipynb"


def test_settings_come_from_config_and_version() -> None:
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert SETTINGS == LaunchSettings(
        cfg["repository"]["url"], cfg["repository"]["branch"], initlab.__version__
    )
    # The launch buttons use the same repository section; the version has one source.
    assert cfg["launch_buttons"]["colab_url"] and cfg["launch_buttons"]["binderhub_url"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "initlab.__version__"}


def test_bad_repository_settings_are_refused(tmp_path: Path) -> None:
    (tmp_path / "_config.yml").write_text("repository:\n  url: github.com/o/r\n  branch: main\n")
    with pytest.raises(ValueError, match="repository.url"):
        launch_settings(tmp_path)


def test_pyproject_never_caps_torch_and_has_the_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0]: d for d in project["dependencies"]}
    assert {"torch", "numpy", "scipy", "matplotlib", "tqdm", "scikit-learn"} <= set(deps)
    assert all(">=" in spec for spec in deps.values()), deps
    assert "<" not in deps["torch"] and "==" not in deps["torch"], deps["torch"]
    extras = project["optional-dependencies"]
    assert any(d.startswith("otter-grader") for d in extras["grading"])
    assert any(d.startswith("jupyter-book") for d in extras["book"])
    assert any(d.startswith("myst-nb") for d in extras["notebooks"])
    # The lower bounds are met by the exact, tested set in requirements.txt.
    pins = dict(
        line.split("#")[0].strip().split("==")
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line.split("#")[0]
    )
    for name, spec in deps.items():
        low = spec.split(">=")[1].split(",")[0]
        assert _version(pins[name]) >= _version(low), (name, pins[name], low)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3])


@pytest.mark.parametrize("path", TOC_NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_toc_notebook_starts_with_the_hidden_setup_cell(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.metadata.get(SETUP_KEY), f"{path.name}: first cell is not the setup cell"
    assert "remove-cell" in first.metadata.get("tags", []), "the setup cell must be hidden"
    student = "otter" in nb.metadata
    assert first.source == setup_cell_source(SETTINGS, path.name if student else None), (
        "stale setup cell: run python scripts/setup_cell.py (or python -m initlab.grading build)"
    )
    assert sum(c.metadata.get(SETUP_KEY, False) for c in nb.cells) == 1


def test_toc_lists_notebooks() -> None:
    assert len(TOC_NOTEBOOKS) >= 10
    assert STUDENT in TOC_NOTEBOOKS


def test_setup_script_check_passes_and_is_idempotent(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "setup_cell.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    nb = nbformat.read(ROOT / "chapters" / "00_setup_check.ipynb", as_version=4)
    assert add_setup_cell(nb, SETTINGS) is False  # already there: no change
    nb.cells.pop(0)
    assert add_setup_cell(nb, SETTINGS) is True
    text = nbformat.writes(nb)
    assert add_setup_cell(nb, SETTINGS) is False and nbformat.writes(nb) == text
    moved = nbformat.reads(text, as_version=4)
    moved.cells.append(moved.cells.pop(0))  # a setup cell out of place is moved back
    assert add_setup_cell(moved, SETTINGS) is True and nbformat.writes(moved) == text


def _run_setup_cell(source: str, monkeypatch: pytest.MonkeyPatch, colab: ModuleType | None):
    """Execute the cell; return (the commands it ran, the names it defined)."""
    ran: list[list[str]] = []

    def fake_run(cmd, **kwargs):
        ran.append(list(cmd))
        assert kwargs.get("check") is True
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    if colab is None:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    else:
        monkeypatch.setitem(sys.modules, "google.colab", colab)
        monkeypatch.setitem(sys.modules, "google.colab._message", colab._message)
    namespace: dict = {}
    exec(compile(source, "<setup cell>", "exec"), namespace)
    return ran, set(namespace) - {"__builtins__"}


def _stand_in_colab(notebook: dict) -> ModuleType:
    """What the setup cell and otter use of google.colab: blocking_request('get_ipynb')."""
    colab, message = ModuleType("google.colab"), ModuleType("google.colab._message")

    def blocking_request(request_type, request="", timeout_sec=5):
        assert request_type == "get_ipynb"
        return {"ipynb": notebook}

    message.blocking_request = blocking_request
    colab._message = message
    return colab


def test_setup_cell_does_nothing_outside_colab(monkeypatch: pytest.MonkeyPatch) -> None:
    for notebook in (None, "exercises.ipynb"):
        ran, names = _run_setup_cell(setup_cell_source(SETTINGS, notebook), monkeypatch, None)
        assert ran == [] and names == {"sys"}


def test_setup_cell_installs_from_the_repository_on_colab(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran, _ = _run_setup_cell(setup_cell_source(SETTINGS), monkeypatch, _stand_in_colab({}))
    assert ran == [
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            f"initlab[notebooks] @ git+{SETTINGS.url}@{SETTINGS.branch}",
        ]
    ]


def test_exercise_setup_cell_on_colab_installs_grading_and_writes_the_tests(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    student = json.loads(STUDENT.read_text())
    monkeypatch.chdir(tmp_path)
    source = nbformat.reads(STUDENT.read_text(), as_version=4).cells[0].source
    ran, _ = _run_setup_cell(source, monkeypatch, _stand_in_colab(student))
    assert ran[0][-1] == f"initlab[notebooks,grading] @ git+{SETTINGS.url}@{SETTINGS.branch}"
    tests = student["metadata"]["otter"]["tests"]
    assert sorted(p.name for p in (tmp_path / "tests").iterdir()) == sorted(
        f"{q}.py" for q in tests
    )
    for q, text in tests.items():
        assert (tmp_path / "tests" / f"{q}.py").read_text() == text
    assert nbformat.read(tmp_path / "exercises.ipynb", as_version=4).metadata.otter.tests == tests


def test_workflow_builds_with_make_book_and_publishes_the_html() -> None:
    path = ROOT / ".github" / "workflows" / "book.yml"
    flow = yaml.safe_load(path.read_text())
    steps = [s for job in flow["jobs"].values() for s in job.get("steps", [])]
    assert any(s.get("run", "").strip() == "make book" for s in steps)
    upload = [s for s in steps if "upload-pages-artifact" in s.get("uses", "")]
    assert upload and upload[0]["with"]["path"] == "_build/html"
    assert any("deploy-pages" in s.get("uses", "") for s in steps)
    assert flow["permissions"]["pages"] == "write"


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("check-jsonschema")
    env = {**os.environ, "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    cmd = [str(exe), "--builtin-schema", "vendor.github-workflows", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def test_workflow_is_valid_offline(tmp_path: Path) -> None:
    ok = _check_jsonschema(ROOT / ".github" / "workflows" / "book.yml")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    text = (ROOT / ".github" / "workflows" / "book.yml").read_text()
    broken = text.replace("    runs-on: ubuntu-latest\n", "", 1)  # a job with no runner
    assert broken != text
    (tmp_path / "broken.yml").write_text(broken)
    bad = _check_jsonschema(tmp_path / "broken.yml")
    assert bad.returncode != 0 and "runs-on" in bad.stdout + bad.stderr
