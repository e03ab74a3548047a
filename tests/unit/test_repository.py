"""Guards on the repository itself: stored notebooks, the table of contents, the pins."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def tracked(pattern: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", pattern], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:  # not a git checkout (e.g. an sdist): fall back to the tree
        return [
            p for p in ROOT.rglob(pattern) if ".venv" not in p.parts and "_build" not in p.parts
        ]
    return [ROOT / line for line in out.stdout.split()]


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return files


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


def test_requirements_are_exact_pins() -> None:
    lines = [
        line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
    ]
    reqs = [line for line in lines if line]
    loose = [r for r in reqs if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+]+", r)]
    assert not loose, f"requirements must be exact pins: {loose}"
    pins = dict(r.split("==") for r in reqs)
    assert pins["torch"] == "2.13.0"
    assert pins["jupyter-book"] == "1.0.4.post1"
    assert pins["otter-grader"] == "7.0.0"


def test_book_config_has_the_required_settings() -> None:
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["only_build_toc_files"] is True
    for folder in (".venv", "_build", "exercises", "src", "tests", "benchmarks"):
        assert any(p.startswith(folder) for p in cfg["exclude_patterns"]), folder
    assert cfg["execute"]["timeout"] >= 120
    assert cfg["execute"]["allow_errors"] is False
    assert cfg["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    assert {"dollarmath", "amsmath"} <= set(cfg["parse"]["myst_enable_extensions"])
    assert cfg["bibtex_bibfiles"] == ["references.bib"]
    assert cfg["repository"]["branch"] == "main"
    assert cfg["launch_buttons"]["colab_url"] and cfg["launch_buttons"]["binderhub_url"]
    assert cfg["html"]["use_download_button"] is True


def test_ci_runs_make_test() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
