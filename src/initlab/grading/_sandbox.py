"""The driver that runs one submission (``python -m initlab.grading._sandbox``).

It is the only code that runs submission code, and it imports nothing of the grader but
the wire (:mod:`initlab.grading._wire`; an import-linter contract in pyproject.toml keeps it
so). Started by the grader (:mod:`initlab.grading._session`) inside the sandbox, it talks
over its stdin and stdout (fds 0-2 are then pointed at /dev/null, so the learner's prints go
nowhere):

1. receive :class:`~._wire.Setup`; run the code cells in order with IPython's
   ``InteractiveShell`` (a stub ``otter`` module makes ``grader.check(...)`` a no-op), a cell
   time limit by ``SIGALRM``, a :class:`~._wire.Cell` message before each cell and a
   :class:`~._wire.Done` after it, then :class:`~._wire.Ready`;
2. serve :class:`~._wire.Get` and :class:`~._wire.Call` until the grader closes the channel,
   answering with the request's id. Results go back as data; calls of the grader's callables
   (:class:`~._wire.Handle`) go back as :class:`~._wire.Callback` messages.

Nothing here decides a score; a submission that tampers with this process only changes the
answers it gives, which it controls anyway. :class:`Driver` also serves the grader's
in-process session (a thread, for the test suite), over the same messages.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
import types
import warnings
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from . import _wire as W


class CellTimeout(Exception):
    """A cell ran past its time limit."""


class _StubNotebook:
    """``otter.Notebook`` without effects: grading happens outside this process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _stub_otter() -> None:
    otter = types.ModuleType("otter")
    otter.Notebook = _StubNotebook  # type: ignore[attr-defined]
    sys.modules["otter"] = otter


_MISSING = object()


class Driver:
    def __init__(self, incoming: Connection, outgoing: Connection) -> None:
        self.incoming, self.outgoing = incoming, outgoing
        self.shell: Any = None
        self.request = 0  # the id of the request being served

    def send(self, msg: Any, blobs: list[bytes] | None = None) -> None:
        W.send(self.outgoing, msg, blobs or [])

    # -- the notebook ------------------------------------------------------------------------

    def run_cells(self, setup: W.Setup) -> None:
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config

        config = Config()
        config.HistoryManager.enabled = False
        with _quiet():
            self.shell = InteractiveShell.instance(config=config, colors="nocolor")
        self.shell.reset(new_session=False)
        self.shell.showtraceback = lambda *a, **k: None  # errors are reported by message
        self.shell.showsyntaxerror = lambda *a, **k: None
        alarm = threading.current_thread() is threading.main_thread()

        def on_alarm(signum: int, frame: Any) -> None:
            raise CellTimeout(f"the cell ran past its limit of {setup.cell_timeout} s")

        for i, source in enumerate(setup.cells):
            if i in setup.skip:
                continue
            self.send(W.Cell(i))
            if alarm:
                signal.signal(signal.SIGALRM, on_alarm)
                signal.alarm(setup.cell_timeout)
            try:
                with _quiet():
                    result = self.shell.run_cell(source, store_history=False, silent=True)
                error = result.error_before_exec or result.error_in_exec
            except BaseException as exc:  # a KeyboardInterrupt/SystemExit IPython let through
                error = exc
            finally:
                if alarm:
                    signal.alarm(0)
            self.send(W.Done(i, None if error is None else _describe(error)))

    # -- requests ----------------------------------------------------------------------------

    def callback(self, handle: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call the grader's callable ``handle`` on data; return its result."""
        blobs: list[bytes] = []
        node = W.encode([list(args), kwargs], blobs, leaves=[])
        self.send(W.Callback(self.request, handle, node, len(blobs)), blobs)
        reply = W.receive_request(self.incoming)
        if not isinstance(reply, W.Reply) or reply.id != self.request:
            raise RuntimeError("the grader did not answer the callback")
        value = W.decode_request_payload(reply.result)
        if not reply.ok:
            raise RuntimeError(f"the grader's function raised {value}")
        return value

    def serve(self) -> None:
        namespace = self.shell.user_ns if self.shell is not None else {}
        while True:
            try:
                request = W.receive_request(self.incoming)
            except (EOFError, OSError):
                return
            self.request = request.id
            value = namespace.get(request.name, _MISSING)
            if isinstance(request, W.Get):
                if value is _MISSING:
                    self.send(W.Missing(request.id))
                elif callable(value) and not _is_data(value):
                    self.send(W.IsCallable(request.id))
                else:
                    self.reply(value, [])
            elif isinstance(request, W.Call):
                args, kwargs = W.decode_request_payload(request.args)
                leaves = W.leaves_of([args, kwargs])
                try:
                    if not callable(value):
                        raise TypeError(f"{request.name} is not a function")
                    with _quiet(), _seeded(request.seed):
                        result = value(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - reported, never fatal
                    builtin = type(exc).__module__ == "builtins"
                    name = type(exc).__name__ if builtin else None
                    self.send(W.Raised(request.id, _describe(exc), name))
                    continue
                self.reply(result, leaves)

    def reply(self, value: Any, leaves: list[Any]) -> None:
        blobs: list[bytes] = []
        try:
            node = W.encode(value, blobs, leaves)
            states = [W.leaf_state(x, blobs) for x in leaves]
            msg = W.Value(self.request, node, states, len(blobs))
        except BaseException as exc:  # noqa: BLE001 - a value whose encoding fails
            self.send(W.Raised(self.request, W.short(f"unusable value: {exc}")))
            return
        self.send(msg, blobs)

    def run(self) -> None:
        """The whole conversation: setup, the cells, then requests until the channel ends."""
        W.Handle.caller = self.callback
        try:
            setup = W.receive_request(self.incoming)
        except (EOFError, OSError):
            return
        self.run_cells(setup)
        self.send(W.Ready())
        self.serve()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The learner's prints and warnings go nowhere while their code runs (the grader's
    in-process session shares this process: its state is restored before each reply)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run a call with torch's, NumPy's and ``random``'s global generators seeded with
    ``seed``, and restore them after it: the same call always computes the same thing, and
    (in the in-process session) the grader's own generators are left as they were."""
    import random

    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])


def _describe(exc: BaseException) -> str:
    """``"ValueError: message"`` (or just the type's name), cut to a short line."""
    text = str(exc)
    return W.short(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _is_data(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def main() -> int:
    # The wire keeps private copies of stdin/stdout; the learner's prints go to /dev/null.
    fd_in, fd_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    driver = Driver(Connection(fd_in, writable=False), Connection(fd_out, readable=False))
    _stub_otter()
    import torch  # noqa: F401  (imported once, before the learner's cells)

    torch.set_num_threads(1)
    driver.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
