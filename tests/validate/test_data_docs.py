"""The Data Docs site made to open offline: its CDN links point at copies inside the site."""

from __future__ import annotations

import re
from pathlib import Path

import great_expectations

from emoflow.components import web_assets
from emoflow.components.validate import data_docs

BOOTSTRAP_CSS = "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"
POPPER = "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js"
LOGO = (
    "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png"
    "?d=20261202T181642.432012Z"
)
PAGE = f"""<html><head>
<link rel="stylesheet" href="{BOOTSTRAP_CSS}"/>
<script src="{POPPER}" integrity="sha384-x" crossorigin="anonymous"></script>
</head><body><img src="{LOGO}"/>
<a href="https://greatexpectations.io">Great Expectations</a></body></html>
"""


def fake_assets(root: Path) -> Path:
    """Every file of every package, as components.web_assets would have fetched it."""
    for package in web_assets.PACKAGES:
        for file in package.files:
            path = web_assets.asset(package, file.replace("*", "font"), root)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"/* {package.folder}/{file} */")
    return root


def site_with_page(root: Path) -> Path:
    """A site as GX builds it: a page some folders down, GX's own images in static/."""
    (root / data_docs.LOGO).parent.mkdir(parents=True)
    (root / data_docs.LOGO).write_bytes(b"png")
    page = root / "validations" / "suite" / "run" / "page.html"
    page.parent.mkdir(parents=True)
    page.write_text(PAGE)
    return page


def test_cdn_links_point_at_copies_inside_the_site(tmp_path: Path) -> None:
    site = tmp_path / "site"
    page = site_with_page(site)

    left = data_docs.make_offline(site, fake_assets(tmp_path / "assets"))

    assert left == []
    html = page.read_text()
    loaded = re.findall(r'(?:src|href)="([^"]+)"', html)
    local = [link for link in loaded if not link.startswith(("https://", "#"))]
    assert len(local) == 3 and all((page.parent / link).is_file() for link in local)
    assert (page.parent / local[2]).read_bytes() == b"png", "GX's own copy of its logo"
    assert "integrity" not in html and "crossorigin" not in html, "a page on disk has no origin"
    assert 'href="https://greatexpectations.io"' in html, "a hyperlink is not a load"


def test_without_the_assets_installed_the_links_stay_and_are_reported(tmp_path: Path) -> None:
    site = tmp_path / "site"
    page = site_with_page(site)

    left = data_docs.make_offline(site, tmp_path / "not-installed")

    assert left == sorted([BOOTSTRAP_CSS, POPPER, LOGO])
    assert page.read_text() == PAGE


def test_every_file_gx_pages_load_from_the_network_has_a_local_copy() -> None:
    """Holds the table to GX's templates: an upgrade that links a new file fails here."""
    templates = Path(great_expectations.__file__).parent / "render" / "view" / "templates"
    loaded = {
        link["url"]
        for template in templates.rglob("*.j2")
        for link in data_docs.LOADED.finditer(template.read_text())
    }
    assert loaded and loaded <= set(data_docs.CDN_FILES)
