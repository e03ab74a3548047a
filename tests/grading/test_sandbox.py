"""The sandbox's guarantees (:mod:`initlab.grading._bwrap`), each by an attack run inside it."""

from __future__ import annotations

import os
import platform
import signal
import stat
import sys
import time
from pathlib import Path

import psutil
import pytest

from initlab.grading import sandbox as B

pytestmark = pytest.mark.usefixtures("sandbox")


def start(code: str, *args: str, sandboxed: bool = True) -> B.Sandbox:
    return B.launch(
        [sys.executable, "-I", "-c", code, *args], b"{}", "x.ipynb", sandboxed=sandboxed
    )


def run(code: str, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    box = start(code, *args)
    try:
        out, err = box.proc.communicate(timeout=timeout)
    finally:
        box.kill()
    assert box.proc.returncode is not None
    return box.proc.returncode, out.decode(), err.decode()


def cgroup(box: B.Sandbox, file: str) -> Path | None:
    return next((d / file for d in box.cgroups if (d / file).exists()), None)


def killed_by(rc: int, sig: int) -> bool:  # bubblewrap exits 128 + the signal that killed it
    return rc in (-sig, 128 + sig)


def test_processes_are_refused_threads_work() -> None:
    code = """if True:
    import os, subprocess, threading, torch
    try:
        os.fork(); print("forked")
    except PermissionError:
        print("fork EPERM")
    try:
        subprocess.run(["true"]); print("spawned")
    except OSError as e:
        print("spawn", type(e).__name__)
    r = []
    t = threading.Thread(target=lambda: r.append(float((torch.ones(64, 64) @ torch.ones(64, 64)).sum())))
    t.start(); t.join(); print("thread", r)
    """
    rc, out, err = run(code)
    assert (rc, out.split("\n")) == (
        0,
        ["fork EPERM", "spawn PermissionError", "thread [262144.0]", ""],
    ), err


ABI = """if True:
    import ctypes, mmap, sys
    m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    m.write(bytes.fromhex(sys.argv[1]))
    print("calling", flush=True)
    ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(m)))()
    print("survived", flush=True)
    """


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86 machine code")
@pytest.mark.parametrize(
    "machine_code",
    [
        "b802000000cd80c3",  # mov eax, 2 (i386 fork); int 0x80; ret
        "b8390000400f05c3",  # mov eax, 0x40000039 (x32 fork); syscall; ret
    ],
    ids=["i386-fork", "x32-fork"],
)
def test_a_foreign_abi_kills_the_process(machine_code: str) -> None:
    rc, out, _ = run(ABI, machine_code)
    # Neither the caller nor a child (which would return into the same code) survives.
    assert out == "calling\n" and killed_by(rc, signal.SIGSYS), (rc, out)


def test_denied_system_calls() -> None:
    code = """if True:
    import ctypes, errno, os
    try:
        os.memfd_create("x"); print("memfd made")
    except PermissionError:
        print("memfd EPERM")
    libc = ctypes.CDLL(None, use_errno=True)
    nrs = dict(io_uring_setup=425, userfaultfd=323, bpf=321, perf_event_open=298, keyctl=250,
               add_key=248, ptrace=101, unshare=272, setns=308, mount=165, chroot=161,
               pivot_root=155, process_vm_readv=310)
    bad = [n for n, nr in nrs.items() if libc.syscall(nr, 0, 0, 0, 0, 0) != -1 or ctypes.get_errno() != errno.EPERM]
    print("allowed", bad)
    """
    rc, out, err = run(code)
    if platform.machine() == "x86_64":
        assert out == "memfd EPERM\nallowed []\n", err
    else:
        assert out.startswith("memfd EPERM\n"), err


def test_file_systems_and_memory_are_bounded() -> None:
    code = """if True:
    import os
    for path, n in (("/dev/shm/x", 200), ("/tmp/work/fill", 300)):
        chunk, done = b"x" * (1 << 20), 0
        try:
            with open(path, "wb") as f:
                for _ in range(n):
                    f.write(chunk); f.flush(); done += 1
            print(path, "wrote", done)
        except OSError as e:
            print(path, os.strerror(e.errno), done)
        os.unlink(path)
    try:
        b = bytearray(6 << 30); print("allocated")
    except MemoryError:
        print("MemoryError")
    print(os.readlink("/proc/self/fd/1")[:5], os.readlink("/proc/self/fd/2")[:5])
    """
    rc, out, err = run(code)
    lines = out.splitlines()
    shm, tmp = lines[0].split(), lines[1].split()
    assert shm[:2] == ["/dev/shm/x", "No"] and int(shm[-1]) <= B.SHM_BYTES >> 20, out
    assert tmp[0] == "/tmp/work/fill" and tmp[1] in ("No", "File") and int(tmp[-1]) <= B.TMP_BYTES >> 20
    assert lines[2:] == ["MemoryError", "pipe: pipe:"] and rc == 0, err


def test_limits_are_set_and_outputs_are_pipes() -> None:
    code = "import resource as r; print(r.getrlimit(r.RLIMIT_AS), r.getrlimit(r.RLIMIT_NOFILE), flush=True)"
    box = start(code + "; import sys; sys.stdin.read()")
    try:
        for f in (box.proc.stdin, box.proc.stdout, box.proc.stderr):
            assert f is not None and stat.S_ISFIFO(os.fstat(f.fileno()).st_mode)
        if not box.cgroups:
            assert box.limits.startswith("rlimits only"), box.limits
            pytest.skip(f"no writable cgroup here: {box.limits}")
        want = {
            "memory.limit_in_bytes": B.CGROUP_MEMORY_BYTES,
            "memory.memsw.limit_in_bytes": B.CGROUP_MEMORY_BYTES,
            "memory.max": B.CGROUP_MEMORY_BYTES,
            "pids.max": B.PIDS_MAX,
            "cpu.shares": 1024,
            "cpu.cfs_quota_us": 100000,
            "cpu.cfs_period_us": 100000,
        }
        for file, value in want.items():
            if (path := cgroup(box, file)) is not None:
                assert int(path.read_text()) == value, file
        assert box.limits.startswith("cgroup v"), box.limits
        assert box.proc.stdout is not None
        limits = box.proc.stdout.readline().decode()
        assert limits == f"({B.MEMORY_BYTES}, {B.MEMORY_BYTES}) ({B.NOFILE}, {B.NOFILE})\n"
    finally:
        box.kill()


def test_memory_cgroup_counts_tmpfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """RLIMIT_AS does not see tmpfs pages; the cgroup does (here limited to 150 MiB)."""
    monkeypatch.setattr(B, "CGROUP_MEMORY_BYTES", 150 << 20)
    box = start("""if True:
    chunk = b"x" * (1 << 20)
    with open("/tmp/work/fill", "wb") as f:
        for i in range(250):
            f.write(chunk); f.flush()
            print(i, flush=True)
    print("wrote 250 MiB")
    """)
    try:
        if cgroup(box, "memory.limit_in_bytes") is None and cgroup(box, "memory.max") is None:
            pytest.skip(f"no memory cgroup: {box.limits}")
        out, _ = box.proc.communicate(timeout=60)
    finally:
        box.kill()
    assert "wrote" not in out.decode() and killed_by(box.proc.returncode, signal.SIGKILL)
    assert int(out.split()[-1]) < 150


def test_a_thread_bomb_is_stopped() -> None:
    box = start("""if True:
    import threading
    stop, n = threading.Event(), 0
    try:
        for n in range(500):
            threading.Thread(target=stop.wait, daemon=True).start()
    except RuntimeError:
        pass
    print(n, flush=True)
    stop.set()
    """)
    try:
        if cgroup(box, "pids.max") is None:
            pytest.skip(f"no pids cgroup: {box.limits}")
        out, err = box.proc.communicate(timeout=60)
    finally:
        box.kill()
    assert int(out) < B.PIDS_MAX, err


LOOP = """if True:
    import time
    t, n = time.perf_counter(), 0
    for i in range(4_000_000):
        n += i
    print(time.perf_counter() - t)
    """
HOG = """if True:
    import hashlib, threading, time
    b = bytes(1 << 20)
    def hog():
        while True:
            hashlib.sha256(b).digest()
    for _ in range(8):
        threading.Thread(target=hog, daemon=True).start()
    print("hogging", flush=True)
    time.sleep(60)
    """


def test_neighbours_share_the_cpu_fairly() -> None:
    hog = start(HOG)
    try:
        if cgroup(hog, "cpu.cfs_quota_us") is None and cgroup(hog, "cpu.max") is None:
            pytest.skip(f"no cpu cgroup: {hog.limits}")
        assert hog.proc.stdout is not None and hog.proc.stdout.readline() == b"hogging\n"
        t0 = time.monotonic()
        time.sleep(0.3)
        beside = float(run(LOOP)[1])
        wall = time.monotonic() - t0
    finally:
        cpu = hog.kill()
    alone = float(run(LOOP)[1])
    print(f"loop alone {alone:.2f} s, beside 8 busy threads {beside:.2f} s; hog {cpu:.2f} CPU s")
    assert beside <= 2.2 * alone, (alone, beside)
    assert cpu <= 1.25 * wall + 0.5, (cpu, wall)  # a quota of one core


@pytest.mark.parametrize("sandboxed", [True, False], ids=["sandboxed", "unsandboxed"])
def test_kill_leaves_nothing(sandboxed: bool) -> None:
    code = "import os, threading, time; os.fork() if len(os.sys.argv) > 1 else None; print('up', flush=True); time.sleep(60)"
    box = start(code, *([] if sandboxed else ["fork"]), sandboxed=sandboxed)
    assert box.proc.stdout is not None and box.proc.stdout.readline() == b"up\n"
    pids = {box.proc.pid, *(p.pid for p in psutil.Process(box.proc.pid).children(recursive=True))}
    pids |= {int(p) for d in box.cgroups for p in (d / "cgroup.procs").read_text().split()}
    assert len(pids) >= 2
    cpu = box.kill()
    assert box.kill() == cpu >= 0
    assert not any(d.exists() for d in box.cgroups)
    left = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert left == [] and (box.workdir is None or not os.path.exists(box.workdir))


def test_no_cgroup_means_rlimits_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a writable cgroup: rlimits, with RLIMIT_NPROC bounding threads; as root, which
    RLIMIT_NPROC does not bind, no sandbox at all (fails closed)."""
    monkeypatch.setattr(B, "_hierarchies", lambda: [])
    monkeypatch.setattr(B.os, "geteuid", lambda: 1000)  # an ordinary user
    box = start("import resource; print(resource.getrlimit(resource.RLIMIT_NPROC)[0])")
    out, _ = box.proc.communicate(timeout=60)
    assert box.kill() >= 0 and box.cgroups == []
    assert box.limits.startswith("rlimits only (no writable cgroup): AS "), box.limits
    assert "NPROC" in box.limits and int(out) >= B.PIDS_MAX, (out, box.limits)
    monkeypatch.setattr(B.os, "geteuid", lambda: 0)
    with pytest.raises(B.SandboxUnavailable, match="threads would be unbounded"):
        start("print('never')")


def test_fails_closed_without_libseccomp(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise RuntimeError("Unable to find libseccomp")

    monkeypatch.setattr(B, "_load_seccomp", missing)
    with pytest.raises(B.SandboxUnavailable, match="libseccomp"):
        start("print('ran')")
    assert "libseccomp" in (B.sandbox_self_test() or "")
    assert "--no-sandbox" in B.NO_SANDBOX_HELP and "libseccomp2" in B.NO_SANDBOX_HELP
    monkeypatch.undo()
    monkeypatch.setattr(B.platform, "machine", lambda: "pdp11")
    with pytest.raises(B.SandboxUnavailable, match="pdp11"):
        start("print('ran')")
    assert "pdp11" in (B.sandbox_self_test() or "")


def test_the_sandbox_imports_the_graders_own_initlab(tmp_path: Path) -> None:
    """A checkout on PYTHONPATH beside the installed copy: the sandbox's driver imports the
    copy the grader runs (isolated mode would otherwise find the other one, or none)."""
    import shutil
    import subprocess

    shutil.copytree(Path(B.__file__).resolve().parents[2], tmp_path / "src")
    code = (
        "from initlab.grading import sandbox as B, sandbox_self_test\n"
        "assert sandbox_self_test() is None, sandbox_self_test()\n"
        "box = B.launch(B.driver_command('import initlab; print(initlab.__file__)'), b'{}',"
        " 'x.ipynb', sandboxed=True)\n"
        "out, _ = box.proc.communicate(timeout=60); box.kill(); print(out.decode().strip())"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(tmp_path / "src" / "initlab" / "__init__.py")
