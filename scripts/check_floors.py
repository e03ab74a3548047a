"""Run the library's unit tests at the lowest versions pyproject.toml admits.

    python scripts/check_floors.py [--keep DIR]

Creates a virtual environment with exactly the floor of every runtime dependency
(``numpy>=2.0.2`` -> ``numpy==2.0.2``; torch at the pin in requirements.txt, which must meet its
floor: the CPU build), plus pytest and what tests/unit import, and runs tests/unit there against
this checkout's ``src``. Uses pip as configured (a package registry or a local mirror). Run it
after lowering or raising a floor; exit status is pytest's.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_TOOLS = ["pytest", "hypothesis", "pytest-timeout", "pyyaml", "ipython"]


def floors() -> list[str]:
    """``name==floor`` for every runtime dependency (torch: the pinned version)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(
        line.split("#")[0].strip().split("==")
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line.split("#")[0]
    )
    out = []
    for dep in deps:
        name, low = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", dep.replace(" ", "")).groups()
        out.append(f"{name}=={pins[name] if name == 'torch' else low}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="build the environment here and keep it")
    args = parser.parse_args()
    where = args.keep or Path(tempfile.mkdtemp(prefix="initlab-floors-"))
    py = where / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    wanted = floors()
    print("installing:", " ".join(wanted))
    pip = [str(py), "-m", "pip", "install", "--quiet", "--no-compile", *wanted, *TEST_TOOLS]
    subprocess.run(pip, check=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "INITLAB_PROGRESS": "0"}
    cmd = [str(py), "-m", "pytest", "tests/unit", "-q", "-p", "no:cacheprovider"]
    cmd += ["-o", "addopts=--import-mode=importlib"]  # no nbval there
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
