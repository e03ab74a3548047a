"""Fixtures for the checks of the rendered book: the site, its pages, one headless Chromium.

The site is ``--site-dir=DIR`` when given (a ``_build/html`` built elsewhere; its sources are
read from two folders up), else this checkout's ``_build/html`` as ``make book`` built it (the
``built_book`` fixture of the top-level conftest.py, which fails with the command to run when
the build is missing, failed or stale).
Pages come from that source tree's ``_toc.yml``, so a new chapter is checked automatically.

Chromium: ``--chromium=PATH``, else Debian's ``/usr/bin/chromium`` (or ``chromium`` on PATH),
driven by Playwright with ``executable_path`` (no ``playwright install``). Without it the
browser tests are skipped with a message saying how to install it, unless
``--require-browser`` (which `make test` passes when ``CI=true``) turns the skip into a failure. The file-based checks (links, launch buttons, previous/
next, hidden solutions, the execution report) need no browser and always run.

Each page is opened once, in a fresh browser context (empty cache and storage: a first
visit), over a local HTTP server; everything the checks need is recorded in a ``Visit``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _sitecheck as sc  # noqa: E402

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # No page may need another host: make every other host fail fast, without DNS.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
VIEWPORT = {"width": 1280, "height": 900}
PAGE_TIMEOUT_MS = 20_000

# Filled while the tests run, printed at the end (pytest_terminal_summary below).
WEIGHTS, EXTERNAL_LINKS, VISITED = sc.WEIGHTS, sc.EXTERNAL_LINKS, sc.VISITED


def chromium_path(config: pytest.Config) -> str | None:
    """``--chromium`` if given, else /usr/bin/chromium, else ``chromium`` on PATH."""
    override = config.getoption("chromium")
    candidates = [override] if override else ["/usr/bin/chromium", shutil.which("chromium")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def source_root(config: pytest.Config) -> Path:
    site = config.getoption("site_dir")
    return Path(site).resolve().parents[1] if site else sc.ROOT


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``page``: every page of _toc.yml; ``notebook_page``: its notebooks; ``executed_page``:
    the notebooks the build executes; ``exercise_page``: the ``*/exercises`` pages."""
    names = {"page", "notebook_page", "executed_page", "exercise_page"}
    wanted = names & set(metafunc.fixturenames)
    if not wanted:
        return
    root = source_root(metafunc.config)
    everything = sc.toc_pages(root)
    choice = {
        "page": everything,
        "notebook_page": [p for p in everything if p.is_notebook],
        "executed_page": sc.executed_pages(root, everything),
        "exercise_page": [p for p in everything if p.html.endswith("/exercises.html")],
    }
    for name in wanted:
        metafunc.parametrize(name, choice[name], ids=[p.docname for p in choice[name]])


@pytest.fixture(scope="session")
def src_root(pytestconfig: pytest.Config) -> Path:
    return source_root(pytestconfig)


@pytest.fixture(scope="session")
def pages(src_root: Path) -> list[sc.Page]:
    return sc.toc_pages(src_root)


@pytest.fixture(scope="session")
def site_dir(request: pytest.FixtureRequest) -> Path:
    given = request.config.getoption("site_dir")
    if given:
        site = Path(given).resolve()
        if not (site / "index.html").is_file():
            pytest.fail(f"--site-dir {given} holds no index.html: build the book there first")
        return site
    return Path(request.getfixturevalue("built_book")).resolve()


# ---------------------------------------------------------------- the browser


@dataclass
class Visit:
    """What one page did in the browser."""

    page: sc.Page
    url: str
    status: int | None = None
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    served: list[sc.Served] = field(default_factory=list)  # local answers, from the server
    failed: list[str] = field(default_factory=list)  # local requests that never got an answer
    external: list[str] = field(default_factory=list)  # requests to any other host
    mathjax: bool = False
    mjx: int = 0
    mjx_errors: int = 0
    text: str = ""  # body.innerText, code blocks removed, typeset math shown as MATH_MARK
    images: list[tuple[str, int]] = field(default_factory=list)  # (src, naturalWidth)
    cells: list[list[int]] = field(
        default_factory=list
    )  # naturalWidths of each div.cell's output images
    screenshot: Path | None = None
    seconds: float = 0.0

    @property
    def weight(self) -> tuple[int, int, int, int]:
        """(HTML bytes, asset bytes, requests, uncompressed bytes of all), as transferred."""
        html = sum(s.size for s in self.served if s.path.split("?")[0].endswith(self.page.html))
        total = sum(s.size for s in self.served)
        return html, total - html, len(self.served), sum(s.raw for s in self.served)


_SETTLE_JS = """
async () => {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) { await mj.startup.promise; }
  const imgs = [...document.images];
  imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener('load', r); i.addEventListener('error', r); })));
  if (document.fonts) { await document.fonts.ready; }
  return Boolean(mj && mj.startup);
}
"""

