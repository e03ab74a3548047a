"""Build the book with every notebook executed and warnings as errors.

Used by `make book` and by tests/book. The notebook cache (jupyter-cache) is keyed on a
notebook's code only, so it is cleared whenever the library (src/initlab) or the
requirements change: a stale cache must never hide a broken notebook.

Exit status is non-zero when the build fails; a failed notebook is named with its cell.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
CACHE = BUILD / ".jupyter_cache"
STAMP = BUILD / ".initlab-hash"


def source_hash() -> str:
    digest = hashlib.sha256()
    files = sorted((ROOT / "src" / "initlab").rglob("*.py")) + [ROOT / "requirements.txt"]
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def describe_failures(log: str) -> list[str]:
    """One line per failed notebook (with the failing cell's number and first line), then
    every other Sphinx warning or error; falls back to the log's last lines."""
    log = ANSI.sub("", log)
    lines: list[str] = []
    failed = re.findall(r"^(\S+\.ipynb): WARNING: Executing notebook failed", log, flags=re.M)
    cells = re.findall(r"executing the following cell:\n-+\n(.*?)\n-+\n", log, flags=re.S)
    wrappers = {"RuntimeError", "ExecutionError", "CellExecutionError"}
    errors = [
        e
        for e in re.findall(r"^\s*(\w+(?:Error|Exception|Warning)): (.+)$", log, flags=re.M)
        if e[0] not in wrappers
    ]
    for i, nb_path in enumerate(dict.fromkeys(failed)):
        where = ""
        if i < len(cells):
            code = cells[i]
            nb = json.loads(Path(nb_path).read_text())
            index = [
                n for n, c in enumerate(nb["cells"]) if "".join(c["source"]).strip() == code.strip()
            ]
            where = f" at code cell {index[0]}" if index else ""
            where += f" ({code.strip().splitlines()[0][:70]!r} ...)"
        lines.append(f"notebook {Path(nb_path).relative_to(ROOT)} failed{where}")
    if errors:
        lines.append(f"error:  {errors[-1][0]}: {errors[-1][1][:200]}")
    warnings = [
        w
        for w in re.findall(r"^.*(?:WARNING|ERROR):.*$", log, flags=re.M)
        if "Executing notebook failed" not in w and "IPKernelApp" not in w
    ]
    lines += warnings[:30]
    if failed:
        lines.append("full tracebacks: _build/html/reports/")
    return lines or log.strip().splitlines()[-20:]


def main() -> int:
    start = time.perf_counter()
    current = source_hash()
    if not STAMP.exists() or STAMP.read_text().strip() != current:
        if CACHE.exists():
            print(f"src/initlab changed since the last build: clearing {CACHE.relative_to(ROOT)}")
        shutil.rmtree(CACHE, ignore_errors=True)
    env = {**os.environ, "INITLAB_PROGRESS": "0", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    cmd = [
        str(Path(sys.executable).parent / "jupyter-book"),
        "build",
        str(ROOT),
        "-W",
        "-n",
        "--keep-going",
    ]
    # Stream Sphinx's output (one line per notebook executed) while keeping it for the report.
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        sys.stdout.write(line)
        sys.stdout.flush()
    proc.wait()
    log = "".join(lines)
    seconds = time.perf_counter() - start
    index = BUILD / "html" / "index.html"
    if proc.returncode != 0 or not index.exists():
        print("\nerror: the book build failed.", file=sys.stderr)
        for line in describe_failures(log):
            print(f"  {line}", file=sys.stderr)
        print(f"make book failed after {seconds:.0f} s", file=sys.stderr)
        return proc.returncode or 1
    BUILD.mkdir(exist_ok=True)
    STAMP.write_text(current + "\n")
    print(f"\nBook built: {index}")
    print(f"make book wall time: {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
