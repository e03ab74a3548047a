"""The grader's side of one sandboxed submission: start, restart, ask for answers, call functions.

:class:`Session` starts :mod:`initlab.grading._sandbox` under bubblewrap (or, with
``sandboxed=False``, as a plain child process), sends it the notebook's code cells and waits for
them to run. A cell that kills the driver or runs past the backstop is skipped on a restart
(at most :data:`MAX_RESTARTS` times). Then :meth:`Session.value` and :meth:`Session.call`
serve the tests: a call that does not return within ``call_timeout`` seconds kills the sandbox,
marks that function as hung (later calls fail at once) and the next call restarts it.

The sandbox itself (bubblewrap, seccomp, limits) is made by :mod:`initlab.grading._bwrap`.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

from . import _protocol as P
from ._bwrap import (
    SandboxUnavailable,
    _env,
    _limits,
    bwrap_command,
    find_bwrap,
    seccomp_no_fork,
)

MAX_RESTARTS = 5
BACKSTOP_S = 10.0  # at most this (and at most the cell limit again) before the grader kills
# a driver that stays silent past the cell limit
STARTUP_S = 120.0  # for the driver's imports (torch, IPython) on a loaded machine


class LearnerError(Exception):
    """A learner's function raised, hung, crashed or returned something unusable."""


_RAISED: dict[str, type] = {}


def _learner_exception(name: Any) -> type:
    """The class to raise in the grader for an exception the learner's function raised: a
    :class:`LearnerError` that is also the builtin exception of that name (``ValueError``,
    ...), so a test can expect it; only subclasses of ``Exception`` qualify."""
    import builtins

    base = getattr(builtins, name, None) if isinstance(name, str) else None
    if not (isinstance(base, type) and issubclass(base, Exception)) or base is LearnerError:
        return LearnerError
    if name not in _RAISED:
        try:
            _RAISED[name] = type(f"Learner{name}", (LearnerError, base), {})
        except TypeError:  # an incompatible layout
            return LearnerError
    return _RAISED[name]


class SubmissionTimeout(BaseException):
    """The whole submission ran past its wall-clock limit (a BaseException, so that no test's
    ``except Exception`` catches it)."""


