"""The sandbox a submission runs in: the bubblewrap command line, its seccomp filter and
limits, and a self-test of whether this machine can make one.

The sandbox (:func:`bwrap_command`): bubblewrap with every namespace unshared (no network, own
PID namespace: every process dies with it), uid/gid 65534, no capabilities, a new session, no
nested user namespaces; read-only binds of the system (``/usr``, parts of ``/etc``), the Python
installation, the virtual environment and the folder holding the ``initlab`` package, nothing
else of the file system; a private ``/tmp`` (tmpfs of :data:`TMP_BYTES`) holding the notebook;
a seccomp filter that refuses to create processes (threads are allowed); ``RLIMIT_AS``
of :data:`MEMORY_BYTES`.

Why seccomp rather than ``RLIMIT_NPROC``: the kernel counts that limit per real user and
does not apply it to root, and a sandbox that root starts runs, outside its user namespace,
as root (a fork loop under ``RLIMIT_NPROC`` = 20 made 100 processes here). Refusing ``fork``,
``vfork`` and ``clone`` without ``CLONE_THREAD`` holds for every user; threads are bounded
by the memory limit.
"""

from __future__ import annotations

import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import _protocol as P

ETC = tuple(  # the parts of /etc a Python process reads (not /etc/shadow and the like)
    f"/etc/{name}"
    for name in (
        "ld.so.cache ld.so.conf ld.so.conf.d passwd group nsswitch.conf localtime "
        "alternatives fonts"
    ).split()
)
MEMORY_BYTES = 4 << 30
TMP_BYTES = 256 << 20

NO_SANDBOX_HELP = (
    "cannot make a sandbox for the submissions: {why}.\n"
    "Grading runs every submission under bubblewrap (Linux; Debian/Ubuntu: apt install "
    "bubblewrap; it needs unprivileged user namespaces). Options: grade on a Linux machine "
    "with bubblewrap, or use otter-grader's Docker-based grading (otter grade), or pass "
    "--no-sandbox to run submissions as plain processes, which only makes sense for "
    "submissions you trust (every row then says 'unsandboxed')."
)


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot make a sandbox on this machine."""


_SYSCALLS = {  # (audit arch, clone, clone3, fork, vfork)
    "x86_64": (0xC000003E, 56, 435, 57, 58),
    "aarch64": (0xC00000B7, 220, 435, None, None),
}


def seccomp_no_fork() -> bytes | None:
    """A classic-BPF seccomp program: fork/vfork/clone of a process fail (EPERM), threads work.

    ``clone3`` fails with ENOSYS (its flags are out of seccomp's reach; glibc then falls back to
    ``clone``). ``None`` on an architecture not listed here.
    """
    import platform

    spec = _SYSCALLS.get(platform.machine())
    if spec is None:
        return None
    arch, clone, clone3, fork, vfork = spec
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    prog: list[tuple[int, int, int, int]] = []
    # Labels: A = allow, E = eperm, N = enosys (resolved below as offsets from the end).
    body: list[tuple[int, Any, Any, int]] = [(ld, 0, 0, 4), (jeq, 0, "A", arch), (ld, 0, 0, 0)]
    body.append((jge, "E", 0, 0x40000000))  # x32 system calls
    for nr in (fork, vfork):
        if nr is not None:
            body.append((jeq, "E", 0, nr))
    body += [(jeq, "N", 0, clone3), (jeq, 0, "A", clone), (ld, 0, 0, 16)]
    body.append((jset, "A", "E", 0x00010000))  # CLONE_THREAD
    labels = {"A": len(body), "E": len(body) + 1, "N": len(body) + 2}
    for pc, (code, jt, jf, k) in enumerate(body):
        jt = labels[jt] - pc - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - pc - 1 if isinstance(jf, str) else jf
        prog.append((code, jt, jf, k))
    prog += [(ret, 0, 0, allow), (ret, 0, 0, eperm), (ret, 0, 0, enosys)]
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


def _package_root() -> Path:
    """The folder that holds the ``initlab`` package (``src/`` of an editable install)."""
    import initlab

    root = Path(initlab.__file__).resolve().parents[1]
    if (root / "exercises").exists() or (root / ".git").exists():
        raise SandboxUnavailable(
            f"initlab is imported from {root}, which holds the course repository; install it "
            "from its src/ layout (pip install -e .) so the sandbox can see the package only"
        )
    return root


def bwrap_command(bwrap: str, seccomp_fd: int | None, notebook_fd: int, name: str) -> list[str]:
    """The bubblewrap command line that starts the driver (see the module docstring)."""
    cmd = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    cmd += ["--unshare-user", "--uid", "65534", "--gid", "65534", "--disable-userns"]
    ro: list[str] = []
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", *ETC):
        p = Path(top)
        if p.is_symlink():
            cmd += ["--symlink", os.readlink(p), top]
        elif p.exists():
            ro.append(top)
    for extra in (sys.base_prefix, sys.prefix, sys.exec_prefix, str(_package_root())):
        real = str(Path(extra).resolve())
        for p in {extra, real}:
            if not any(p == r or p.startswith(r.rstrip("/") + "/") for r in ro):
                ro.append(p)
    # The private /tmp first, the read-only binds after it: a course checkout (and so its
    # .venv and src/) may itself live under /tmp, and a later mount shows through an earlier.
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
    for p in ro:
        cmd += ["--ro-bind", p, p]
    cmd += ["--dir", "/tmp/work", "--file", str(notebook_fd), f"/tmp/work/{name}"]
    cmd += ["--chdir", "/tmp/work", "--clearenv"]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    return cmd


def _env() -> dict[str, str]:
    one = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    return {
        **one,
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp/.matplotlib",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "INITLAB_PROGRESS": "0",
    }


def _limits() -> None:  # runs in the child between fork and exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (TMP_BYTES, TMP_BYTES))


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


def sandbox_self_test() -> str | None:
    """``None`` if a bubblewrap sandbox can start the driver's imports here, else why not."""
    bwrap = find_bwrap()
    if bwrap is None:
        return "bwrap (bubblewrap) is not installed"
    try:
        with tempfile.TemporaryFile() as f:
            cmd = bwrap_command(bwrap, None, f.fileno(), "self-test.ipynb")
            for k, v in _env().items():
                cmd += ["--setenv", k, v]
            probe = "import importlib.util as u; assert u.find_spec('initlab'), 'no initlab'"
            cmd += [sys.executable, "-I", "-c", probe]
            proc = subprocess.run(
                cmd, capture_output=True, pass_fds=[f.fileno()], preexec_fn=_limits, timeout=60
            )
    except (SandboxUnavailable, OSError, subprocess.SubprocessError) as exc:
        return P.short(str(exc), 300)
    if proc.returncode != 0:
        return P.short(proc.stderr.decode(errors="replace") or f"exit {proc.returncode}", 300)
    return None
