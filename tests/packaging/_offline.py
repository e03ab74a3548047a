"""Helpers for the packaging tests: the repository, pip kept off the internet, the setup script."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
# Any connection pip tries to open through these goes to a closed local port and fails at once.
_NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}


def _pip_config() -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    values: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        values[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    return values


def local_sources() -> tuple[list[str], list[str]]:
    """The package indexes and find-links folders on this machine's disk that pip is set up with.

    Environment variables override pip's configuration files, so a test can point pip at these
    alone; an empty list means this machine keeps no local copy of the packages.
    """
    cfg = {**_pip_config()}
    for key in ("index-url", "extra-index-url", "find-links"):
        env = os.environ.get(f"PIP_{key.upper().replace('-', '_')}")
        if env:
            cfg[key] = env
    indexes = [
        u
        for key in ("index-url", "extra-index-url")
        for u in cfg.get(key, "").split()
        if u.startswith("file://")
    ]
    links = [u for u in cfg.get("find-links", "").split() if u.startswith(("/", "file://"))]
    return indexes, links


def offline_pip_env() -> dict[str, str]:
    """An environment in which pip installs from this machine's local package copies only.

    Network access is closed off (a proxy on a closed local port), so a test using it fails
    rather than reach the internet. On a machine with no local copy the calling test is skipped
    with the reason, except in CI (``CI`` set), where it fails.
    """
    indexes, links = local_sources()
    if not indexes and not links:
        why = (
            "pip is set up with no local package index or find-links folder on this machine, "
            "and the install tests never reach the internet (tests/packaging/_offline.py)"
        )
        if os.environ.get("CI"):
            raise RuntimeError(why)
        import pytest

        pytest.skip(why)
    env = {**os.environ, **_NO_NETWORK, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_RETRIES": "0"}
    env["PIP_INDEX_URL"] = indexes[0] if indexes else ""
    env["PIP_EXTRA_INDEX_URL"] = " ".join(indexes[1:])
    env["PIP_FIND_LINKS"] = " ".join(links)
    if not indexes:
        env["PIP_NO_INDEX"] = "1"
    return env


def setup_cell_script() -> ModuleType:
    """``scripts/setup_cell.py`` as a module."""
    spec = importlib.util.spec_from_file_location("setup_cell", ROOT / "scripts" / "setup_cell.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
