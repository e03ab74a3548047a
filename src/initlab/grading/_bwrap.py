r"""The sandbox a submission runs in, and a self-test of whether this machine can make one.

:func:`launch` starts the driver under bubblewrap (:func:`bwrap_command`): every namespace
unshared (no network, own PID namespace), uid/gid 65534, no capabilities, a new session, no
nested user namespaces; read-only binds of the system (``/usr``, parts of ``/etc``), the Python
installation, the virtual environment and the folder holding the ``initlab`` package, nothing
else of the file system; the notebook in ``/tmp/work``. What it bounds, and how:

* process creation: a seccomp filter made by libseccomp (:func:`seccomp_filter`) fails
  ``fork``, ``vfork`` and ``clone`` without ``CLONE_THREAD`` (EPERM) and ``clone3`` (ENOSYS;
  glibc then falls back to ``clone``, so threads work), and kills the process on a system call
  of any other ABI (i386 ``int 0x80``, x32). It also fails :data:`DENIED`: ``memfd_create``
  (memory outside the address-space limit), io_uring, ``bpf``, ``ptrace``, ``unshare``, ...
  Without libseccomp there is no sandbox (:class:`SandboxUnavailable`), never one without it.
* memory: ``RLIMIT_AS`` of :data:`MEMORY_BYTES`; where a cgroup can be made, also a memory
  limit of :data:`MEMORY_BYTES` + :data:`TMP_BYTES` + :data:`SHM_BYTES` without swap, which,
  unlike ``RLIMIT_AS``, counts the tmpfs pages and page cache the sandbox touches.
* files: a private ``/tmp`` of :data:`TMP_BYTES` and ``/dev/shm`` of :data:`SHM_BYTES`
  (tmpfs), ``RLIMIT_FSIZE`` of :data:`TMP_BYTES`, ``RLIMIT_NOFILE`` of :data:`NOFILE`.
* processes and threads: :data:`PIDS_MAX` (cgroup ``pids.max``).
* CPU: equal cgroup shares (v1) or weight (v2) for every sandbox, and a quota of one core,
  so that ``--jobs N`` neighbours share the CPU fairly. :meth:`Sandbox.kill` returns the CPU
  seconds the cgroup used (or, without one, its process tree's).

A tiny launcher (:data:`LAUNCHER`) sets the rlimits and enters the cgroups, then execs bubblewrap,
so no ``preexec_fn`` runs in the grader. Where no cgroup is writable the rlimits stay, and
:attr:`Sandbox.limits` says so. Why seccomp rather than ``RLIMIT_NPROC``: the kernel counts that
limit per real user and does not apply it to root, which a sandbox started by root is outside
its user namespace.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

_ETC = "ld.so.cache ld.so.conf ld.so.conf.d passwd group nsswitch.conf localtime alternatives fonts"
ETC = tuple(f"/etc/{name}" for name in _ETC.split())  # what Python reads (not /etc/shadow, ...)
MEMORY_BYTES = 4 << 30
TMP_BYTES = 256 << 20
SHM_BYTES = 64 << 20
PIDS_MAX = 64  # threads count: the driver, torch's pools and bubblewrap's two processes
NOFILE = 256
CGROUP_MEMORY_BYTES = MEMORY_BYTES + TMP_BYTES + SHM_BYTES
DENIED = (  # fail with EPERM; process creation is handled apart
    "memfd_create memfd_secret io_uring_setup io_uring_enter io_uring_register userfaultfd "
    "bpf perf_event_open keyctl add_key request_key ptrace process_vm_readv process_vm_writev "
    "pidfd_getfd unshare setns mount umount2 pivot_root chroot open_tree move_mount fsopen "
    "fsmount fsconfig fspick mount_setattr"
).split()
ARCHES = {"x86_64": "X86_64", "aarch64": "AARCH64", "ppc64le": "PPC64LE", "riscv64": "RISCV64"}
# Not s390x: its clone takes the flags second, which the clone rule here does not check.

NO_SANDBOX_HELP = (
    "cannot make a sandbox for the submissions: {why}.\n"
    "Grading runs every submission under bubblewrap with a libseccomp filter (Linux; "
    "Debian/Ubuntu: apt install bubblewrap libseccomp2 python3-seccomp; it needs unprivileged "
    "user namespaces). Options: grade on a Linux machine with both, or use otter-grader's "
    "Docker-based grading (otter grade), or pass --no-sandbox to run submissions as plain "
    "processes, which only makes sense for submissions you trust (every row then says "
    "'unsandboxed')."
)


class SandboxUnavailable(RuntimeError):
    """bubblewrap or libseccomp is missing or cannot make a sandbox on this machine."""


def _load_seccomp() -> Any:
    """libseccomp's Python binding: Debian's ``seccomp``, else ``pyseccomp`` (same API)."""
    try:
        import seccomp  # type: ignore[import-not-found]
    except ImportError:
        import pyseccomp as seccomp  # raises RuntimeError without libseccomp
    return seccomp


def seccomp_filter() -> Any:
    """The libseccomp filter of the module docstring; :class:`SandboxUnavailable` if there is
    none for this machine."""
    try:
        sc = _load_seccomp()
        arch = getattr(sc.Arch, ARCHES.get(platform.machine(), "?"), None)
        if arch is None or sc.system_arch() != arch:
            raise SandboxUnavailable(f"no seccomp filter for the {platform.machine()} architecture")
        for name in ("fork", "vfork", "clone", "clone3", *DENIED):
            if sc.resolve_syscall(arch, name) == -1:  # libseccomp too old to know it
                raise SandboxUnavailable(f"libseccomp does not know the {name} system call")
        f = sc.SyscallFilter(sc.ALLOW)
        f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
        for name in ("fork", "vfork", *DENIED):
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        clone_thread = 0x00010000
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, clone_thread, 0))
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        return f
    except (ImportError, OSError, RuntimeError) as exc:
        if isinstance(exc, SandboxUnavailable):
            raise
        raise SandboxUnavailable(f"libseccomp is unavailable ({exc})") from None


def _bpf_file() -> IO[bytes]:
    program = seccomp_filter()
    f = tempfile.TemporaryFile()
    program.export_bpf(f)
    f.seek(0)
    return f


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


def driver_command(
    code: str = "from initlab.grading._sandbox import main; sys.exit(main())",
) -> list[str]:
    """The Python command that runs ``code`` with *this* process's ``initlab`` first on the
    path (isolated mode ignores ``PYTHONPATH``: another installed copy must not answer)."""
    root = str(_package_root())
    return [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {root!r}); {code}"]


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
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm"]
    cmd += ["--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
    for p in ro:
        cmd += ["--ro-bind", p, p]
    cmd += ["--dir", "/tmp/work", "--file", str(notebook_fd), f"/tmp/work/{name}"]
    cmd += ["--chdir", "/tmp/work", "--clearenv"]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    return cmd


def _env() -> dict[str, str]:
    one = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    tmp = {"HOME": "/tmp", "TMPDIR": "/tmp", "MPLCONFIGDIR": "/tmp/.matplotlib"}
    other = "PATH=/usr/bin:/bin LANG=C.UTF-8 MPLBACKEND=Agg PYTHONHASHSEED=0 INITLAB_PROGRESS=0"
    return {
        **one,
        **tmp,
        **dict(kv.split("=") for kv in other.split()),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


RLIMITS = {"RLIMIT_AS": MEMORY_BYTES, "RLIMIT_CORE": 0, "RLIMIT_FSIZE": TMP_BYTES}
RLIMITS["RLIMIT_NOFILE"] = NOFILE
LAUNCHER = """import json, os, resource, sys
c = json.loads(sys.argv[1])
for k, n in c["rlimits"].items():
    resource.setrlimit(getattr(resource, k), (n, n))
