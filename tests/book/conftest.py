"""The small failing book of test_execution_behaviour.py, built when its test asks for it (in
the foreground: about 8 s on one core), once per session."""

import importlib.util
import subprocess
from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def _module():
    spec = importlib.util.spec_from_file_location(
        "_execution_behaviour", _HERE / "test_execution_behaviour.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_book_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str]:
    """(exit status, log) of building the small failing book."""
    tmp = tmp_path_factory.mktemp("tiny-book")
    proc: subprocess.Popen = _module().start_build(tmp)
    try:
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, (tmp / "log.txt").read_text(errors="replace")
