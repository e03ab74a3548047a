"""initlab installs with one pip command; Binder's requirements take PyTorch's CPU wheel.

Nothing here reaches the internet: pip installs from this machine's local package copies only
(``_offline.offline_pip_env``), with network access closed off.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from _offline import ROOT, offline_pip_env

import initlab

PUBLIC_MODULES = [  # every public submodule; grading needs the [grading] extra
    m for m in initlab.__all__ if m != "grading" and importlib.util.find_spec(f"initlab.{m}")
]
PINS = dict(
    line.split("#")[0].strip().split("==")
    for line in (ROOT / "requirements.txt").read_text().splitlines()
    if "==" in line.split("#")[0]
)


def _run(
    cmd: list[str], env: dict[str, str] | None = None, pythonpath: str | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """Run ``cmd``; this process's PYTHONPATH never leaks into the fresh environment."""
    env = {k: v for k, v in (env or os.environ).items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, **kwargs)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the wheel built from the repository and its dependencies."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # build from a copy: an in-tree build would leave build/ in the checkout
    tracked = _run(["git", "ls-files", "pyproject.toml", "README.md", "src"], cwd=ROOT).stdout
    for rel in tracked.split():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    env = offline_pip_env()
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp / "dist"), str(src)],
        env=env,
    )
    (wheel,) = (tmp / "dist").glob("initlab-*.whl")
    assert wheel.name.startswith(f"initlab-{initlab.__version__}-"), wheel.name
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    start = time.perf_counter()
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-compile"]
    cmd += ["-c", str(ROOT / "requirements.txt")]
    _run([*cmd, str(wheel)], env=env)
    print(
        f"\nfresh venv: pip install -c requirements.txt {wheel.name}: "
        f"{time.perf_counter() - start:.1f} s"
    )
    return venv


def test_wheel_installs_with_its_declared_dependencies(fresh_venv: Path) -> None:
    code = (
        "import importlib, importlib.metadata as md, json, initlab, torch\n"
        f"mods = {PUBLIC_MODULES!r}\n"
        "for m in mods: importlib.import_module('initlab.' + m)\n"
        "print(json.dumps({'version': initlab.__version__, 'dist': md.version('initlab'),\n"
        "  'file': initlab.__file__, 'torch': torch.__version__, 'cuda': torch.version.cuda,\n"
        "  'pkgs': sorted(d.metadata['Name'].lower() for d in md.distributions())}))\n"
    )
    proc = _run([str(fresh_venv / "bin" / "python"), "-W", "error", "-c", code], cwd=fresh_venv)
    info = json.loads(proc.stdout)
    assert info["version"] == info["dist"] == initlab.__version__
    assert str(fresh_venv) in info["file"], "imported initlab from outside the fresh venv"
    assert info["torch"].split("+")[0] == PINS["torch"], info["torch"]
    assert info["cuda"] is None, "a CUDA build of torch was installed"
    assert not [p for p in info["pkgs"] if p.startswith("nvidia")], info["pkgs"]
    for name in ("numpy", "scipy", "matplotlib", "scikit-learn", "tqdm"):
        assert name in info["pkgs"], name
    assert "otter-grader" not in info["pkgs"] and "jupyter-book" not in info["pkgs"]


def test_setup_check_notebook_runs_in_the_fresh_venv(fresh_venv: Path, tmp_path: Path) -> None:
    """Every code cell of chapters/00_setup_check.ipynb, in order, in the fresh environment.

    The book's ``myst_nb.glue`` (the ``[notebooks]`` extra, for the rendered page) is a stand-in
    that keeps the glued values, so the library and its declared dependencies alone are tested.
    """
    nb = nbformat.read(ROOT / "chapters" / "00_setup_check.ipynb", as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    assert not any(line.lstrip().startswith(("%", "!")) for c in cells for line in c.splitlines())
    (tmp_path / "myst_nb.py").write_text(
        "GLUED = {}\n\ndef glue(name, value, display=True):\n    GLUED[name] = value\n"
    )
    script = "\n\n".join([*cells, "import myst_nb\nprint('GLUED', sorted(myst_nb.GLUED))"])
    (tmp_path / "notebook.py").write_text(script)
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = _run(
        [str(fresh_venv / "bin" / "python"), "-W", "error", str(tmp_path / "notebook.py")],
        cwd=ROOT / "chapters",
        env=env,
        pythonpath=str(tmp_path),
    )
    print(f"\n00_setup_check in the fresh venv: {time.perf_counter() - start:.1f} s")
    glued = sorted(set(re.findall(r"glue\(\s*[\"'](\w+)[\"']", "\n".join(cells))))
    assert glued and f"GLUED {glued}" in proc.stdout, (glued, proc.stdout[-2000:])


def _requirement_lines(path: Path) -> list[str]:
    """The lines of a requirements file, nested ``-r`` files inlined (pip's relative rule)."""
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):
            lines += _requirement_lines(path.parent / line[3:].strip())
        else:
            lines.append(line)
    return lines


def test_binder_requirements_take_the_cpu_wheel_and_the_pins() -> None:
    binder = ROOT / "binder"
    lines = _requirement_lines(binder / "requirements.txt")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    torch = [line for line in lines if re.match(r"torch\b", line)]
    assert f"torch=={PINS['torch']}+cpu" in torch, torch
    assert all(line in (f"torch=={PINS['torch']}+cpu", f"torch=={PINS['torch']}") for line in torch)
    for name, version in PINS.items():  # every pin of the course's .venv, unchanged
        assert f"{name}=={version}" in lines, name
    assert (binder / "runtime.txt").read_text().strip() == "python-3.11"
    post = binder / "postBuild"
    assert os.access(post, os.X_OK), "postBuild must be executable"
    body = post.read_text()
    assert body.startswith("#!/bin/bash") and "set -e" in body
    assert re.search(r"^python -m pip install .*-e \.$", body, re.M), body


def test_binder_torch_lines_resolve_to_the_cpu_wheel(tmp_path: Path) -> None:
    """pip resolves Binder's torch lines (and the root pin they meet) to a +cpu wheel, no CUDA.

    Offline: PyTorch's CPU index is replaced by this machine's local copy of the same wheel.
    """
    torch = [
        line
        for line in _requirement_lines(ROOT / "binder" / "requirements.txt")
        if re.match(r"torch\b", line)
    ]
    (tmp_path / "req.txt").write_text("\n".join(torch) + "\n")
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
    _run([*cmd, "--report", str(report), "-r", str(tmp_path / "req.txt")], env=offline_pip_env())
    chosen = {
        item["metadata"]["name"].lower(): item for item in json.loads(report.read_text())["install"]
    }
    wheel = chosen["torch"]["download_info"]["url"].rsplit("/", 1)[-1]
    assert chosen["torch"]["metadata"]["version"] == f"{PINS['torch']}+cpu", wheel
    assert "%2Bcpu" in wheel or "+cpu" in wheel, wheel
    assert not [n for n in chosen if n.startswith(("nvidia", "triton"))], sorted(chosen)
