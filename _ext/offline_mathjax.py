"""Serve MathJax 3 from the built site itself, so the book's math renders offline
(and drop the duplicate inline scripts Sphinx 7.4 writes).

The files come from the pinned PyPI package ``django-static-mathjax`` (MathJax 3.2.2 as
static files; Django is not needed). Only what ``tex-chtml.js`` loads is copied: the
component, its CHTML web fonts and the TeX extensions it may autoload.
"""

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

TARGET = "mathjax"  # under _static/
NEEDED = ("tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions")


def _source() -> Path:
    try:
        import mathjax  # the django-static-mathjax package
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ExtensionError(
            "offline_mathjax: the package 'django-static-mathjax' is missing; "
            "run `make book`, which installs requirements.txt"
        ) from exc
    root = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (root / "tex-chtml.js").is_file():
        raise ExtensionError(f"offline_mathjax: no tex-chtml.js under {root}")
    return root


def _set_path(app: Sphinx, config) -> None:
    config.mathjax_path = f"{TARGET}/tex-chtml.js"


def _copy(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    src, dest = _source(), Path(app.outdir) / "_static" / TARGET
    for item in NEEDED:
        s, d = src / item, dest / item
        d.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            shutil.copytree(s, d, dirs_exist_ok=True)
        else:
            shutil.copy2(s, d)


def _dedupe_scripts(app: Sphinx, pagename, templatename, context, doctree) -> None:  # noqa: ANN001
    """Sphinx 7.4 lists body-only scripts twice (filename None and ''), which makes the
    browser throw on a redeclared identifier (fixed upstream in sphinx-doc/sphinx#13402);
    keep the first of each."""
    seen, unique = set(), []
    for js in context.get("script_files", []):
        key = (js.filename or "", js.priority, tuple(sorted(js.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _set_path, priority=900)
    app.connect("build-finished", _copy)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