def _tree_cpu(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` and its descendants (0 if unknown)."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


# --- the session --------------------------------------------------------------------------------


class Session:
    """One submission's sandbox, as seen from the grader."""

    def __init__(
        self,
        cells: list[str],
        notebook_bytes: bytes,
        notebook_name: str,
        *,
        sandboxed: bool,
        cell_timeout: float,
        call_timeout: float,
        deadline: float,
    ) -> None:
        self.cells, self.nb_bytes, self.nb_name = cells, notebook_bytes, notebook_name
        self.sandboxed = sandboxed
        self.cell_timeout, self.call_timeout, self.deadline = cell_timeout, call_timeout, deadline
        self.skip: set[int] = set()
        self.cell_errors: dict[int, str] = {}
        self.hung: dict[str, str] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.broken: str | None = None  # why the notebook cannot be run again
        self._launched = False
        self.cpu_seconds = 0.0  # of the sandbox's processes, measured when they are killed
        self.starts = 0
        self._stderr: Any = None

    # -- process ---------------------------------------------------------------------------------

    def _spawn(self) -> None:
        driver = [sys.executable, "-I", "-m", "initlab.grading._sandbox"]
        keep: list[int] = []
        self._stderr = tempfile.TemporaryFile()
        if self.sandboxed:
            bwrap = find_bwrap()
            if bwrap is None:
                raise SandboxUnavailable("bwrap not found")
            with tempfile.TemporaryFile() as nb_file:  # the notebook, as a file in its cwd
                nb_file.write(self.nb_bytes)
                nb_file.seek(0)
                nb_r = os.dup(nb_file.fileno())
            keep.append(nb_r)
            program = seccomp_no_fork()
            sc_fd = None
            if program is not None:
                sc_r, sc_w = os.pipe()
                os.write(sc_w, program)
                os.close(sc_w)
                keep.append(sc_r)
                sc_fd = sc_r
            cmd = bwrap_command(bwrap, sc_fd, nb_r, self.nb_name) + driver
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            for k, v in _env().items():
                cmd[-len(driver) : -len(driver)] = ["--setenv", k, v]
            cwd = "/"
        else:
            cmd, env, cwd = driver, {**os.environ, **_env()}, tempfile.mkdtemp(prefix="initlab-")
            env["HOME"] = env["TMPDIR"] = cwd
            env["MPLCONFIGDIR"] = cwd + "/.matplotlib"
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                pass_fds=keep,
                preexec_fn=_limits,
                start_new_session=True,
                env=env,
                cwd=cwd,
            )
        finally:
            for fd in keep:
                os.close(fd)
        self.starts += 1

    def kill(self) -> None:
        """Kill the sandbox; with bubblewrap, its PID namespace takes every process with it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        self.cpu_seconds += _tree_cpu(proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the unsandboxed driver's session
        except ProcessLookupError:
            pass
        proc.kill()
        proc.wait()
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                f.close()

    def stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        lines = self._stderr.read()[-4000:].decode(errors="replace").strip().splitlines()
        return P.short(lines[-1]) if lines else ""

    def _send(self, obj: Any) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            P.write_frame(self.proc.stdin.fileno(), obj)
        except (BrokenPipeError, OSError):
            raise EOFError("the sandbox closed its channel") from None

    def _receive(self, until: float) -> tuple[dict[str, Any], list[bytes]]:
        """Read one message, or raise TimeoutError at ``until`` or EOFError if the driver died."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()

        def read_exact(n: int) -> bytes:
            chunks, got = [], 0
            while got < n:
                limit = min(until, self.deadline) - time.monotonic()
                if limit <= 0:
                    if time.monotonic() >= self.deadline:
                        raise SubmissionTimeout
                    raise TimeoutError
                ready, _, _ = select.select([fd], [], [], limit)
                if not ready:
                    continue
                chunk = os.read(fd, min(n - got, 1 << 20))
                if not chunk:
                    raise EOFError
                chunks.append(chunk)
                got += len(chunk)
            return b"".join(chunks)

        (n,) = struct.unpack(">I", read_exact(4))
        if n > P.MAX_FRAME:
            raise P.ProtocolError(f"frame of {n} bytes from the sandbox")
        return P.unpack_message(read_exact(n))

    # -- the notebook -------------------------------------------------------------------------------

    def launch(self) -> None:
        """Start the sandbox and send it the notebook, without waiting (see :meth:`start`)."""
        self.kill()
        self._spawn()
        try:
            self._send(pickle.dumps(("setup", self.cells, sorted(self.skip), self._cell_s())))
        except EOFError:
            pass  # start() reports it
        self._launched = True

    def start(self) -> None:
        """(Re)start the sandbox and run the notebook, skipping cells that killed it before."""
        for _ in range(MAX_RESTARTS + 1):
            if not self._launched:
                self.launch()
            self._launched = False
            current: int | None = None
            try:
                while True:
                    wait = STARTUP_S if current is None else self._hard_limit_s()
                    msg, _ = self._receive(time.monotonic() + wait)
                    if msg.get("ev") == "cell":
                        current = int(msg["i"])
                    elif msg.get("ev") == "done":
                        if msg.get("error") and int(msg["i"]) not in self.cell_errors:
                            self.cell_errors[int(msg["i"])] = P.short(msg["error"])
                        current = None
                    elif msg.get("ev") == "ready":
                        return
                    else:
                        raise P.ProtocolError("unexpected message while running the notebook")
            except (EOFError, TimeoutError, P.ProtocolError, KeyError, ValueError) as exc:
                code = None
                if self.proc is not None and not isinstance(exc, TimeoutError):
                    try:
                        code = self.proc.wait(timeout=2)  # the exit status, once it is known
                    except subprocess.TimeoutExpired:
                        pass
                self.kill()
                if current is None:
                    why = self.stderr_tail() or f"{type(exc).__name__} {exc}".strip()
                    raise RuntimeError(f"the sandbox failed (exit {code}): {why}") from None
                self.skip.add(current)
                if isinstance(exc, TimeoutError):
                    what = f"ran past {self._hard_limit_s():g} s and was skipped"
                else:
                    what = f"ended the process (exit {code}) and was skipped"
                self.cell_errors[current] = f"{what}"
        raise RuntimeError(f"the notebook killed the sandbox {MAX_RESTARTS + 1} times")

    def _cell_s(self) -> int:
        return max(1, int(self.cell_timeout))

    def _hard_limit_s(self) -> float:
        """When a cell that ignored its interrupt is killed: the cell limit, then as long
        again (at most :data:`BACKSTOP_S`) for the interrupt to take effect."""
        return self._cell_s() + min(BACKSTOP_S, self._cell_s())

    # -- answers ---------------------------------------------------------------------------------------

    def _ensure(self) -> None:
        if self.broken is not None:
            raise LearnerError(self.broken)
        if self.proc is None or self.proc.poll() is not None:
            try:
                self.start()
            except RuntimeError as exc:
                self.broken = P.short(f"restarting the notebook failed: {exc}")
                raise LearnerError(self.broken) from None

    def value(self, name: str) -> tuple[str, Any]:
        """``("missing", None)``, ``("callable", None)`` or ``("value", (tree, blobs))``."""
        self._ensure()
        self._send(pickle.dumps(("get", name)))
        try:
            msg, blobs = self._receive(time.monotonic() + self.call_timeout)
        except (EOFError, TimeoutError):
            self.kill()
            return "value", ({"t": "opaque", "type": "a value that could not be read"}, [])
        ev = msg.get("ev")
        if ev in ("missing", "callable"):
            return ev, None
        if ev == "value":
            return "value", (msg.get("v"), blobs)
        return "value", ({"t": "opaque", "type": "a value that could not be read"}, [])

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call the learner's ``name`` in the sandbox; return the result as grader objects."""
        if name in self.hung:
            raise LearnerError(self.hung[name])
        callables: list[Any] = []
        payload = P.dumps_call(("call", name, args, kwargs), callables)
        leaves = P.leaves_of([args, kwargs])
        self._ensure()
        try:
            self._send(payload)
            while True:
                msg, blobs = self._receive(time.monotonic() + self.call_timeout)
                ev = msg.get("ev")
                if ev == "callback":
                    self._send(self._callback(msg, blobs, callables))
                elif ev == "raised":
                    text = f"{name} raised {P.short(msg.get('error', ''))}"
                    raise _learner_exception(msg.get("type"))(text)
                elif ev == "value":
                    result = P.decode(msg.get("v"), blobs, leaves)
                    states = msg.get("leaves")
                    if not isinstance(states, list) or len(states) != len(leaves):
                        raise P.ProtocolError("wrong number of argument states")
                    for leaf, state in zip(leaves, states, strict=True):
                        P.copy_back(leaf, state, blobs)
                    return result
                else:
                    raise P.ProtocolError("unexpected message during a call")
        except TimeoutError:
            self.kill()
            self.hung[name] = f"{name} did not return within {self.call_timeout:g} s"
            raise LearnerError(self.hung[name]) from None
        except EOFError:
            self.kill()
            self.hung[name] = f"{name} ended the sandbox process"
            raise LearnerError(self.hung[name]) from None
        except P.ProtocolError as exc:
            self.kill()
            raise LearnerError(f"{name}: {exc}") from None

    def _callback(self, msg: dict[str, Any], blobs: list[bytes], callables: list[Any]) -> bytes:
        h = msg.get("h")
        if type(h) is not int or not 0 <= h < len(callables):
            raise P.ProtocolError("callback to an unknown function")
        try:
            args, kwargs = P.decode(msg.get("v"), blobs, [])
            if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
                raise TypeError("keyword arguments must have string names")
            result = callables[h](*args, **kwargs)
            return P.dumps_call((True, result), callables)
        except P.ProtocolError:
            raise
        except Exception as exc:  # the test's callable failed on the learner's input
            return pickle.dumps((False, P.short(f"{type(exc).__name__}: {exc}")))
