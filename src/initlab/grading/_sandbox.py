"""The driver that runs one submission inside the sandbox (``python -m initlab.grading._sandbox``).

It is the only process that runs submission code. Started by the grader
(:mod:`initlab.grading._session`) under bubblewrap, it talks to the grader over its stdin and
stdout (frames of :mod:`initlab.grading._protocol`; fds 0-2 are then pointed at /dev/null so
that the learner's prints go nowhere):

1. receive ``("setup", cells, skip, cell_timeout)``; run the code cells in order, in this
   process, with IPython's ``InteractiveShell`` (a stub ``otter`` module makes
   ``grader.check(...)`` a no-op), a cell time limit by ``SIGALRM``, and a ``cell`` message
   before each cell, so the grader can skip a cell that kills or hangs this process;
2. serve ``("get", name)`` and ``("call", name, args, kwargs)`` until the grader closes the
   channel. Results go back as data (JSON and ``.npy``, never pickle); calls of the grader's
   callables (:class:`~initlab.grading._protocol.Handle`) go back as ``callback`` messages.

Nothing here decides a score; a submission that tampers with this process only changes the
answers it gives, which it controls anyway.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import types
from typing import Any

from . import _protocol as P


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


class Driver:
    def __init__(self, fd_in: int, fd_out: int) -> None:
        self.fd_in, self.fd_out = fd_in, fd_out
        self.shell: Any = None

    def send(self, header: dict[str, Any], blobs: list[bytes] | None = None) -> None:
        P.write_frame(self.fd_out, P.pack_message(header, blobs or []))

    def receive(self) -> Any:
        return pickle.loads(P.read_frame(self.fd_in))  # from the grader: trusted

    # -- the notebook ------------------------------------------------------------------------

    def run_cells(self, cells: list[str], skip: list[int], cell_timeout: int) -> None:
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config

        config = Config()
        config.HistoryManager.enabled = False
        self.shell = InteractiveShell.instance(config=config, colors="NoColor")
        self.shell.showtraceback = lambda *a, **k: None  # errors are reported by message
        self.shell.showsyntaxerror = lambda *a, **k: None

        def on_alarm(signum: int, frame: Any) -> None:
            raise CellTimeout(f"the cell ran past its limit of {cell_timeout} s")

        for i, source in enumerate(cells):
            if i in skip:
                continue
            self.send({"ev": "cell", "i": i})
            signal.signal(signal.SIGALRM, on_alarm)
            signal.alarm(cell_timeout)
            try:
                result = self.shell.run_cell(source, store_history=False, silent=True)
                error = result.error_before_exec or result.error_in_exec
            except BaseException as exc:  # a KeyboardInterrupt/SystemExit IPython let through
                error = exc
            finally:
                signal.alarm(0)
            text = None if error is None else _describe(error)
            self.send({"ev": "done", "i": i, "error": text})

    # -- requests ----------------------------------------------------------------------------

    def callback(self, ident: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call the grader's callable ``ident`` on data; return its (pickled) result."""
        blobs: list[bytes] = []
        tree = P.encode([list(args), kwargs], blobs, leaves=[])
        self.send({"ev": "callback", "h": ident, "v": tree}, blobs)
        ok, value = self.receive()
        if not ok:
            raise RuntimeError(f"the grader's function raised {value}")
        return value

    def serve(self) -> None:
        namespace = self.shell.user_ns if self.shell is not None else {}
        while True:
            try:
                request = self.receive()
            except EOFError:
                return
            kind, name = request[0], request[1]
            value = namespace.get(name, _MISSING)
            if kind == "get":
                if value is _MISSING:
                    self.send({"ev": "missing"})
                elif callable(value) and not _is_data(value):
                    self.send({"ev": "callable"})
                else:
                    self.reply(value, [])
            elif kind == "call":
                args, kwargs = request[2], request[3]
                leaves = P.leaves_of([args, kwargs])
                try:
                    if not callable(value):
                        raise TypeError(f"{name} is not a function")
                    result = value(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - reported, never fatal
                    builtin = type(exc).__module__ == "builtins"
                    self.send(
                        {
                            "ev": "raised",
                            "type": type(exc).__name__ if builtin else None,
                            "error": _describe(exc),
                        }
                    )
                    continue
                self.reply(result, leaves)

    def reply(self, value: Any, leaves: list[Any]) -> None:
        blobs: list[bytes] = []
        try:
            tree = P.encode(value, blobs, leaves)
            states = [P.leaf_state(x, blobs) for x in leaves]
        except BaseException as exc:  # noqa: BLE001 - a value whose encoding fails
            self.send({"ev": "raised", "error": P.short(f"unusable value: {exc}")})
            return
        self.send({"ev": "value", "v": tree, "leaves": states}, blobs)


_MISSING = object()


def _describe(exc: BaseException) -> str:
    """``"ValueError: message"`` (or just the type's name), cut to a short line."""
    text = str(exc)
    return P.short(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _is_data(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def main() -> int:
    # The protocol keeps private copies of stdin/stdout; the learner's prints go to /dev/null.
    fd_in, fd_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    driver = Driver(fd_in, fd_out)
    P.Handle.caller = driver.callback
    _stub_otter()
    import torch  # noqa: F401  (imported once, before the learner's cells)

    torch.set_num_threads(1)
    try:
        setup = driver.receive()
    except EOFError:
        return 0
    _, cells, skip, cell_timeout = setup
    driver.run_cells(cells, list(skip), int(cell_timeout))
    driver.send({"ev": "ready"})
    driver.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
