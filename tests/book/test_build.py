"""The book builds with warnings as errors, executes its notebooks and serves math offline."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_book_builds_with_warnings_as_errors(built_book: Path) -> None:
    """`make book` succeeded with Sphinx's -W (``built_book`` fails on a failed or stale
    build), and its log names no warning."""
    record = json.loads((ROOT / "_build" / "book.json").read_text())
    assert record["status"] == "ok" and "-W" in record["command"], record
    log = (ROOT / "_build" / "book.log").read_text(errors="replace")
    warnings = re.findall(r"^.*(?:WARNING|ERROR):.*$", log, flags=re.M)
    assert not [w for w in warnings if "IPKernelApp" not in w], warnings  # a kernel's, not Sphinx's
    assert (built_book / "index.html").is_file()
    assert (built_book / "intro.html").is_file()


def test_setup_notebook_figure_is_embedded(built_book: Path) -> None:
    html = (built_book / "chapters" / "00_setup_check.html").read_text()
    images = re.findall(r'<img[^>]+src="\.\./(_images/[^"]+\.(?:png|svg))"', html)
    assert images, "the setup notebook's figure is not on its page"
    for img in images:
        assert (built_book / img).stat().st_size > 1000


def test_math_is_served_locally(built_book: Path) -> None:
    html = (built_book / "intro.html").read_text()
    srcs = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', html, flags=re.I)
    assert srcs, "no MathJax script on a page with math"
    assert all(not s.startswith(("http:", "https:", "//")) for s in srcs), srcs
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 100_000
    fonts = list(
        (built_book / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob(
            "*.woff"
        )
    )
    assert len(fonts) > 10


def test_execution_table_lists_every_executed_notebook(built_book: Path) -> None:
    html = (built_book / "appendix" / "execution_times.html").read_text()
    assert "00_setup_check" in html


def test_figures_are_numbered_per_chapter(built_book: Path) -> None:
    """Captioned figures read "Fig. <chapter>.<k>", k restarting at 1 in every chapter."""
    for chapter, page in (
        (1, "01_stabilising_training/01_vanishing_exploding.html"),
        (2, "02_variance_derivation/01_random_variables.html"),
    ):
        html = (built_book / "chapters" / page).read_text()
        numbers = re.findall(r"Fig\. (\d+)\.(\d+)", html)
        assert numbers, f"no numbered figure on {page}"
        assert {int(c) for c, _ in numbers} == {chapter}, (page, numbers)
        assert min(int(k) for _, k in numbers) == 1, (page, numbers)
