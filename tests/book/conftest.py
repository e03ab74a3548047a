"""The small failing book of test_execution_behaviour.py is built in the background from the
end of the collection on (it takes a core for about 8 s), while the other stages run."""

import importlib.util
import tempfile
from pathlib import Path

import pytest

_HERE = Path(__file__).parent
_RUN: dict = {}


def _module():
    spec = importlib.util.spec_from_file_location(
        "_execution_behaviour", _HERE / "test_execution_behaviour.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _start() -> None:
    if not _RUN:
        tmp = tempfile.TemporaryDirectory(prefix="initlab-tiny-book-")
        _RUN["tmp"] = tmp
        _RUN["proc"] = _module().start_build(Path(tmp.name))


def pytest_collection_finish(session: pytest.Session) -> None:
    wanted = any(
        item.nodeid.startswith("tests/book/test_execution_behaviour.py") for item in session.items
    )
    if wanted and not session.config.option.collectonly:
        _start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    proc = _RUN.get("proc")
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()
    if "tmp" in _RUN:
        _RUN["tmp"].cleanup()


@pytest.fixture(scope="session")
def tiny_book_build():
    _start()
    return _RUN["proc"], Path(_RUN["tmp"].name)