_COLLECT_JS = """
() => {
  const out = {
    mjx: document.querySelectorAll('mjx-container').length,
    mjxErrors: document.querySelectorAll('mjx-merror, mjx-container [data-mjx-error]').length,
    images: [...document.images].map(i => [i.getAttribute('src') || '', i.naturalWidth]),
    cells: [...document.querySelectorAll('div.cell')].map(c =>
      [...c.querySelectorAll('.cell_output img')].map(i => i.naturalWidth)),
  };
  // visible prose only: code removed, typeset math replaced by a marker (the page is not
  // used afterwards)
  document.querySelectorAll('mjx-container').forEach(e => e.replaceWith(' \u27e6math\u27e7 '));
  document.querySelectorAll('pre, code, script, style, textarea, .highlight')
    .forEach(e => e.remove());
  out.text = document.body.innerText;
  return out;
}
"""


@pytest.fixture(scope="session")
def browser(pytestconfig: pytest.Config):
    path = chromium_path(pytestconfig)
    if path is None:
        msg = (
            "Chromium is not installed (/usr/bin/chromium, or `chromium` on PATH): the browser "
            "checks of the rendered book are skipped. Install it with "
            "`sudo apt-get update && sudo apt-get install -y chromium`, or name it with "
            "--chromium=PATH (CI passes --require-browser, which makes this an error)."
        )
        if pytestconfig.getoption("require_browser"):
            pytest.fail(f"{msg} --require-browser forbids skipping them.", pytrace=False)
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def server(site_dir: Path):
    with sc.SiteServer(site_dir) as srv:
        yield srv


@pytest.fixture(scope="session")
def visit(browser, server: sc.SiteServer, site_dir: Path):
    """``visit(page) -> Visit``: opens the page once (cached) and records what it did."""
    cache: dict[str, Visit] = {}
    shots = site_dir.parent / "screenshots"

    def _visit(page: sc.Page) -> Visit:
        if page.docname in cache:
            return cache[page.docname]
        start = time.perf_counter()
        v = Visit(page, f"{server.url}/{page.html}")
        ctx = browser.new_context(viewport=VIEWPORT, service_workers="block")
        pg = ctx.new_page()
        pg.set_default_timeout(PAGE_TIMEOUT_MS)
        pg.on(
            "console",
            lambda m: (
                v.errors.append(f"console.error: {m.text} (at {m.location.get('url', '')})")
                if m.type == "error"
                else None
            ),
        )
        pg.on("pageerror", lambda e: v.errors.append(f"uncaught: {e}"))

        def on_request(req) -> None:
            host = urlsplit(req.url).hostname
            if urlsplit(req.url).scheme in ("http", "https") and host != "127.0.0.1":
                v.external.append(req.url)

        def on_failed(req) -> None:
            if urlsplit(req.url).hostname == "127.0.0.1":
                v.failed.append(f"{req.url} ({req.failure})")

        pg.on("request", on_request)
        pg.on("requestfailed", on_failed)
        server.served.clear()
        try:
            response = pg.goto(v.url, wait_until="load")
            v.status = response.status if response else None
            v.mathjax = pg.evaluate(_SETTLE_JS)
            v.screenshot = shots / f"{page.docname}.png"
            v.screenshot.parent.mkdir(parents=True, exist_ok=True)
            pg.screenshot(path=str(v.screenshot))  # the first screen (full page: +0.9 s each)
            data = pg.evaluate(_COLLECT_JS)
            v.mjx, v.mjx_errors = data["mjx"], data["mjxErrors"]
            v.images, v.cells, v.text = data["images"], data["cells"], data["text"]
        except Exception as exc:  # a timeout or a crash is a finding about this page
            v.errors.append(f"the browser could not finish the page: {exc}")
        finally:
            v.served = [s for s in server.served if s.path != "/favicon.ico"]
            ctx.close()
        v.seconds = time.perf_counter() - start
        cache[page.docname] = v
        VISITED[page.docname] = v.seconds
        WEIGHTS[page.docname] = v.weight
        return v

    return _visit


# ---------------------------------------------------------------- end-of-run summary


def pytest_terminal_summary(terminalreporter) -> None:
    tr = terminalreporter
    if WEIGHTS:
        tr.section("rendered book: page weight (HTML + every local asset, first visit)")
        tr.write_line(
            f"{'page':44s} {'html KB':>8s} {'assets KB':>10s} {'sent KB':>8s} "
            f"{'(unzipped)':>10s} {'req':>4s} {'load s':>6s}"
        )
        for name, (h, a, n, raw) in sorted(WEIGHTS.items(), key=lambda kv: -sum(kv[1][:2])):
            tr.write_line(
                f"{name:44s} {h / 1e3:8.1f} {a / 1e3:10.1f} {(h + a) / 1e3:8.1f} "
                f"{raw / 1e3:10.1f} {n:4d} {VISITED.get(name, 0):6.2f}"
            )
        name, (h, a, _, raw) = max(WEIGHTS.items(), key=lambda kv: sum(kv[1][:2]))
        tr.write_line(
            f"{len(WEIGHTS)} pages opened in Chromium; heaviest: {name} {(h + a) / 1e6:.2f} MB "
            f"sent ({raw / 1e6:.2f} MB unzipped); limit 3 MB sent. KB = 1000 bytes."
        )
    if EXTERNAL_LINKS:
        tr.section("rendered book: external links (listed, never fetched)")
        for url, where in sorted(EXTERNAL_LINKS.items()):
            tr.write_line(f"{url}  <- {len(where)} page(s), e.g. {sorted(where)[0]}")
