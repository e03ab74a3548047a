"""Execute notebooks top to bottom in a fresh kernel, as the book build does, and check them.

    python scripts/check_notebook.py chapters/02_variance_derivation/*.ipynb

For each notebook: wall time, and a failure when a cell raises (unless tagged
`raises-exception`), when anything is written to stderr (a warning fails the book build),
when a figure cell produced no image although it calls a plotting function, or when the
stored file has outputs. Nothing is written back. Exit status 1 when any check fails.
"""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_book import apply_kernel_env  # noqa: E402


def check(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    problems = [
        f"cell {i} is stored with outputs"
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count)
    ]
    client = NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        problems.append(f"execution failed: {str(exc).strip().splitlines()[-1]}")
    seconds = time.perf_counter() - start
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                problems.append(f"cell {i} wrote to stderr: {out['text'].strip()[:200]!r}")
            text = out.get("text", "") or "".join(out.get("data", {}).get("text/plain", ""))
            if out.get("output_type") == "error" or "Traceback (most recent call last)" in text:
                problems.append(f"cell {i} shows an error in its output: {text.strip()[-200:]!r}")
    print(f"{seconds:6.1f} s  {path}  {'OK' if not problems else 'FAILED'}")
    for p in problems:
        print(f"         - {p}")
    return problems


def main(paths: list[str]) -> int:
    apply_kernel_env()  # the kernel environment of the book build (one thread, no bars)
    if not paths:
        print(__doc__)
        return 2
    failed = [p for p in paths if check(Path(p))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
