"""The course's Sphinx extension: four fixes the book build needs.

1. Serve MathJax 3 from the built site itself, so the book's math renders offline.
2. Drop the duplicate inline scripts Sphinx 7.4 writes (a console error on every page).
3. Let ``{glue:text}`` format NumPy scalars: under NumPy 2 a glued ``np.float64(0.5)`` is
   stored as the text ``"np.float64(0.5)"``, which myst-nb cannot turn into a number.
4. Number figures per chapter ("Fig. 3.2"): Sphinx numbers them through the whole book, or,
   with numbered toctrees, restarts the chapter number in every part of ``_toc.yml``.

On (1):
The files come from the pinned PyPI package ``django-static-mathjax`` (MathJax 3.2.2 as
static files; Django is not needed). Only what ``tex-chtml.js`` loads is copied: the
component, its CHTML web fonts and the TeX extensions it may autoload.
"""

import re
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


_NUMPY_SCALAR = re.compile(r"^np\.(?:float|int|uint|bool_?)\w*\((.*)\)$", re.S)


def _patch_glue_numpy_scalars() -> None:
    from myst_nb.core import variables
    from myst_nb.ext.glue import crossref, roles

    original = variables.format_plain_text
    if getattr(original, "_course_patched", False):
        return

    def format_plain_text(text: str, fmt_spec: str) -> str:
        match = _NUMPY_SCALAR.match(text.strip())
        return original(match.group(1) if match else text, fmt_spec)

    format_plain_text._course_patched = True
    for module in (variables, crossref, roles):
        if hasattr(module, "format_plain_text"):
            module.format_plain_text = format_plain_text


_CHAPTER = re.compile(r"^chapters/(\d+)_")


def _toctree_order(env, docname: str, seen: set[str]) -> list[str]:  # noqa: ANN001
    """Documents in reading order: ``docname``, then what its toctrees include, depth first."""
    if docname in seen:
        return []
    seen.add(docname)
    order = [docname]
    for child in env.toctree_includes.get(docname, []):
        order += _toctree_order(env, child, seen)
    return order


def _number_figures_by_chapter(app: Sphinx, env) -> list[str]:  # noqa: ANN001
    """Renumber figures (and tables, code blocks) as (chapter, k), k counting from 1 in each
    chapter in reading order; the chapter is the number of the page's folder under
    ``chapters/`` (``chapters/00_setup_check`` is chapter 0). Pages outside ``chapters/`` keep
    Sphinx's numbers. Runs after Sphinx's own numbering (``env-get-updated``)."""
    if not env.config.numfig:
        return []
    counters: dict[tuple[str, int], int] = {}
    changed = []
    for docname in _toctree_order(env, env.config.root_doc, set()):
        numbers = env.toc_fignumbers.get(docname)
        match = _CHAPTER.match(docname)
        if not numbers or match is None:
            continue
        chapter = int(match.group(1))
        for figtype, ids in numbers.items():
            for figure_id, _ in sorted(ids.items(), key=lambda item: item[1]):
                key = (figtype, chapter)
                counters[key] = counters.get(key, 0) + 1
                ids[figure_id] = (chapter, counters[key])
        changed.append(docname)
    return changed


def setup(app: Sphinx) -> dict:
    _patch_glue_numpy_scalars()
    app.connect("config-inited", _set_path, priority=900)
    app.connect("build-finished", _copy)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.connect("env-get-updated", _number_figures_by_chapter, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
