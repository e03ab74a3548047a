"""Every page of the book, as a reader's browser shows it (headless Chromium), plus the checks of
the built files that need no browser: launch buttons, previous/next, hidden solutions and
hidden tests on exercise pages, the execution report.

Pages come from _toc.yml (see conftest.py). A screenshot of each page's first screen (what
a reader sees on arrival, 1280 x 900) is saved under ``_build/screenshots/<page>.png``, next
to the html folder, for review.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import _sitecheck as sc
import _source_rules as rules

# Console errors whose cause is known, with the fix, to make a failure actionable.
KNOWN_CAUSES = {
    "THEBE_JS_URL": (
        "Sphinx 7.4 writes every body-only script added after the builder started twice "
        "(filename None vs ''; sphinx-doc/sphinx#13402), so sphinx-thebe's `const THEBE_JS_URL` "
        "is declared twice. Fix: drop duplicate entries of context['script_files'] in an "
        "html-page-context handler (see the report of issue 11)."
    ),
    "invalid theme mode": (
        "pydata-sphinx-theme logs this on a first visit when no default mode is set. Fix: "
        "_config.yml sphinx.config.html_context: {default_mode: auto}."
    ),
}


def _explain(errors: list[str]) -> str:
    lines = [f"  {e}" for e in errors]
    for key, why in KNOWN_CAUSES.items():
        if any(key in e for e in errors):
            lines.append(f"  -> {why}")
    return "\n".join(lines)


# ---------------------------------------------------------------- in the browser


def test_page_loads(page: sc.Page, visit) -> None:
    v = visit(page)
    assert v.status == 200, f"{v.url} answered HTTP {v.status}"
    fatal = [e for e in v.errors if e.startswith("the browser could not")]
    assert not fatal, "\n".join(fatal)
    assert v.screenshot is not None and v.screenshot.stat().st_size > 5_000, (
        f"no screenshot of {page}"
    )


def test_no_console_errors(page: sc.Page, visit) -> None:
    v = visit(page)
    assert not v.errors, f"{page.html}: console errors or uncaught exceptions:\n" + _explain(
        v.errors
    )


def test_every_local_resource_loads(page: sc.Page, visit) -> None:
    v = visit(page)
    bad = [f"{s.path} -> HTTP {s.status}" for s in v.served if s.status != 200]
    assert not bad + v.failed, f"{page.html}: local requests that did not load:\n  " + "\n  ".join(
        bad + v.failed
    )
    assert len(v.served) >= 5, f"{page.html}: only {len(v.served)} requests: no CSS/JS loaded?"


def test_needs_no_other_host(page: sc.Page, visit) -> None:
    """The book is read offline: every request goes to the local server (links to Colab,
    Binder or papers are <a href>s, not requests)."""
    v = visit(page)
    assert not v.external, f"{page.html} requested other hosts (blocked):\n  " + "\n  ".join(
        sorted(set(v.external))
    )


def test_math_is_typeset(page: sc.Page, visit) -> None:
    v = visit(page)
    if rules.has_math(page):
        assert v.mathjax, f"{page.html}: the source has math but MathJax did not start"
        assert v.mjx > 0, f"{page.html}: the source has math but no <mjx-container> was rendered"
    assert v.mjx_errors == 0, f"{page.html}: {v.mjx_errors} TeX errors (mjx-merror) on the page"
    raw = [m.group(0) for m in rules.RAW_MATH.finditer(v.text)]
    assert not raw, f"{page.html}: raw TeX left in the visible text: {raw[:5]}"


def test_every_image_has_pixels(page: sc.Page, visit) -> None:
    v = visit(page)
    broken = [src for src, width in v.images if width <= 0]
    assert not broken, f"{page.html}: images with naturalWidth 0: {broken}"


def test_every_figure_cell_shows_an_image(executed_page: sc.Page, visit, site_dir: Path) -> None:
    """Figure cells are found from the notebook source (rule: ``_sitecheck.figure_cells``);
    the executed notebook (``_build/jupyter_execute``), when present, adds every cell that
    really produced an image. Each must show a loaded ``<img>`` in its rendered output."""
    page = executed_page
    v = visit(page)
    nb = sc.read_notebook(page.source)
    rendered = [i for i, _ in rules.rendered_code_cells(nb)]
    assert len(v.cells) == len(rendered), (
        f"{page.html} shows {len(v.cells)} code cells, the notebook has {len(rendered)} "
        "rendered ones: the cell mapping is off"
    )
    expected = rules.figure_cells(nb)
    executed = site_dir.parent / "jupyter_execute" / f"{page.docname}.ipynb"
    if executed.is_file():
        ran = sc.read_notebook(executed)
        if len(ran["cells"]) == len(nb["cells"]):
            for i in rules.image_output_cells(ran):
                if i in rendered and not sc.cell_tags(nb["cells"][i]) & {
                    "remove-output",
                    "remove_output",
                }:
                    expected.setdefault(i, "its executed output holds an image")
    missing = [
        f"cell {i} [{why}] {nb['cells'][i]['source'].strip().splitlines()[0][:60]!r}"
        for i, why in sorted(expected.items())
        if not any(w > 0 for w in v.cells[rendered.index(i)])
    ]
    assert not missing, f"{page.html}: figure cells without a visible image:\n  " + "\n  ".join(
        missing
    )


# ---------------------------------------------------------------- in the built files


def _nav(html: str, cls: str) -> str | None:
    m = re.search(rf'<a\s+class="{cls}"\s+href="([^"]*)"', html)
    return m.group(1) if m else None


def test_previous_and_next_follow_the_toc(
    page: sc.Page, pages: list[sc.Page], site_dir: Path
) -> None:
    i = [p.docname for p in pages].index(page.docname)
    html_path = site_dir / page.html
    html = html_path.read_text()
    for cls, j in (("left-prev", i - 1), ("right-next", i + 1)):
        href = _nav(html, cls)
        want = pages[j] if 0 <= j < len(pages) else None
        if want is None:
            assert href is None, f"{page.html}: {cls} -> {href}, but the page is an end of the toc"
            continue
        assert href is not None, f"{page.html}: no {cls} link (expected {want.html})"
        target = (html_path.parent / href.split("#")[0]).resolve()
        assert target.is_file(), f"{page.html}: {cls} -> {href}, which does not exist"
        assert target == (site_dir / want.html).resolve(), (
            f"{page.html}: {cls} -> {href}, expected {want.html} (toc order)"
        )


def test_launch_buttons_open_this_notebook(
    notebook_page: sc.Page, site_dir: Path, src_root: Path
) -> None:
    page = notebook_page
    cfg = sc.load_config(src_root)
    repo = cfg["repository"]["url"].rstrip("/").removesuffix(".git")
    org_repo = "/".join(repo.split("/")[-2:])
    branch = cfg["repository"].get("branch", "main")
    book = (cfg["repository"].get("path_to_book") or "").strip("/")
    path = "/".join(x for x in (book, page.source.relative_to(src_root).as_posix()) if x)
    html = (site_dir / page.html).read_text()
    hrefs = re.findall(r'href="([^"]+)"', html)
    launch = cfg.get("launch_buttons", {})
    if launch.get("colab_url"):
        colab = [h for h in hrefs if h.startswith(launch["colab_url"].rstrip("/"))]
        want = f"{launch['colab_url'].rstrip('/')}/github/{org_repo}/blob/{branch}/{path}"
        assert colab == [want], f"{page.html}: Colab links {colab}, expected [{want}]"
    if launch.get("binderhub_url"):
        binder = [h for h in hrefs if h.startswith(launch["binderhub_url"].rstrip("/"))]
        assert len(binder) == 1, f"{page.html}: Binder links {binder}"
        assert f"/v2/gh/{org_repo}/{branch}" in binder[0] and binder[0].endswith(path), (
            f"{page.html}: Binder link {binder[0]} does not open {org_repo}@{branch}:{path}"
        )
    download = f"_sources/{page.docname}.ipynb"
    assert (site_dir / download).is_file(), f"the page's notebook {download} was not copied"


def test_colab_setup_cell_is_hidden_but_downloaded(notebook_page: sc.Page, site_dir: Path) -> None:
    """The first cell (installs initlab on Colab) is not on the page; the notebook keeps it."""
    page = notebook_page
    text = rules.html_text((site_dir / page.html).read_text())
    assert "google.colab" not in text, f"{page.html} shows the Colab setup cell"
    source = json.loads((site_dir / "_sources" / f"{page.docname}.ipynb").read_text())
    first = source["cells"][0]
    assert first["metadata"].get("initlab_setup") and "google.colab" in "".join(first["source"]), (
        f"_sources/{page.docname}.ipynb (the download button's copy) has no setup cell"
    )


def test_exercise_page_hides_solutions_and_hidden_tests(
    exercise_page: sc.Page, site_dir: Path, src_root: Path
) -> None:
    page = exercise_page
    chapter = page.source.parent.name
    master = src_root / "exercises" / f"{chapter}.ipynb"
    needles = (
        rules.leak_needles(master) if master.is_file() else {"solution": [], "hidden test": []}
    )
    copies = {
        page.html: rules.html_text((site_dir / page.html).read_text()),
        f"_sources/{page.docname}.ipynb": rules.notebook_text(
            site_dir / "_sources" / f"{page.docname}.ipynb"
        ),
    }
    leaks = []
    for where, text in copies.items():
        flat = re.sub(r"\s+", " ", text)
        leaks += [f"{where}: marker {m!r}" for m in rules.LEAK_MARKERS if m in text]
        for kind, lines in needles.items():
            leaks += [f"{where}: {kind} text {line!r}" for line in lines if line in flat]
    assert not leaks, f"{page.html} gives away what learners must not see:\n  " + "\n  ".join(leaks)


_ROW = re.compile(r"<tr[^>]*>(.*?)</tr>", re.S)
_CELL = re.compile(r"<t[dh][^>]*>(.*?)</t[dh]>", re.S)


def test_execution_report_lists_every_executed_notebook(
    pages: list[sc.Page], site_dir: Path, src_root: Path
) -> None:
    hosts = [p for p in pages if "{nb-exec-table}" in rules.markdown_text(p)]
    assert hosts, "no page of the toc holds an {nb-exec-table}"
    html = (site_dir / hosts[0].html).read_text()
    rows = [[rules.html_text(c).strip() for c in _CELL.findall(r)] for r in _ROW.findall(html)]
    header, body = rows[0], rows[1:]
    col = {name: header.index(name) for name in header}
    time_col = next(i for name, i in col.items() if "Time" in name)
    table = {r[col["Document"]]: r for r in body}
    problems = []
    for p in sc.executed_pages(src_root, pages):
        row = table.get(p.docname)
        if row is None:
            problems.append(f"{p.docname}: not in the table")
            continue
        try:
            seconds = float(row[time_col])
        except ValueError:
            problems.append(f"{p.docname}: no run time ({row[time_col]!r})")
            continue
        if not seconds > 0 or row[col["Status"]] != "✅":
            problems.append(f"{p.docname}: {seconds} s, status {row[col['Status']]!r}")
    assert not problems, f"{hosts[0].html}: execution report incomplete:\n  " + "\n  ".join(
        problems
    )
