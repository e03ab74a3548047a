"""Internal links of the built book: every href/src between pages and assets resolves, and every
``#anchor`` names an element id of its target. Crawls every HTML file of the build (theme
templates under _static/ left out); external links are listed at the end of the run, never
fetched (the machine building the book may be offline)."""

from __future__ import annotations

from pathlib import Path

import _sitecheck as sc


def test_every_toc_page_is_built(page: sc.Page, site_dir: Path) -> None:
    assert (site_dir / page.html).is_file(), f"{page.source.name} is in _toc.yml but not built"


def test_internal_links_and_anchors_resolve(site_dir: Path) -> None:
    files = sc.site_html_files(site_dir)
    assert len(files) >= 3, f"only {len(files)} HTML files under {site_dir}"
    broken, external = sc.check_links(site_dir)
    for url, where in external.items():
        sc.EXTERNAL_LINKS.setdefault(url, set()).update(where)
    assert not broken, f"{len(broken)} broken internal links:\n  " + "\n  ".join(broken[:50])
