"""What a page's source promises the rendered page must show, or must hide.

* math: :func:`has_math` (the source holds TeX) and :data:`RAW_MATH` (TeX left untypeset);
* figures: :func:`figure_cells`, the code cells that must show an image (the rule is in its
  docstring), and :func:`image_output_cells` for an executed notebook;
* exercises: :func:`leak_needles`, the solution and hidden-test text of a master notebook
  that must never reach the student page, and :data:`LEAK_MARKERS`.
"""

from __future__ import annotations

import ast
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from _sitecheck import Page, cell_tags, read_notebook

from initlab.grading.markers import LEAK_MARKERS as LEAK_MARKERS  # test_pages reads it here
from initlab.grading.markers import fence, solution_split

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,}|:{3,})[^\n]*\n.*?^[ \t]*\1[ \t]*$", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_MATH_BLOCK = re.compile(r"^[ \t]*(`{3,}|:{3,})\{math\}|\{math\}`|^\s*\$\$|\\begin\{", re.M)
_MATH_TEXT = re.compile(r"\$\$|(?<![\\$])\$(?=\S)[^$\n]+?(?<=\S)\$|\\\(|\\\[")


def markdown_text(page: Page) -> str:
    """The page's prose: a .md file, or the markdown cells of a notebook."""
    if page.is_notebook:
        nb = read_notebook(page.source)
        return "\n\n".join(
            c["source"]
            for c in nb["cells"]
            if c["cell_type"] == "markdown" and not cell_tags(c) & {"remove-cell", "remove_cell"}
        )
    return page.source.read_text()


def has_math(page: Page) -> bool:
    """Whether the page's source holds math ($...$, $$...$$, \\(..\\), {math}, amsmath)."""
    text = markdown_text(page)
    if _MATH_BLOCK.search(text):
        return True
    prose = _INLINE_CODE.sub("", _FENCE.sub("", text))
    return bool(_MATH_TEXT.search(prose))


MATH_MARK = "\u27e6math\u27e7"  # what the browser check puts in place of each typeset formula
RAW_MATH = re.compile(
    r"\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{"
    r"|(?<![\\$])\$[^$\n]{0,200}?[\\^_{][^$\n]{0,200}?\$"
    rf"|\$\s*{MATH_MARK}|{MATH_MARK}\s*\$"
)
"""TeX left in a page's visible text (code removed, typeset math replaced by MATH_MARK):
``$$``, ``\\(``, ``\\[``, ``\\begin{``, ``$...$`` holding a backslash, ``^``, ``_`` or
``{``, or a stray ``$`` right next to a typeset formula."""


def rendered_code_cells(nb: dict) -> list[tuple[int, dict]]:
    """(index, cell) of the code cells MyST-NB puts on the page, in order: not empty, not
    tagged ``remove-cell``, not both ``remove-input`` and ``remove-output``."""
    out = []
    for i, cell in enumerate(nb["cells"]):
        tags = cell_tags(cell)
        if cell["cell_type"] != "code" or not cell["source"].strip():
            continue
        if tags & {"remove-cell", "remove_cell"}:
            continue
        if tags & {"remove-input", "remove_input"} and tags & {"remove-output", "remove_output"}:
            continue
        out.append((i, cell))
    return out


_PYPLOT_DRAW = {
    "show", "figure", "subplots", "subplot", "subplot_mosaic", "plot", "semilogx", "semilogy",
    "loglog", "hist", "hist2d", "imshow", "matshow", "scatter", "bar", "barh", "errorbar",
    "fill_between", "contour", "contourf", "pcolormesh", "boxplot", "violinplot", "step",
    "stem", "pie", "heatmap",
}  # fmt: skip
_NOT_DRAWING = re.compile(r"^(_|set_|use_|get_|apply_|format_|style|rc|configure|reset)")


def _parse(source: str) -> ast.Module | None:
    # IPython magics and shell escapes are not Python: blank them out, keeping line numbers.
    lines = ["" if re.match(r"\s*[%!]", line) else line for line in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


@dataclass
class _Aliases:
    pyplot: set[str] = field(default_factory=lambda: {"plt"})
    plots_modules: set[str] = field(default_factory=lambda: {"initlab.plots"})
    plots_functions: set[str] = field(default_factory=set)


def _aliases(trees: list[ast.Module]) -> _Aliases:
    a = _Aliases()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for n in node.names:
                    if n.name == "matplotlib.pyplot" and n.asname:
                        a.pyplot.add(n.asname)
                    if n.name == "initlab.plots":
                        a.plots_modules.add(n.asname or "initlab.plots")
            elif isinstance(node, ast.ImportFrom):
                for n in node.names:
                    if node.module == "matplotlib" and n.name == "pyplot":
                        a.pyplot.add(n.asname or "pyplot")
                    if node.module == "initlab" and n.name == "plots":
                        a.plots_modules.add(n.asname or "plots")
                    if node.module == "initlab.plots":
                        a.plots_functions.add(n.asname or n.name)
    return a


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _walk_run(tree: ast.Module):  # noqa: ANN202
    """Like ``ast.walk``, but skip the bodies of functions and classes: a call there draws
    nothing when the cell runs, only when the function is called later."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo.extend(c for c in ast.iter_child_nodes(node) if not isinstance(c, _DEFS))


def _draws(tree: ast.Module, al: _Aliases) -> str | None:
    """Why the cell is expected to show a figure, or None."""
    context_managers = {
        id(item.context_expr)
        for node in _walk_run(tree)
        if isinstance(node, ast.With)
        for item in node.items
    }
    shows = closes = None
    for node in _walk_run(tree):
        if not isinstance(node, ast.Call) or id(node) in context_managers:
            continue
        name = _dotted(node.func)
        head, _, attr = name.rpartition(".")
        if head in al.pyplot and attr == "close":
            closes = name
        elif head in al.pyplot and attr in _PYPLOT_DRAW:
            shows = shows or f"draws with {name}()"
        elif name == "display" and node.args and _dotted(node.args[0]).startswith("fig"):
            return "calls display(fig...)"
        elif head in al.plots_modules and not _NOT_DRAWING.match(attr):
            shows = shows or f"draws with {name}()"
        elif name in al.plots_functions and not _NOT_DRAWING.match(name):
            shows = shows or f"draws with {name}()"
    show = next(
        (
            _dotted(n.func)
            for n in _walk_run(tree)
            if isinstance(n, ast.Call) and _dotted(n.func).rpartition(".")[2] == "show"
        ),
        None,
    )
    if show:
        return f"calls {show}()"
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr) and _dotted(last.value).startswith("fig"):
        return f"ends with a bare {_dotted(last.value)}"
    if closes:  # drawn, then closed without being shown: deliberately no figure
        return None
    return shows


def figure_cells(nb: dict) -> dict[int, str]:
    """{notebook cell index: reason} for every code cell that must show an image.

    The rule (on the source, before any execution): a rendered code cell (see
    :func:`rendered_code_cells`), not tagged ``remove-output``, is a figure cell when it

    * calls ``plt.show()`` (any ``*.show()``) or ``display(fig...)``, or ends with a bare
      ``fig...`` expression, or
    * creates or draws a figure through pyplot (``plt.figure/subplots/plot/hist/imshow/...``)
      or through a function of ``initlab.plots`` (not ``set_*``/``use_*``/``get_*``/``format_*``/``style*``
      and not used as a ``with`` context manager) -- unless it then calls ``plt.close(...)``
      without showing, which deliberately shows nothing.

    With matplotlib's inline backend every such cell's figure is displayed when the cell ends,
    so the rendered cell must hold an ``<img>``.
    """
    cells = rendered_code_cells(nb)
    trees = [t for _, c in cells if (t := _parse(c["source"])) is not None]
    al = _aliases(trees)
    out: dict[int, str] = {}
    for index, cell in cells:
        if cell_tags(cell) & {"remove-output", "remove_output"}:
            continue
        tree = _parse(cell["source"])
        if tree is None:
            if re.search(r"\bplt\.show\(", cell["source"]):
                out[index] = "calls plt.show()"
            continue
        reason = _draws(tree, al)
        if reason:
            out[index] = reason
    return out


def image_output_cells(executed: dict) -> set[int]:
    """Indices of the cells of an executed notebook whose outputs hold an image."""
    return {
        i
        for i, cell in enumerate(executed["cells"])
        if cell["cell_type"] == "code"
        and any(
            k.startswith("image/")
            for out in cell.get("outputs", [])
            for k in (out.get("data") or {})
        )
    }


# ---------------------------------------------------------------- solutions and hidden tests

_MIN_NEEDLE = 12  # shorter lines ("return x", "else:") are not evidence of a leak


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def leak_needles(master: Path) -> dict[str, list[str]]:
    """Text of an exercise master notebook that must never reach the student page.

    Otter-grader's format (raw ``# BEGIN SOLUTION`` / ``# BEGIN TESTS`` cells, ``# BEGIN
    SOLUTION``/``# END SOLUTION`` lines and ``... # SOLUTION`` lines in code, tests whose
    ``TEST CONFIG`` says ``hidden: true``) and nbgrader's (``### BEGIN HIDDEN TESTS`` ...
    ``### END HIDDEN TESTS``) are read. Returns ``{"solution": [...], "hidden test": [...]}``:
    the distinctive lines (at least 12 characters, never found in a public part of the master:
    the prose, or code outside solutions and hidden tests) and the names of hidden test
    functions.
    """
    nb = read_notebook(master)
    public: list[str] = []
    solution: list[str] = []
    hidden: list[str] = []
    hidden_names: list[str] = []
    in_solution_cells = in_tests = False
    for cell in nb["cells"]:
        src, kind = cell["source"], cell["cell_type"]
        head = src.strip().splitlines()[0] if src.strip() else ""
        if kind == "raw":
            if fence(cell):
                in_solution_cells = fence(cell) == "begin"
            elif re.match(r"#\s*BEGIN TESTS", head):
                in_tests = True
            elif re.match(r"#\s*END TESTS", head):
                in_tests = False
            continue
        if kind == "markdown":
            (solution if in_solution_cells else public).append(src)
            continue
        if in_tests and re.search(r"^\s*hidden:\s*true\s*$", src, flags=re.M | re.I):
            body = re.split(r"#\s*END TEST CONFIG", src, maxsplit=1)[-1]
            hidden.append(body)
            hidden_names += re.findall(r"^\s*def (test_\w+)", body, flags=re.M)
            continue
        if in_tests:
            public.append(src)  # a public test: fine on the page
            continue
        # code: nbgrader hidden tests, then otter's inline solution blocks and "# SOLUTION"
        # lines (read by initlab.grading's one parser of the markers)
        rest, hide = [], False
        for line in src.splitlines():
            s = line.strip()
            if re.match(r"#+\s*BEGIN HIDDEN TESTS", s):
                hide = True
            elif re.match(r"#+\s*END HIDDEN TESTS", s):
                hide = False
            else:
                (hidden if hide else rest).append(line)
        keep = []
        for line, removed in solution_split("\n".join(rest)):
            (solution if removed else keep).append(line)
        public.append("\n".join(keep))
    public_text = _norm("\n".join(public))

    def distinctive(chunks: list[str]) -> list[str]:
        lines = {_norm(line) for chunk in chunks for line in chunk.splitlines()}
        return sorted(
            line
            for line in lines
            if len(line) >= _MIN_NEEDLE and line not in public_text and not line.startswith("#")
        )

    return {
        "solution": distinctive(solution),
        "hidden test": distinctive(hidden) + sorted(set(hidden_names)),
    }


def notebook_text(path: Path) -> str:
    """Every cell source and text output of a notebook, as one string."""
    nb = read_notebook(path)
    parts = []
    for cell in nb["cells"]:
        parts.append(cell["source"])
        for out in cell.get("outputs", []):
            text = out.get("text") or (out.get("data") or {}).get("text/plain") or ""
            parts.append("".join(text) if isinstance(text, list) else text)
    return "\n".join(parts)


def html_text(raw: str) -> str:
    """Visible-ish text of an HTML file: tags dropped, entities decoded (code keeps its text)."""
    raw = re.sub(r"<(script|style)\b.*?</\1>", " ", raw, flags=re.S | re.I)
    return html.unescape(re.sub(r"<[^>]+>", "", raw))
