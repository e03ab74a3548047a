"""Build the book with every notebook executed and warnings as errors.

Used by `make book` and (``--execute-only``) by `make notebooks`. Two steps:

1. Execute every notebook the book executes (the ``.ipynb`` files of ``_toc.yml`` minus
   ``execute.exclude_patterns`` of ``_config.yml``) into the notebook cache that myst-nb
   reads (jupyter-cache, ``_build/.jupyter_cache``), in parallel, with jupyter-cache's
   ``local-parallel`` executor: one kernel per CPU, each on one thread (:data:`KERNEL_ENV`),
   handed one notebook at a time (:class:`OneAtATime`). The executor runs each notebook
   exactly as myst-nb's cache mode would (the same ``single_nb_execution``, working
   directory, timeout and ``allow_errors``).
2. Sphinx (``jupyter-book build -W``), which then finds every notebook in the cache and
   only renders. A notebook that failed in step 1 is not cached: Sphinx executes it again
   and reports its failing cell, exactly as without step 1.

The cache is keyed on a notebook's code only, so it is cleared whenever the library
(src/initlab) or the requirements change: a stale cache must never hide a broken notebook.

What the tests read (they never run this script themselves):

* ``--execute-only`` writes its report, per notebook, to :data:`REPORT` (``make notebooks``:
  every notebook under chapters/, :func:`chapter_notebooks`): status, seconds, traceback and
  the SHA-256 of the notebook file it executed, with the library's :func:`source_hash`.
* the full build writes Sphinx's output to :data:`BOOK_LOG` and, when it ends, its record to
  :data:`BOOK_RECORD`: status, exit code, seconds, the failures and the SHA-256 of every input
  (:func:`book_inputs`). Both files are removed when a run starts, so an interrupted run leaves
  none.

Exit status is non-zero when the build fails; a failed notebook is named with its cell.
"""

import argparse
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
CACHE = BUILD / ".jupyter_cache"
STAMP = BUILD / ".initlab-hash"
REPORT = BUILD / "notebooks.json"  # make notebooks: per-notebook status, seconds, traceback
BOOK_LOG = BUILD / "book.log"  # make book: Sphinx's output
BOOK_RECORD = BUILD / "book.json"  # make book: status and the hashes of its inputs

#: The environment every notebook kernel of the build and of the tests runs in, set here
#: once: with one kernel per core, one intra-op thread each (OMP_NUM_THREADS is what torch
#: reads at start-up; notebooks need no torch.set_num_threads).
KERNEL_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "INITLAB_PROGRESS": "0",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
}


def apply_kernel_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: ``os.environ``, changed in place) with :data:`KERNEL_ENV` added
    where the caller has not set the variable already."""
    target = os.environ if env is None else env
    for key, value in KERNEL_ENV.items():
        target.setdefault(key, value)
    return target


def toc_files(root: Path = ROOT) -> list[str]:
    """Every file ``_toc.yml`` lists (without suffix), root first, in reading order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries: list | None) -> None:
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return files


def execution_config(root: Path = ROOT) -> dict:
    """The ``execute:`` section of ``_config.yml``."""
    return yaml.safe_load((root / "_config.yml").read_text()).get("execute", {})


