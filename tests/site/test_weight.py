"""Page weight: the bytes a reader's browser receives for one page on a first visit (empty
cache): the HTML plus every local asset it loads (CSS, JS, web fonts, MathJax and its fonts,
images, the search index). The local test server answers like a static web host (GitHub
Pages, Netlify, Read the Docs): text (HTML, CSS, JS, SVG, JSON) gzip-compressed, images and
fonts as they are. A page above 3 MB sent fails; the table of every page, with the
uncompressed total next to it, is printed at the end of the run.

How figures stay under it: notebooks draw with matplotlib's inline backend at its default,
PNG at ``figure.dpi`` 100 (a 6.4 x 4.8 in figure is 640 x 480 px, typically 20-60 KB),
stored by MyST-NB as files under ``_images/`` and linked with ``<img src>``, never inlined
as base64 or SVG in the HTML. Ten such figures add well under 1 MB. The bulk of every page
is shared: the theme (its fontawesome.js alone is 1.5 MB, 0.54 MB gzipped) and, on pages
with math, MathJax (tex-chtml.js 1.16 MB, 0.26 MB gzipped, plus a few web fonts).
"""

from __future__ import annotations

import _sitecheck as sc

LIMIT_BYTES = 3_000_000


def test_page_weight_under_3_mb(page: sc.Page, visit) -> None:
    v = visit(page)
    html, assets, requests, raw = v.weight
    assert html > 0, f"{page.html} was not among the {requests} answers of the server"
    total = html + assets
    heavy = sorted(v.served, key=lambda s: -s.size)[:5]
    assert total <= LIMIT_BYTES, (
        f"{page.html} sends {total / 1e6:.2f} MB (> 3 MB; {raw / 1e6:.2f} MB unzipped) over "
        f"{requests} requests; largest: "
        + ", ".join(f"{s.path} {s.size / 1e3:.0f} KB" for s in heavy)
    )
