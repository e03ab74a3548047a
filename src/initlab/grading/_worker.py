"""Grade one submission (run as ``python -m initlab.grading._worker``, one process each).

The parent (:mod:`initlab.grading._grade`) starts this in its own session with a wall-clock
limit and reads only the JSON file this process writes; the submission's stdout is ignored.

Steps: read the notebook; put a guard cell before the submission's first cell (it imports
:mod:`initlab.grading.checks`, which binds the functions the tests use, and records what the
tests and otter rely on) and a report cell after its last cell; grade with
``otter.api.grade_submission`` (no Docker) with a per-cell time limit after which the kernel is
interrupted and execution goes on; then collect per-question scores, public failure messages,
cells that raised, and any tampering the guard saw.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._paths import STUDENT_NOTEBOOK

GUARD_START = (
    "import initlab.grading.checks as _initlab_guard_{nonce}\n_initlab_guard_{nonce}.guard_start()"
)
GUARD_REPORT = (
    "import json as _initlab_json_{nonce}\n"
    "print('INITLAB-GUARD {nonce}', _initlab_json_{nonce}.dumps("
    "_initlab_guard_{nonce}.guard_report(globals())))"
)


def _notebook_name(nb: Any) -> str:
    """The file name the init cell opens (``exercises.ipynb``, ``exercises_a.ipynb``, ...)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            found = re.search(r"otter\.Notebook\(\s*[\"']([\w.-]+\.ipynb)[\"']", cell.source)
            if found:
                return found.group(1)
    return STUDENT_NOTEBOOK


def _prepare(submission: Path, work: Path, nonce: str) -> Path:
    import nbformat

    nb = nbformat.read(submission, as_version=4)
    for i, cell in enumerate(nb.cells):
        cell.metadata["initlab_index"] = i
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.cells.insert(0, nbformat.v4.new_code_cell(GUARD_START.format(nonce=nonce)))
    nb.cells.append(nbformat.v4.new_code_cell(GUARD_REPORT.format(nonce=nonce)))
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    out = work / _notebook_name(nb)  # the name the init cell's otter.Notebook(...) reads
    nbformat.write(nb, out)
    return out


def _limit_cells(cell_timeout: int) -> None:
    """Make otter's executor interrupt a cell after ``cell_timeout`` s and go on."""
    import nbconvert.preprocessors as pp

    base = pp.ExecutePreprocessor

    class LimitedExecutePreprocessor(base):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.timeout = cell_timeout
            self.interrupt_on_timeout = True
            self.kernel_name = "python3"

    pp.ExecutePreprocessor = LimitedExecutePreprocessor


def _cell_errors(executed: Any, nonce: str) -> tuple[list[str], list[str] | None]:
    """Return (errors raised by the submission's cells, guard report or None if missing)."""
    errors: list[str] = []
    report = None
    for cell in executed.cells:
        if cell.cell_type != "code":
            continue
        src = cell.source
        index = cell.metadata.get("initlab_index")
        ours = index is None
        if nonce in src and "guard_report" in src:
            for out in cell.get("outputs", []):
                for line in out.get("text", "").splitlines():
                    if line.startswith(f"INITLAB-GUARD {nonce} "):
                        report = json.loads(line.split(" ", 2)[2])
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                if ours:  # never echo a traceback from otter's cells: it could show hidden tests
                    errors.append(f"grading cell raised {out.get('ename')}")
                else:
                    value = str(out.get("evalue", "")).strip().splitlines()
                    errors.append(
                        f"cell {index}: {out.get('ename')}: {value[0] if value else ''}"[:200]
                    )
    return errors, report


def _results_dict(results: Any) -> dict[str, Any]:
    questions: dict[str, Any] = {}
    for name, tf in sorted(results.results.items()):
        failed_public, failed_hidden = [], 0
        for r in tf.test_case_results:
            if r.passed:
                continue
            if r.test_case.hidden:
                failed_hidden += 1
            else:
                failed_public.append({"test": r.test_case.name, "message": r.message})
        questions[name] = {
            "score": float(tf.score),
            "possible": float(tf.possible),
            "failed_public": failed_public,
            "failed_hidden": failed_hidden,
        }
    return questions


def grade_one(ag_zip: str, submission: str, cell_timeout: int, nonce: str) -> dict[str, Any]:
    """Grade ``submission`` against ``ag_zip``; return the result record (never raises)."""
    start = time.monotonic()
    record: dict[str, Any] = {"file": submission, "graded": False, "questions": {}, "errors": []}
    with tempfile.TemporaryDirectory(prefix="initlab-grade-") as tmp:
        try:
            prepared = _prepare(Path(submission), Path(tmp), nonce)
        except Exception as exc:  # not a notebook at all
            record["errors"].append(f"not a readable notebook: {type(exc).__name__}: {exc}"[:300])
            return record
        _limit_cells(cell_timeout)
        from otter.api import grade_submission

        try:
            results = grade_submission(str(prepared), ag_zip, quiet=True)
        except Exception as exc:
            name = type(exc).__name__
            hint = (
                " (the kernel died: os._exit, a crash or out of memory?)" if "Dead" in name else ""
            )
            record["errors"].append(f"grading failed: {name}: {str(exc)[:150]}{hint}")
            return record
    errors, report = _cell_errors(results.notebook, nonce) if results.notebook else ([], None)
    if results.catastrophic_error is not None:  # otter's results file was never written
        exc = results.catastrophic_error
        record["errors"].append(f"grading failed: {type(exc).__name__}: {str(exc)[:150]}")
        record["errors"].extend(errors)
        return record
    record["questions"] = _results_dict(results)
    record["errors"].extend(errors)
    if report is None:
        record["errors"].append(
            "integrity report missing (the submission stopped the kernel or hid the report)"
        )
    elif report:
        record["errors"].append("tampering: " + "; ".join(report))
    record["graded"] = True
    record["seconds"] = round(time.monotonic() - start, 2)
    return record


def main(argv: list[str]) -> int:
    ag_zip, submission, out_path, cell_timeout, nonce = argv
    if not re.fullmatch(r"[0-9a-f]{16,64}", nonce):
        raise ValueError(f"nonce must be hex, got {nonce!r}")
    os.environ.setdefault("INITLAB_PROGRESS", "0")
    os.environ.setdefault("MPLBACKEND", "Agg")
    record = grade_one(ag_zip, submission, int(cell_timeout), nonce)
    Path(out_path).write_text(json.dumps(record), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
