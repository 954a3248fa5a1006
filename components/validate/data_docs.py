"""The Data Docs site, made to open from disk with no network.

GX's pages load Bootstrap, jQuery, bootstrap-table, Font Awesome and Vega from CDNs, and a
logo from S3: offline, the index's lists stay empty (bootstrap-table fills them) and every
page is unstyled. Each of those links is pointed at a copy inside the site
(``static/vendor``, from :mod:`components.web_assets`), relative to the page, so the site stays
whole when it is copied or served.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from emoflow.components import web_assets as web
from emoflow.components.web_assets import ASSETS_DIR, Package

VENDOR = Path("static") / "vendor"
LOGO = Path("static") / "images" / "logo-long.png"  # GX copies it into the site's static/
# What GX 1.x's page templates load (great_expectations/render/view/templates), as npm files.
# The filter-control styles are linked at bootstrap-table 1.19.0 beside its 1.19.1 script:
# 1.19.1's, the version of the script, serve both.
_FILTER_CONTROL = "dist/extensions/filter-control/bootstrap-table-filter-control"
CDN_FILES: dict[str, tuple[Package, str]] = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        web.BOOTSTRAP,
        "dist/css/bootstrap.min.css",
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": (
        web.BOOTSTRAP,
        "dist/js/bootstrap.min.js",
    ),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0"
    "/dist/css/bootstrap-prefers-dark.css": (
        web.BOOTSTRAP_DARK,
        "dist/css/bootstrap-prefers-dark.css",
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        web.BOOTSTRAP_TABLE,
        "dist/bootstrap-table.min.css",
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        web.BOOTSTRAP_TABLE,
        "dist/bootstrap-table.min.js",
    ),
    f"https://unpkg.com/bootstrap-table@1.19.0/{_FILTER_CONTROL}.css": (
        web.BOOTSTRAP_TABLE,
        f"{_FILTER_CONTROL}.css",
    ),
    f"https://unpkg.com/bootstrap-table@1.19.0/{_FILTER_CONTROL}.min.css": (
        web.BOOTSTRAP_TABLE,
        f"{_FILTER_CONTROL}.min.css",
    ),
    f"https://unpkg.com/bootstrap-table@1.19.1/{_FILTER_CONTROL}.min.js": (
        web.BOOTSTRAP_TABLE,
        f"{_FILTER_CONTROL}.min.js",
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0"
    "/css/bootstrap-datepicker.min.css": (web.DATEPICKER, "dist/css/bootstrap-datepicker.min.css"),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0"
    "/js/bootstrap-datepicker.min.js": (web.DATEPICKER, "dist/js/bootstrap-datepicker.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        web.FONT_AWESOME,
        "css/all.min.css",
    ),
    "https://code.jquery.com/jquery-3.7.1.min.js": (web.JQUERY, "dist/jquery.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        web.POPPER,
        "dist/umd/popper.min.js",
    ),
    "https://cdn.jsdelivr.net/npm/vega@5": (web.VEGA, "build/vega.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-lite@5": (web.VEGA_LITE, "build/vega-lite.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-embed@6": (web.VEGA_EMBED, "build/vega-embed.min.js"),
}
# A link that loads something: a script, an image, a stylesheet (not a hyperlink to a page).
LOADED = re.compile(r'(?:src=|<link\b[^>]*?href=)"(?P<url>https?://[^"]+)"')
_TAG = re.compile(r"<(?:script|link|img)\b[^>]*>")
# A page opened from disk has no origin, so it cannot fetch in CORS mode, which subresource
# integrity checks need: a local copy's tag drops them (the copies were checked against npm's
# digests when fetched, and are the very files these hashes name).
_CORS = re.compile(r'\s(?:integrity|crossorigin)="[^"]*"')
_LOGO_URL = re.compile(r"https://great-expectations-web-assets\.[^\"]*/logo-long\.png(?:\?[^\"]*)?")


def make_offline(site: Path, assets: Path = ASSETS_DIR) -> list[str]:
    """Point the CDN links of every page of ``site`` at copies inside it; return the links
    that still load from the network (all of them when the web assets are not installed)."""
    if web.installed(assets):
        for package in {package for package, _ in CDN_FILES.values()}:
            shutil.copytree(assets / package.folder, site / VENDOR / package.folder)
        for page in site.rglob("*.html"):
            page.write_text(_local_links(page.read_text(), page.parent, site))
    return sorted({m["url"] for p in site.rglob("*.html") for m in LOADED.finditer(p.read_text())})


def _local_links(html: str, folder: Path, site: Path) -> str:
    """``html`` (a page in ``folder``) with its CDN links pointed at the site's copies."""

    def relative(target: Path) -> str:
        return Path(os.path.relpath(site / target, folder)).as_posix()

    def local(tag: re.Match) -> str:
        text = tag.group(0)
        for url, (package, file) in CDN_FILES.items():
            if f'"{url}"' in text:
                text = text.replace(f'"{url}"', f'"{relative(VENDOR / package.folder / file)}"')
                return _CORS.sub("", text)
        return _LOGO_URL.sub(relative(LOGO), text)

    return _TAG.sub(local, html)