def executed_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks the book executes: ``.ipynb`` entries of the toc not excluded."""
    excluded = execution_config(root).get("exclude_patterns", [])
    paths = [(root / f).with_suffix(".ipynb") for f in toc_files(root)]
    return [
        p
        for p in paths
        if p.is_file()
        and not any(fnmatch.fnmatch(p.relative_to(root).as_posix(), pat) for pat in excluded)
    ]


def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    """Every notebook under chapters/ (the book's pages and the student exercise notebooks),
    sorted: what `make notebooks` executes and the tests report on."""
    return sorted(
        p for p in (root / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
    )


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def book_inputs(root: Path = ROOT) -> list[Path]:
    """The files the rendered book is made from: its configuration and extensions, every page
    of the toc, the library the notebooks import and the pins."""
    files = [
        root / name for name in ("_config.yml", "_toc.yml", "references.bib", "requirements.txt")
    ]
    files += [p for p in (root / "_ext").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    for entry in toc_files(root):
        files += [p for s in (".md", ".ipynb") if (p := (root / entry).with_suffix(s)).is_file()]
    files += (root / "src" / "initlab").rglob("*.py")
    return sorted({p for p in files if p.is_file()})


def input_hashes(root: Path = ROOT) -> dict[str, str]:
    """{path relative to the root: SHA-256} of :func:`book_inputs`."""
    return {p.relative_to(root).as_posix(): file_hash(p) for p in book_inputs(root)}


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


def prepare_cache() -> None:
    """Clear the notebook cache unless it was filled for the current library and pins."""
    current = source_hash()
    if not STAMP.exists() or STAMP.read_text().strip() != current:
        if CACHE.exists():
            print(f"src/initlab changed since the last build: clearing {CACHE.relative_to(ROOT)}")
        shutil.rmtree(CACHE, ignore_errors=True)
        BUILD.mkdir(exist_ok=True)
        STAMP.write_text(current + "\n")  # every entry cached from now on is for `current`


def _one_at_a_time():
    """jupyter-cache's ``local-parallel`` executor, handing each worker one notebook at a time.

    Its ``pool.map`` hands out chunks of ceil(n / (4 * workers)) notebooks, so near the end
    one worker can still hold several notebooks while the other cores idle; ``imap`` with
    ``chunksize=1`` keeps every core busy until the last notebook starts.
    """
    import multiprocessing

    from jupyter_cache.executors.base import ExecutorRunResult
    from jupyter_cache.executors.basic import JupyterExecutorLocalMproc, ProcessData

    class OneAtATime(JupyterExecutorLocalMproc):
        def run_and_cache(self, *, filter_uris=None, filter_pks=None, timeout=30,
                          allow_errors=False, force=False) -> ExecutorRunResult:  # fmt: skip
            records = self.get_records(filter_uris, filter_pks, clear_tracebacks=True)
            work = [ProcessData(r.pk, r.uri, self.cache, timeout, allow_errors) for r in records]
            with multiprocessing.Pool() as pool:
                results = list(pool.imap(self._EXECUTION_WORKER(), work, chunksize=1))
            return ExecutorRunResult(
                succeeded=[p for i, p in results if i == 0],
                excepted=[p for i, p in results if i == 1],
                errored=[p for i, p in results if i == 2],
            )

    return OneAtATime


def execute_notebooks(paths: list[Path] | None = None) -> dict[str, dict]:
    """Execute ``paths`` (default: :func:`executed_notebooks`) into the cache in parallel.

    Returns, per notebook path relative to the root: ``status`` (``"cached"`` if it was
    already, ``"ok"``, ``"failed"``), ``seconds`` (its execution time, from the cache),
    ``traceback`` (for ``"failed"``) and ``sha256`` (of the file as it was executed).
    """
    from jupyter_cache import get_cache

    prepare_cache()
    apply_kernel_env()
    paths = executed_notebooks() if paths is None else paths
    cfg = execution_config()
    cache = get_cache(str(CACHE))
    uris = [str(p.resolve()) for p in paths]
    hashes = {}
    for uri in uris:
        hashes[uri] = file_hash(Path(uri))  # before it is read: an edit after it shows as stale
        cache.add_nb_to_project(uri)
    before = {uri for uri in uris if cache.get_cached_project_nb(uri) is not None}
    logger = logging.getLogger("initlab.build_book")
    logger.setLevel(logging.WARNING)
    executor = _one_at_a_time()(cache=cache, logger=logger)
    result = executor.run_and_cache(
        filter_uris=uris,
        timeout=cfg.get("timeout", 30),
        allow_errors=cfg.get("allow_errors", False),
    )
    failed = set(result.excepted) | set(result.errored)
    report = {}
    for uri in uris:
        record = cache.get_project_record(uri)
        cached = cache.get_cached_project_nb(record.pk)
        seconds = cached.data.get("execution_seconds") if cached is not None else None
        report[Path(uri).relative_to(ROOT.resolve()).as_posix()] = {
            "status": "failed" if uri in failed else ("cached" if uri in before else "ok"),
            "seconds": seconds,
            "traceback": record.traceback if uri in failed else None,
            "sha256": hashes[uri],
        }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--execute-only",
        metavar="JSON",
        help="only execute the notebooks into the cache and write the report to JSON "
        f"(`make notebooks`: {REPORT.relative_to(ROOT)}, which the tests read)",
    )
    parser.add_argument(
        "--chapters",
        action="store_true",
        help="with --execute-only: every notebook under chapters/ (student exercises too)",
    )
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="with --execute-only: these notebooks only"
    )
    args = parser.parse_args()
    if (args.notebooks or args.chapters) and not args.execute_only:
        parser.error("notebooks can be named only with --execute-only")
    start = time.perf_counter()
    out = Path(args.execute_only) if args.execute_only else BOOK_RECORD
    out.unlink(missing_ok=True)  # an interrupted run leaves no report
    if not args.execute_only:
        BOOK_LOG.unlink(missing_ok=True)
    # What the run is made from, taken before it reads anything: an edit during the run
    # shows as stale in the tests.
    library = source_hash()
    inputs = None if args.execute_only else input_hashes()
    paths = [p.resolve() for p in args.notebooks]
    if args.chapters:
        paths += [p for p in chapter_notebooks() if p not in paths]
    report = execute_notebooks(paths or None)
    seconds = time.perf_counter() - start
    ran = [r["seconds"] or 0.0 for r in report.values() if r["status"] != "cached"]
    print(
        f"executed {len(ran)} notebooks ({sum(ran):.1f} s of kernel time) in {seconds:.1f} s "
        f"on {os.cpu_count()} CPUs; {len(report) - len(ran)} were cached"
    )
    for name, r in sorted(report.items(), key=lambda kv: -(kv[1]["seconds"] or 0.0)):
        if r["status"] != "cached":
            print(f"  {r['seconds'] or 0.0:6.1f} s  {r['status']:6s}  {name}")
    if args.execute_only:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"library": library, "notebooks": report}, indent=1))
        failed = [name for name, r in report.items() if r["status"] == "failed"]
        for name in failed:
            print(f"notebook {name} failed (its traceback: pytest {name})", file=sys.stderr)
        return 1 if failed else 0
    env = dict(os.environ)
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
    BOOK_LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(BOOK_LOG, "w") as log_file:
        for line in proc.stdout:
            lines.append(line)
            log_file.write(line)
            sys.stdout.write(line)
            sys.stdout.flush()
    proc.wait()
    log = "".join(lines)
    seconds = time.perf_counter() - start
    index = BUILD / "html" / "index.html"
    ok = proc.returncode == 0 and index.exists()
    record = {
        "status": "ok" if ok else "failed",
        "returncode": proc.returncode,
        "command": cmd[1:],
        "seconds": round(seconds, 1),
        "failures": [] if ok else describe_failures(log),
        "inputs": inputs,
    }
    BOOK_RECORD.write_text(json.dumps(record, indent=1))
    if not ok:
        print("\nerror: the book build failed.", file=sys.stderr)
        for line in record["failures"]:
            print(f"  {line}", file=sys.stderr)
        print(f"make book failed after {seconds:.0f} s", file=sys.stderr)
        return proc.returncode or 1
    print(f"\nBook built: {index}")
    print(f"make book wall time: {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
