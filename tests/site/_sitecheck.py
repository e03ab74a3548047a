"""Helpers for the checks of the rendered book (tests/site), free of pytest and of the browser.

* the pages, in reading order, from ``_toc.yml`` (so a new chapter is checked without editing
  a test);
* a local HTTP server on 127.0.0.1 that answers like a static web host (text gzipped) and
  logs every request it answers (path, status, bytes sent, file bytes);
* a crawler of the built HTML for internal links and anchors.

What a page's source promises (math, figures, hidden solutions) is in ``_source_rules.py``.
"""

from __future__ import annotations

import fnmatch
import functools
import gzip
import json
import re
import threading
from dataclasses import dataclass
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCE_SUFFIXES = (".md", ".ipynb", ".rst")

# What the checks measured, printed at the end of the run (tests/site/conftest.py).
WEIGHTS: dict[str, tuple[int, int, int, int]] = {}  # page -> Visit.weight
EXTERNAL_LINKS: dict[str, set[str]] = {}  # url -> pages linking to it
VISITED: dict[str, float] = {}  # page -> seconds in the browser


# ---------------------------------------------------------------- pages and configuration


@dataclass(frozen=True)
class Page:
    """One page of the book: its Sphinx docname and its source file."""

    docname: str  # "chapters/00_setup_check"
    source: Path

    @property
    def html(self) -> str:
        return f"{self.docname}.html"

    @property
    def is_notebook(self) -> bool:
        return self.source.suffix == ".ipynb"

    @property
    def is_exercises(self) -> bool:
        return self.source.name == "exercises.ipynb"

    def __str__(self) -> str:
        return self.docname


def load_config(root: Path) -> dict:
    return yaml.safe_load((root / "_config.yml").read_text()) or {}


def _resolve(root: Path, entry: str) -> Page:
    entry = entry.strip().lstrip("/")
    candidates = [root / entry] if Path(entry).suffix in SOURCE_SUFFIXES else []
    candidates += [root / f"{entry}{suffix}" for suffix in SOURCE_SUFFIXES]
    for path in candidates:
        if path.is_file():
            docname = path.relative_to(root).with_suffix("").as_posix()
            return Page(docname, path)
    raise FileNotFoundError(f"_toc.yml lists {entry!r}, but no {entry}.md/.ipynb exists")