for p in c["procs"]:
    with open(p, "w") as f:
        f.write(str(os.getpid()))
os.execv(c["argv"][0], c["argv"])
"""


def _short(text: str, limit: int = 300) -> str:
    s = " ".join(text.split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


# --- cgroups ------------------------------------------------------------------------------------

_COUNTER = itertools.count()
_V1 = {  # a file ending in "?" is set where it exists (swap accounting may be off)
    "memory": {"memory.limit_in_bytes": "{mem}", "memory.memsw.limit_in_bytes?": "{mem}"},
    "pids": {"pids.max": "{pids}"},
    "cpu": {"cpu.shares": "1024", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"},
    "cpuacct": {},
}
_V2 = {
    "memory": {"memory.max": "{mem}", "memory.swap.max?": "0"},
    "pids": {"pids.max": "{pids}"},
    "cpu": {"cpu.weight": "100", "cpu.max": "100000 100000"},
}


def _hierarchies() -> list[tuple[Path, dict[str, dict[str, str]]]]:
    """This process's cgroup folder in each hierarchy, with the settings of the controllers a
    child of it can have (v1: those of the hierarchy; v2: those the folder delegates)."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    own = {ctrl: path for _, ctrl, path in (line.split(":", 2) for line in lines)}
    found: dict[Path, dict[str, dict[str, str]]] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        (root, mnt), (fstype, _, opts) = left.split()[3:5], (right.split() + ["", ""])[:3]
        ctrls = set(opts.split(","))
        key = "" if fstype == "cgroup2" else None
        if fstype == "cgroup":
            key = next((k for k in own if k and set(k.split(",")) <= ctrls), None)
        rel = own.get(key) if key is not None else None
        if rel is None or not (rel + "/").startswith(root.rstrip("/") + "/"):
            continue  # this process's cgroup is not under the mount
        d = Path(mnt, rel[len(root) :].lstrip("/"))
        with contextlib.suppress(OSError):
            ctrls = set((d / "cgroup.subtree_control").read_text().split()) if key == "" else ctrls
            found[d] = {c: v for c, v in (_V2 if key == "" else _V1).items() if c in ctrls}
    return [(d, ctrl) for d, ctrl in found.items() if ctrl]


