"""The grader's trust boundary is visible in the tree (issue 24): the driver that runs beside
submission code imports nothing of the grader's side, stated as an import-linter contract
(pyproject.toml ``[tool.importlinter]``) and checked here, statically and at run time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GRADER_SIDE = ("_grade", "_session", "_build", "_bwrap", "_cli", "checks", "_experiments")


def test_the_import_contract_is_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "1 kept, 0 broken" in proc.stdout, proc.stdout[-3000:]


def test_importing_the_driver_loads_nothing_of_the_grader() -> None:
    code = (
        "import sys, initlab.grading._sandbox\n"
        f"bad = [m for m in {GRADER_SIDE!r} if 'initlab.grading.' + m in sys.modules]\n"
        "bad += [m for m in ('otter', 'nbformat') if m in sys.modules]\n"
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]


def test_the_contract_would_catch_a_break(tmp_path: Path) -> None:
    """The contract is not vacuous: a driver that imports the grader breaks it."""
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "initlab", copy / "initlab")
    driver = copy / "initlab" / "grading" / "_sandbox.py"
    driver.write_text(driver.read_text() + "\nfrom . import _grade  # noqa\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    lint = Path(sys.executable).with_name("lint-imports")
    env = {"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([str(lint)], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip
    assert proc.returncode != 0 and "BROKEN" in proc.stdout, proc.stdout[-2000:]
