"""Run a student notebook as on Google Colab, with stand-ins for what Colab provides.

    python _colab_session.py SERVED.ipynb RESULT.json   (in an empty working directory)

Stand-ins: the module ``google.colab`` (in ``sys.modules``, as Colab's kernel has it), its
``_message.blocking_request("get_ipynb")``, which returns SERVED as Colab's front end returns the
open notebook, and an IPython shell whose class lives in ``google.colab._shell`` (otter 7 tells
Colab by ``str(get_ipython())``). The setup cell's ``pip install`` is recorded, not run (this
environment already has the library). Every code cell runs in order in that shell; then
``grader.check`` runs for every question. RESULT gets what happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path


def install_stand_ins(served: dict) -> list[list[str]]:
    colab = types.ModuleType("google.colab")
    message = types.ModuleType("google.colab._message")
    shell_mod = types.ModuleType("google.colab._shell")

    def blocking_request(request_type, request="", timeout_sec=5, parent=None):
        if request_type != "get_ipynb":
            raise NotImplementedError(request_type)
        return {"ipynb": json.loads(json.dumps(served))}

    message.blocking_request = blocking_request
    colab._message, colab._shell = message, shell_mod
    try:
        import google  # a namespace package some libraries install

        google.colab = colab
    except ImportError:
        google = types.ModuleType("google")
        google.__path__ = []
        google.colab = colab
        sys.modules["google"] = google
    sys.modules.update(
        {"google.colab": colab, "google.colab._message": message, "google.colab._shell": shell_mod}
    )

    pip_calls: list[list[str]] = []
    real_run = subprocess.run

    def run(cmd, *args, **kwargs):
        if isinstance(cmd, list | tuple) and "pip" in cmd:
            pip_calls.append([str(c) for c in cmd])
            return subprocess.CompletedProcess(cmd, 0)
        return real_run(cmd, *args, **kwargs)

    subprocess.run = run
    return pip_calls


def main(served_path: str, result_path: str) -> int:
    import nbformat

    start_files = sorted(os.listdir("."))
    served = json.loads(Path(served_path).read_text(encoding="utf-8"))
    pip_calls = install_stand_ins(served)

    from IPython.core.interactiveshell import InteractiveShell

    Shell = type("Shell", (InteractiveShell,), {"__module__": "google.colab._shell"})
    shell = Shell.instance()
    errors = []
    for i, cell in enumerate(nbformat.reads(json.dumps(served), as_version=4).cells):
        if cell.cell_type != "code":
            continue
        outcome = shell.run_cell(cell.source, silent=True)
        if not outcome.success:
            errors.append(f"cell {i}: {outcome.error_in_exec or outcome.error_before_exec!r}")
    questions = sorted(served["metadata"]["otter"]["tests"])
    shell.user_ns["__questions"] = questions
    shell.run_cell(
        "__checks = {q: grader.check(q) for q in __questions}\n"
        "from otter.check.utils import IPythonInterpreter as __Interp\n"
        "__colab = grader.interpreter is __Interp.COLAB",
        silent=True,
    )
    checks = shell.user_ns.get("__checks", {})
    result = {
        "start_files": start_files,
        "pip_calls": pip_calls,
        "errors": errors,
        "otter_on_colab_path": bool(shell.user_ns.get("__colab")),
        "tests_written": sorted(os.listdir("tests")) if os.path.isdir("tests") else [],
        "grades": {q: float(r.grade) for q, r in checks.items()},
    }
    Path(result_path).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