def _make_cgroups() -> tuple[list[Path], str]:
    """A fresh cgroup in each hierarchy that offers a controller here, and what they bound."""
    made, what, values = [], [], {"mem": CGROUP_MEMORY_BYTES, "pids": PIDS_MAX}
    name = f"initlab-{os.getpid()}-{next(_COUNTER)}"
    try:
        hierarchies = _hierarchies()
    except (OSError, ValueError):
        hierarchies = []
    for base, controllers in hierarchies:
        for stale in base.glob("initlab-*-*"):  # empty ones left by a grader that died
            with contextlib.suppress(OSError):
                old = time.time() - stale.stat().st_mtime > 60
                if old and not Path("/proc", stale.name.split("-")[1]).exists():
                    stale.rmdir()
        d = base / name
        try:
            d.mkdir()
            for file, value in (kv for c in controllers.values() for kv in c.items()):
                if not file.endswith("?") or (d / file[:-1]).exists():
                    (d / file.rstrip("?")).write_text(value.format(**values))
        except OSError:
            _rmdir(d, tries=1)
            continue
        made.append(d)
        what += [c for c in controllers if c not in what]
    if not made:
        return [], "rlimits only (no writable cgroup):"
    parts = {"memory": f"memory {values['mem'] / 2**30:.2f} GiB (no swap)"}
    parts |= {"pids": f"pids {PIDS_MAX}", "cpu": "cpu shares equal, quota 1 core"}
    version = "v2" if any((d / "cgroup.kill").exists() for d in made) else "v1"
    return made, f"cgroup {version}: " + ", ".join(parts.get(c, c) for c in what) + "; rlimits"


def reap(owner: int) -> None:
    """Kill and remove the cgroups of the sandboxes started by process ``owner`` (a grading
    worker the grader killed: it could not clean up after itself)."""
    with contextlib.suppress(OSError, ValueError):
        for base, _ in _hierarchies():
            for d in base.glob(f"initlab-{owner}-*"):
                for pid in _procs(d):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                _rmdir(d)


def _rmdir(d: Path, tries: int = 50) -> None:
    for _ in range(tries):
        try:
            return d.rmdir()
        except FileNotFoundError:
            return None
        except OSError:
            time.sleep(0.02)


def _procs(d: Path) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in (d / "cgroup.procs").read_text().split()]
    return []


