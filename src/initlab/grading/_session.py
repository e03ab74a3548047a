"""One submission's sandbox, as seen from the grader: the notebook's run and the answers.

:class:`Session` starts the driver (:mod:`initlab.grading._sandbox`) in the sandbox of
:mod:`initlab.grading._bwrap` (or, with ``sandboxed=False``, as a plain child process), sends
it the notebook's code cells and serves the tests: :meth:`Session.value` and
:meth:`Session.call`. The grader keeps the clock: every wait has one deadline (the cell
limit, the call limit, the submission's limit, whichever comes first), enforced by a
watchdog that kills the sandbox, which ends any blocked read. Messages are accepted only in
the state that expects them (the next cell's index, the id of the request being served),
so whatever the sandbox sends costs at most a bounded number of messages of bounded size.

A cell that kills the driver or runs past the limit is skipped on a restart (at most
:data:`MAX_RESTARTS` times). What the learner sees of the notebook's run (each cell's
error) is frozen when the first run ends, before any test: a restart during the tests adds
nothing, so nothing a learner's function saw of a hidden test's inputs can come back.

:class:`InProcessSession` runs the same driver in a thread of this process, over the same
messages and codec, for fast tests of trusted notebooks.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any

from . import _wire as W

MAX_RESTARTS = 5
MAX_CALLBACKS = 10_000  # the grader's functions one call of a learner's function may call
BACKSTOP_S = 10.0  # at most this (and at most the cell limit again) past the cell limit
STARTUP_S = 120.0  # for the driver's imports (torch, IPython) on a loaded machine
STDERR_BYTES = 4096  # of the sandbox's stderr kept (for the reason a first start failed)


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


class _Expired(Exception):
    """The watchdog killed the sandbox at a deadline."""


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
        self.frozen = False  # the learner-visible record of the run is final
        self.hung: dict[str, str] = {}
        self.broken: str | None = None  # why the notebook cannot be run again
        self.cpu_seconds = 0.0
        self.starts = 0
        self._box: Any = None
        self._rx: Connection | None = None
        self._tx: Connection | None = None
        self._stderr = bytearray()
        self._lock = threading.Lock()
        self._launched = False
        self._next_id = 0
        self.test = ""  # the test being run: with the call's number, it seeds each call
        self._calls = 0

    # -- process ---------------------------------------------------------------------------------

    def _spawn(self) -> None:
        from ._bwrap import driver_command, launch

        box = launch(driver_command(), self.nb_bytes, self.nb_name, sandboxed=self.sandboxed)
        proc = box.proc
        self._rx = Connection(os.dup(proc.stdout.fileno()), writable=False)
        self._tx = Connection(os.dup(proc.stdin.fileno()), readable=False)
        for f in (proc.stdin, proc.stdout):
            f.close()
        self._stderr = bytearray()
        threading.Thread(target=self._drain, args=(proc.stderr,), daemon=True).start()
        self._box = box

    def _drain(self, stream: Any) -> None:
        """Keep the last :data:`STDERR_BYTES` of the sandbox's stderr (a pipe, never a file)."""
        with contextlib.suppress(OSError, ValueError):
            while chunk := stream.read1(1 << 16):
                self._stderr += chunk
                del self._stderr[:-STDERR_BYTES]

    def kill(self) -> None:
        """Kill the sandbox and every process in it (idempotent, from any thread)."""
        with self._lock:
            box, self._box = self._box, None
            conns, self._rx, self._tx = (self._rx, self._tx), None, None
        if box is not None:
            self.cpu_seconds += box.kill()
        for c in conns:
            if c is not None:
                with contextlib.suppress(OSError):
                    c.close()

    def _stop(self) -> None:
        """Kill the sandbox's processes now (the watchdog's thread); :meth:`kill` cleans up."""
        box = self._box
        if box is not None:
            with contextlib.suppress(OSError):
                os.killpg(box.proc.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                box.proc.kill()

    def _alive(self) -> bool:
        return self._box is not None and self._box.proc.poll() is None

    def stderr_tail(self) -> str:
        lines = bytes(self._stderr).decode(errors="replace").strip().splitlines()
        return W.short(lines[-1]) if lines else ""

    @contextlib.contextmanager
    def _clock(self, seconds: float) -> Iterator[None]:
        """Run the block under a deadline of ``seconds`` (and the submission's): past it the
        watchdog kills the sandbox; the block's blocked read then ends, and this raises
        :class:`SubmissionTimeout` (the submission's deadline) or :class:`_Expired`."""
        until = min(time.monotonic() + seconds, self.deadline)
        state = {"done": False, "fired": False}
        lock = threading.Lock()

        def fire() -> None:
            with lock:
                if state["done"]:
                    return
                state["fired"] = True
            self._stop()

        timer = None
        if math.isfinite(until):
            timer = threading.Timer(max(0.0, until - time.monotonic()), fire)
            timer.daemon = True
            timer.start()
        try:
            yield
        except (EOFError, OSError, W.ProtocolError, AttributeError):
            if not state["fired"]:
                raise
        finally:
            with lock:
                state["done"] = True
            if timer is not None:
                timer.cancel()
        if state["fired"]:
            if until >= self.deadline:
                raise SubmissionTimeout
            raise _Expired

    def _send(self, msg: Any) -> None:
        try:
            W.send(self._tx, msg)  # type: ignore[arg-type]
        except (OSError, AttributeError):
            raise EOFError("the sandbox closed its channel") from None

    def _receive(self) -> tuple[Any, list[bytes]]:
        if self._rx is None:
            raise EOFError("the sandbox is not running")
        return W.receive(self._rx)

    # -- the notebook ---------------------------------------------------------------------------

    def launch(self) -> None:
        """Start the sandbox and send it the notebook, without waiting (see :meth:`start`)."""
        self.kill()
        self._spawn()
        self.starts += 1
        with contextlib.suppress(EOFError):  # start() reports it
            self._send(W.Setup(self.cells, sorted(self.skip), self._cell_s()))
        self._launched = True

    def start(self) -> None:
        """(Re)start the sandbox and run the notebook, skipping cells that killed it before."""
        for _ in range(MAX_RESTARTS + 1):
            if not self._launched:
                self.launch()
            self._launched = False
            todo = [i for i in range(len(self.cells)) if i not in self.skip]
            current: int | None = None
            why = ""
            try:
                while True:
                    with self._clock(STARTUP_S if current is None else self._hard_limit_s()):
                        msg, _ = self._receive()
                    if isinstance(msg, W.Cell) and current is None and todo and msg.i == todo[0]:
                        current = todo.pop(0)
                    elif isinstance(msg, W.Done) and msg.i == current:
                        if msg.error and not self.frozen:
                            self.cell_errors.setdefault(current, W.short(msg.error))
                        current = None
                    elif isinstance(msg, W.Ready) and current is None and not todo:
                        self.frozen = True
                        return
                    else:
                        raise W.ProtocolError("a message out of order while running the notebook")
            except _Expired:
                why = f"ran past {self._hard_limit_s():g} s and was skipped"
            except (EOFError, OSError, W.ProtocolError) as exc:
                code = self._exit_code()
                if current is None:
                    detail = self.stderr_tail() or f"{type(exc).__name__} {exc}".strip()
                    self.kill()
                    raise RuntimeError(f"the sandbox failed (exit {code}): {detail}") from None
                why = f"ended the process (exit {code}) and was skipped"
            self.kill()
            if current is None:
                raise RuntimeError("the sandbox stopped between cells")
            self.skip.add(current)
            if not self.frozen:
                self.cell_errors[current] = why
        raise RuntimeError(f"the notebook killed the sandbox {MAX_RESTARTS + 1} times")

    def _exit_code(self) -> int | None:
        box = self._box
        if box is None:
            return None
        try:
            return box.proc.wait(timeout=2)
        except Exception:  # noqa: BLE001 - still running: it is killed next
            return None

    def _cell_s(self) -> int:
        return max(1, int(self.cell_timeout))

    def _hard_limit_s(self) -> float:
        """When a cell that ignored its interrupt is killed: the cell limit, then as long
        again (at most :data:`BACKSTOP_S`) for the interrupt to take effect."""
        return self._cell_s() + min(BACKSTOP_S, self._cell_s())

    # -- answers ---------------------------------------------------------------------------------

    def _ensure(self) -> None:
        if self.broken is not None:
            raise LearnerError(self.broken)
        if not self._alive():
            try:
                self.start()
            except RuntimeError:
                # Fixed text: a restart may follow a hidden test, and nothing of its run
                # (stderr, errors) may reach the learner.
                self.broken = "the notebook could not be run again after a crash"
                raise LearnerError(self.broken) from None

    def begin_test(self, name: str) -> None:
        """The calls that follow belong to test ``name`` (their seeds derive from it)."""
        self.test, self._calls = name, 0

    def _request_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def value(self, name: str) -> tuple[str, Any]:
        """``("missing", None)``, ``("callable", None)`` or ``("value", (node, blobs))``."""
        self._ensure()
        rid = self._request_id()
        unreadable = ("value", (W.OpaqueNode("a value that could not be read"), []))
        try:
            with self._clock(self.call_timeout):
                self._send(W.Get(rid, name))
                msg, blobs = self._receive()
        except (_Expired, EOFError, OSError, W.ProtocolError):
            self.kill()
            return unreadable
        if isinstance(msg, W.Missing | W.IsCallable | W.Value) and msg.id == rid:
            if isinstance(msg, W.Value):
                return "value", (msg.value, blobs)
            return ("missing" if isinstance(msg, W.Missing) else "callable"), None
        self.kill()
        return unreadable

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call the learner's ``name`` in the sandbox; return the result as grader objects.

        The call has one deadline, ``call_timeout`` from now, whatever it calls back."""
        if name in self.hung:
            raise LearnerError(self.hung[name])
        callables: list[Any] = []
        payload = W.dumps_call((args, kwargs), callables)
        leaves = W.leaves_of([args, kwargs])
        self._ensure()
        rid = self._request_id()
        self._calls += 1
        seed = W.seed_of(self.test, self._calls)
        try:
            with self._clock(self.call_timeout):
                self._send(W.Call(rid, name, payload, seed))
                for _ in range(MAX_CALLBACKS + 1):
                    msg, blobs = self._receive()
                    if getattr(msg, "id", None) != rid:
                        raise W.ProtocolError("a reply to another request")
                    if isinstance(msg, W.Callback):
                        self._send(self._callback(rid, msg, blobs, callables))
                    elif isinstance(msg, W.Raised):
                        text = f"{name} raised {W.short(msg.error)}"
                        raise _learner_exception(msg.exc_type)(text)
                    elif isinstance(msg, W.Value):
                        return self._result(msg, blobs, leaves)
                    else:
                        raise W.ProtocolError("an undeclared reply to a call")
                raise W.ProtocolError(f"more than {MAX_CALLBACKS} callbacks in one call")
        except LearnerError:  # the learner's own exception (an OSError subclass too)
            raise
        except _Expired:
            self.hung[name] = f"{name} did not return within {self.call_timeout:g} s"
            raise LearnerError(self.hung[name]) from None
        except (EOFError, OSError):
            self.kill()
            self.hung[name] = f"{name} ended the sandbox process"
            raise LearnerError(self.hung[name]) from None
        except W.ProtocolError as exc:
            self.kill()
            raise LearnerError(f"{name}: {exc}") from None

    @staticmethod
    def _result(msg: W.Value, blobs: list[bytes], leaves: list[Any]) -> Any:
        budget = W.Budget(blobs)
        result = W.decode(msg.value, blobs, leaves, budget)
        if len(msg.leaves) != len(leaves):
            raise W.ProtocolError("a wrong number of argument states")
        for leaf, state in zip(leaves, msg.leaves, strict=True):
            W.copy_back(leaf, state, budget)
        return result

    @staticmethod
    def _callback(rid: int, msg: W.Callback, blobs: list[bytes], callables: list[Any]) -> W.Reply:
        if not 0 <= msg.handle < len(callables):
            raise W.ProtocolError("a callback to an unknown function")
        try:
            args, kwargs = W.decode(msg.args, blobs, [])
            if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
                raise TypeError("keyword arguments must have string names")
            result = callables[msg.handle](*args, **kwargs)
            return W.Reply(rid, True, W.dumps_call(result, callables))
        except W.ProtocolError:
            raise
        except Exception as exc:  # the test's callable failed on the learner's input
            import pickle

            return W.Reply(rid, False, pickle.dumps(W.short(f"{type(exc).__name__}: {exc}")))


class _Thread:
    """The in-process driver, shaped like a sandbox for :class:`Session`."""

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread
        self.proc = self

    def poll(self) -> int | None:
        return None if self.thread.is_alive() else 0

    def wait(self, timeout: float | None = None) -> int:
        self.thread.join(timeout)
        return 0

    def kill(self) -> float:
        return 0.0


class InProcessSession(Session):
    """The driver in a thread of this process, over the same messages and codec: for trusted
    notebooks in the test suite (no sandbox, no cell or call limit; the otter cells dropped,
    since ``otter`` is the grader's own module here)."""

    def __init__(self, cells: list[str]) -> None:
        kept = [c for c in cells if "grader.check" not in c and "otter" not in c]
        inf = math.inf
        super().__init__(
            kept, b"", "", sandboxed=False, cell_timeout=3600, call_timeout=inf, deadline=inf
        )

    def _spawn(self) -> None:
        from ._sandbox import Driver

        to_driver_rx, to_driver_tx = Pipe(duplex=False)
        from_driver_rx, from_driver_tx = Pipe(duplex=False)
        driver = self.driver = Driver(to_driver_rx, from_driver_tx)
        thread = threading.Thread(target=self._run_driver, args=(driver,), daemon=True)
        thread.start()
        self._rx, self._tx, self._box = from_driver_rx, to_driver_tx, _Thread(thread)

    @property
    def namespace(self) -> dict[str, Any]:
        """The notebook's variables (the test suite compares fixtures with them)."""
        return self.driver.shell.user_ns

    def _run_driver(self, driver: Any) -> None:
        try:
            driver.run()
        except BaseException as exc:  # noqa: BLE001 - reported as the "sandbox's" stderr
            self._stderr += f"the in-process driver failed: {exc!r}".encode()
        finally:
            for c in (driver.incoming, driver.outgoing):
                c.close()