def toc_pages(root: Path) -> list[Page]:
    """Every page listed in ``root/_toc.yml`` (root first), in the book's reading order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pages = [_resolve(root, toc["root"])]

    def walk(node: dict | list) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if "file" in node:
            pages.append(_resolve(root, node["file"]))
        for key in ("parts", "chapters", "sections"):
            if key in node:
                walk(node[key])

    walk({k: v for k, v in toc.items() if k != "root"})
    return pages


def executed_pages(root: Path, pages: list[Page]) -> list[Page]:
    """The notebook pages the build executes (``execute.exclude_patterns`` left out)."""
    execute = load_config(root).get("execute", {}) or {}
    if str(execute.get("execute_notebooks", "auto")).lower() in ("off", "false"):
        return []
    excluded = execute.get("exclude_patterns", []) or []
    return [
        p
        for p in pages
        if p.is_notebook
        and not any(
            fnmatch.fnmatch(p.source.relative_to(root).as_posix(), pat)
            or fnmatch.fnmatch(p.source.name, pat)
            for pat in excluded
        )
    ]


def read_notebook(path: Path) -> dict:
    nb = json.loads(path.read_text())
    for cell in nb.get("cells", []):
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
    return nb


def cell_tags(cell: dict) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []) or [])


# ---------------------------------------------------------------- local HTTP server


@dataclass(frozen=True)
class Served:
    path: str
    status: int
    size: int  # bytes on the wire (gzip-compressed for text, as static web hosts serve it)
    raw: int  # bytes of the file itself


COMPRESSIBLE = {".html", ".css", ".js", ".json", ".svg", ".txt", ".xml", ".map", ".md", ".ipynb"}


@functools.lru_cache(maxsize=512)
def _gzipped(path: str, mtime: float) -> bytes:
    return gzip.compress(Path(path).read_bytes(), compresslevel=6, mtime=0)


class _Handler(SimpleHTTPRequestHandler):
    """Serves the built site like a static web host (text gzip-compressed when the browser
    accepts it) and logs (path, status, bytes sent, file bytes) of each answer."""

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status, self._size = code, 0
        self._raw = getattr(self, "_raw", 0)
        super().send_response(code, message)

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "content-length":
            self._size = int(value)
        super().send_header(keyword, value)

    def end_headers(self) -> None:
        raw = getattr(self, "_raw", 0) or self._size
        self.server.served.append(Served(self.path, self._status, self._size, raw))  # type: ignore[attr-defined]
        super().end_headers()

    def do_GET(self) -> None:
        self._raw = 0
        local = Path(self.translate_path(self.path))
        # Browsers ask every site for /favicon.ico on their own; the book declares none, so
        # answer "no content" instead of a 404 that is not the page's doing.
        if urlsplit(self.path).path == "/favicon.ico" and not local.exists():
            self.send_response(204)
            self.end_headers()
            return
        accepts = "gzip" in (self.headers.get("Accept-Encoding") or "")
        if accepts and local.is_file() and local.suffix in COMPRESSIBLE:
            body = _gzipped(str(local), local.stat().st_mtime)
            self._raw = local.stat().st_size
            self.send_response(200)
            self.send_header("Content-Type", self.guess_type(str(local)))
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Last-Modified", self.date_time_string(int(local.stat().st_mtime)))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if local.is_file():
            self._raw = local.stat().st_size
        super().do_GET()


class SiteServer:
    """``http.server`` on 127.0.0.1 (port 0 = any free port) in a daemon thread."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_Handler, directory=str(directory))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.served = []  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def served(self) -> list[Served]:
        return self.httpd.served  # type: ignore[attr-defined]

    def __enter__(self) -> SiteServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------- internal links

_LINK_ATTRS = {"a": "href", "link": "href", "img": "src", "script": "src", "iframe": "src",
               "source": "src"}  # fmt: skip


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])  # type: ignore[arg-type]
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])  # type: ignore[arg-type]
        attr = _LINK_ATTRS.get(tag)
        if attr and a.get(attr):
            self.links.append(a[attr])  # type: ignore[arg-type]
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh":
            m = re.search(r"url=(.+)$", a.get("content") or "", flags=re.I)
            if m:
                self.links.append(m.group(1).strip().strip("'\""))


@functools.cache
def parse_html(path: Path) -> tuple[frozenset[str], tuple[str, ...]]:
    """(element ids, linked URLs) of one HTML file."""
    p = _LinkParser()
    p.feed(path.read_text(errors="replace"))
    return frozenset(p.ids), tuple(p.links)


def site_html_files(site: Path) -> list[Path]:
    """Every page of the build (theme templates in _static/ and sources left out)."""
    return sorted(
        p
        for p in site.rglob("*.html")
        if p.relative_to(site).parts[0] not in ("_static", "_sources", "_images")
    )


def is_external(url: str) -> bool:
    return bool(urlsplit(url).scheme) or url.startswith("//")


def check_links(site: Path) -> tuple[list[str], dict[str, set[str]]]:
    """(broken internal links as 'page: link (why)', {external URL: pages linking to it})."""
    site = site.resolve()
    broken: list[str] = []
    external: dict[str, set[str]] = {}
    for page in site_html_files(site):
        rel = page.relative_to(site).as_posix()
        for link in parse_html(page)[1]:
            if link.startswith(("mailto:", "tel:", "javascript:", "data:")):
                continue
            if is_external(link):
                external.setdefault(link, set()).add(rel)
                continue
            parts = urlsplit(link)
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_relative_to(site):
                broken.append(f"{rel}: {link} (points outside the site)")
                continue
            if not target.is_file():
                broken.append(f"{rel}: {link} (no file {target.relative_to(site)})")
                continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html" and fragment not in parse_html(target)[0]:
                broken.append(f"{rel}: {link} (no id {fragment!r} in {target.name})")
    return broken, external