def _cpu_seconds(d: Path) -> float | None:
    """The CPU seconds cgroup ``d`` counted (cpuacct on v1, cpu.stat on v2), if it counts them."""
    with contextlib.suppress(OSError, KeyError, ValueError):
        if (d / "cpuacct.usage").exists():
            return int((d / "cpuacct.usage").read_text()) / 1e9
        stat = dict(line.split() for line in (d / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"]) / 1e6
    return None


def _tree_cpu(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` and its descendants (0 if unknown)."""
    import psutil

    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += sum(p.cpu_times()[:2])
    return total


# --- the sandbox --------------------------------------------------------------------------------


class Sandbox:
    """One started driver: :attr:`proc` (stdin, stdout and stderr pipes), its :attr:`limits`."""

    def __init__(self, proc: subprocess.Popen[bytes], cgroups: list[Path], limits: str) -> None:
        self.proc, self.cgroups, self.limits = proc, cgroups, limits
        self.workdir: str | None = None  # the unsandboxed driver's folder, removed by kill()
        self._cpu: float | None = None

    def kill(self) -> float:
        """Kill every process of the sandbox, remove its cgroups and return its CPU seconds."""
        if self._cpu is not None:
            return self._cpu
        counted = any(_cpu_seconds(d) is not None for d in self.cgroups)
        cpu = 0.0 if counted else _tree_cpu(self.proc.pid)
        deadline = time.monotonic() + 10
        while True:
            pids = [p for d in self.cgroups for p in _procs(d)]
            if self.proc.returncode is None:  # its process group too (the unsandboxed driver's)
                pids.append(-self.proc.pid)
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if self.proc.poll() is None:
                self.proc.kill()
            if not any(_procs(d) for d in self.cgroups) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        self.proc.wait()
        cpu += sum(_cpu_seconds(d) or 0.0 for d in self.cgroups)
        for d in self.cgroups:
            _rmdir(d)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._cpu = cpu
        return cpu


def launch(driver: list[str], notebook: bytes, notebook_name: str, *, sandboxed: bool) -> Sandbox:
    """Start ``driver`` with ``notebook`` as ``notebook_name`` in its working folder: under
    bubblewrap, or with ``sandboxed=False`` as a plain child process in a fresh temporary folder
    (for trusted notebooks); both bounded by the rlimits and, where there is one, a cgroup."""
    files: list[IO[bytes]] = []
    workdir = cgroups = None
    try:
        if sandboxed:
            if (bwrap := find_bwrap()) is None:
                raise SandboxUnavailable("bwrap (bubblewrap) is not installed")
            files = [_bpf_file(), tempfile.TemporaryFile()]
            files[1].write(notebook)
            files[1].seek(0)
            cmd = bwrap_command(bwrap, files[0].fileno(), files[1].fileno(), notebook_name)
            cmd += [a for k, v in _env().items() for a in ("--setenv", k, v)] + driver
            env, cwd = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, "/"
        else:
            workdir = cwd = tempfile.mkdtemp(prefix="initlab-")
            Path(cwd, Path(notebook_name).name).write_bytes(notebook)
            env = {**os.environ, **_env(), "HOME": cwd, "TMPDIR": cwd}
            cmd, env["MPLCONFIGDIR"] = driver, cwd + "/.matplotlib"
        cgroups, bounds = _make_cgroups()
        rlimits = {**RLIMITS, **_thread_limit(cgroups, sandboxed)}
        config = {"rlimits": rlimits, "procs": [str(d / "cgroup.procs") for d in cgroups]}
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, json.dumps({**config, "argv": cmd})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=[f.fileno() for f in files],
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    except BaseException:
        for d in cgroups or []:
            _rmdir(d, tries=1)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        for f in files:
            f.close()
    limits = f"{bounds} AS {MEMORY_BYTES >> 20} MiB, FSIZE {TMP_BYTES >> 20} MiB, "
    limits += f"NOFILE {NOFILE}, CORE 0"
    if "RLIMIT_NPROC" in rlimits:
        limits += f", NPROC {rlimits['RLIMIT_NPROC']} (this user's tasks + {PIDS_MAX})"
    if sandboxed:
        limits += f"; /tmp {TMP_BYTES >> 20} MiB, /dev/shm {SHM_BYTES >> 20} MiB; seccomp"
    box = Sandbox(proc, cgroups, limits)
    box.workdir = workdir
    return box


def _thread_limit(cgroups: list[Path], sandboxed: bool) -> dict[str, int]:
    """Threads bounded without a pids cgroup: ``RLIMIT_NPROC`` at this user's tasks now plus
    :data:`PIDS_MAX` (the kernel counts threads per real user); root, which that limit does
    not bind, gets no sandbox (fail closed: a thread bomb would exhaust the host's pids)."""
    if not sandboxed or any((d / "pids.max").exists() for d in cgroups):
        return {}
    if os.geteuid() == 0:
        raise SandboxUnavailable(
            "no writable pids cgroup, and grade runs as root, whom RLIMIT_NPROC does not bind: "
            "a submission's threads would be unbounded. Run grade as an ordinary user, or "
            "where cgroups are writable (a delegated cgroup v2 subtree), or use --no-sandbox "
            "for trusted notebooks only"
        )
    import psutil

    uid = os.getuid()
    tasks = 0
    for proc in psutil.process_iter(["uids", "num_threads"]):
        with contextlib.suppress(psutil.Error, TypeError):
            tasks += proc.info["num_threads"] if proc.info["uids"].real == uid else 0
    return {"RLIMIT_NPROC": tasks + PIDS_MAX}


def sandbox_self_test() -> str | None:
    """``None`` if a bubblewrap sandbox can start the driver's imports here, else why not."""
    import initlab

    mine = str(Path(initlab.__file__).resolve())
    probe = f"import initlab, pathlib; assert str(pathlib.Path(initlab.__file__).resolve()) == {mine!r}, 'another initlab'"
    try:
        box = launch(driver_command(probe), b"{}", "self-test.ipynb", sandboxed=True)
    except (SandboxUnavailable, OSError) as exc:
        return _short(str(exc))
    try:
        _, err = box.proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        err = b"timed out"
    finally:
        box.kill()
    if box.proc.returncode != 0:
        return _short(err.decode(errors="replace") or f"exit {box.proc.returncode}")
    return None
