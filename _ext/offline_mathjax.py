"""Serve MathJax 3 from the built site itself, so the book's math renders offline.

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


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _set_path, priority=900)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
