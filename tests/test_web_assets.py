"""The offline reports' scripts and styles: pinned npm tarballs, the DVC page template."""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from emoflow.components import web_assets
from emoflow.components.web_assets import Package, WebAssetsError


def tarball(files: dict[str, str]) -> bytes:
    """An npm-style tarball: every file under one top folder, ``package/``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            member = tarfile.TarInfo(f"package/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def pinned(data: bytes, files: tuple[str, ...]) -> Package:
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    return Package("@scope/lib", "1.2.3", integrity, files)


PACKAGE_FILES = {
    "dist/lib.min.js": "var lib = 1;",
    "webfonts/icons.woff2": "font",
    "webfonts/icons.ttf": "old font",
    "README.md": "docs",
}


def test_a_package_keeps_only_the_files_pages_load(tmp_path: Path) -> None:
    data = tarball(PACKAGE_FILES)
    package = pinned(data, ("dist/lib.min.js", "webfonts/*.woff2"))

    folder = web_assets.unpack(package, data, tmp_path)

    assert folder == tmp_path / "@scope/lib@1.2.3"
    kept = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert kept == ["dist/lib.min.js", "webfonts/icons.woff2"]
    assert (folder / "dist/lib.min.js").read_text() == "var lib = 1;"


def test_a_tarball_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    package = pinned(tarball(PACKAGE_FILES), ("dist/lib.min.js",))
    tampered = tarball({**PACKAGE_FILES, "dist/lib.min.js": "steal()"})

    with pytest.raises(WebAssetsError, match="is not the pinned"):
        web_assets.unpack(package, tampered, tmp_path)
    assert not (tmp_path / package.folder).exists()


def test_a_listed_file_missing_from_the_tarball_is_an_error(tmp_path: Path) -> None:
    data = tarball(PACKAGE_FILES)
    package = pinned(data, ("dist/lib.min.js", "dist/lib.min.css"))

    with pytest.raises(WebAssetsError, match="no dist/lib.min.css in its tarball"):
        web_assets.unpack(package, data, tmp_path)
    assert not (tmp_path / package.folder).exists()


def test_tarball_addresses_follow_the_registry_layout() -> None:
    assert web_assets.VEGA.tarball == "https://registry.npmjs.org/vega/-/vega-5.20.2.tgz"
    assert web_assets.FONT_AWESOME.tarball == (
        "https://registry.npmjs.org/@fortawesome/fontawesome-free/-/fontawesome-free-6.6.0.tgz"
    )


def fake_vega(root: Path, code: str = "window.vega = {};") -> None:
    for package, file in web_assets.VEGA_SCRIPTS:
        path = web_assets.asset(package, file, root)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"/* {package.name} */ {code}")


def test_the_dvc_template_inlines_vega_and_links_nothing(tmp_path: Path) -> None:
    fake_vega(tmp_path)

    page = web_assets.write_dvc_template(tmp_path).read_text()

    assert "{plot_divs}" in page and "{refresh_tag}" in page
    assert "{scripts}" not in page, "DVC would add its CDN links there"
    assert "http" not in page
    positions = [page.index(f"/* {p.name} */") for p, _ in web_assets.VEGA_SCRIPTS]
    assert positions == sorted(positions), "vega, then vega-lite, then vega-embed"


def test_a_script_that_would_end_its_tag_early_is_not_inlined(tmp_path: Path) -> None:
    fake_vega(tmp_path, code="var s = '</script>';")

    with pytest.raises(WebAssetsError, match="cannot be inlined"):
        web_assets.write_dvc_template(tmp_path)


def test_the_template_is_named_in_the_projects_local_dvc_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")  # no reporting daemon left behind
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    template = tmp_path / "elsewhere" / "page.html"

    web_assets.use_for_dvc_plots(tmp_path, template)

    local = subprocess.run(
        [*dvc, "config", "--local", "plots.html_template"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )
    assert local.stdout.strip() == str(template)
    assert "html_template" not in (tmp_path / ".dvc" / "config").read_text(), "not committed"
