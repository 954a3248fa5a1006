"""Scripts and styles of the reports a person opens from disk, kept here so they work offline.

Great Expectations' Data Docs and ``dvc plots show`` link Bootstrap, jQuery, Vega and friends
from CDNs, so on a machine without the network their pages render blank or unstyled. The
packages are fetched once, when the environment is installed (``python -m
emoflow.components.web_assets``, run in the project), from the npm registry, each checked
against its pinned sha512 as ``npm ci`` checks a lockfile, and only the files pages load are
kept, in the environment (``<sys.prefix>/share/emoflow/web``) beside the Python packages whose
pages link them. The Data Docs site gets copies of them (``components.validate.data_docs``);
``dvc plots show`` gets a page template with Vega inlined (:func:`write_dvc_template`), named
in the project's ``.dvc/config.local``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import io
import subprocess
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from emoflow.components.artifacts import atomic_dir, write_text
from emoflow.components.errors import EmoFlowError

REGISTRY = "https://registry.npmjs.org"
ASSETS_DIR = Path(sys.prefix) / "share" / "emoflow" / "web"
DVC_TEMPLATE = "dvc_plots.html"
DVC_PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")  # what DVC replaces in it
DOWNLOAD_TIMEOUT = 120  # seconds per package


class WebAssetsError(EmoFlowError, RuntimeError):
    """A package cannot be fetched, or is not the one pinned here."""


@dataclass(frozen=True)
class Package:
    """An npm package version and the files of it that pages load (``*`` globs allowed)."""

    name: str
    version: str
    integrity: str  # the registry's ``dist.integrity`` of the tarball
    files: tuple[str, ...]

    @property
    def folder(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name.split('/')[-1]}-{self.version}.tgz"


BOOTSTRAP = Package(
    "bootstrap",
    "4.3.1",
    "sha512-rXqOmH1VilAt2DyPzluTi2blhk17bO7ef+zLLPlWvG494pDxcM234pJ8wTc/6R40UWizAIIMgxjvxZg5kmsbag==",
    ("dist/css/bootstrap.min.css", "dist/js/bootstrap.min.js"),
)
BOOTSTRAP_DARK = Package(
    "@forevolve/bootstrap-dark",
    "1.1.0",
    "sha512-A3ucpEpxPoTVO490lZZCfjPXxv832l7mm1IxX3bXyxvgwnPGXDLyh7dWrphXKO8YBAu3EswbBEu3VSW8NRMW3A==",
    ("dist/css/bootstrap-prefers-dark.css",),
)
BOOTSTRAP_TABLE = Package(
    "bootstrap-table",
    "1.19.1",
    "sha512-WvV+l1AI/C+zThaKmfHmi/IuayVNB0qdFyEhFx1jyZhO0oLtNJNANkCR3rvJf6Dkh72dsLElxpE/bzK9seEQLA==",
    (
        "dist/bootstrap-table.min.css",
        "dist/bootstrap-table.min.js",
        "dist/extensions/filter-control/bootstrap-table-filter-control.css",
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
    ),
)
DATEPICKER = Package(
    "bootstrap-datepicker",
    "1.9.0",
    "sha512-9rYYbaVOheGYxjOr/+bJCmRPihfy+LkLSg4fIFMT9Od8WwWB/MB50w0JO1eBgKUMbb7PFHQD5uAfI3ArAxZRXA==",
    ("dist/css/bootstrap-datepicker.min.css", "dist/js/bootstrap-datepicker.min.js"),
)
FONT_AWESOME = Package(
    "@fortawesome/fontawesome-free",
    "6.6.0",
    "sha512-60G28ke/sXdtS9KZCpZSHHkCbdsOGEhIUGlwq6yhY74UpTiToIh8np7A8yphhM4BWsvNFtIvLpi4co+h9Mr9Ow==",
    ("css/all.min.css", "webfonts/*.woff2"),  # the stylesheet finds its fonts at ../webfonts
)
JQUERY = Package(
    "jquery",
    "3.7.1",
    "sha512-m4avr8yL8kmFN8psrbFFFmB/If14iN5o9nw/NgnnM+kybDJpRsAynV2BsfpTYrTRysYUdADVD7CkUUizgkpLfg==",
    ("dist/jquery.min.js",),
)
POPPER = Package(
    "popper.js",
    "1.12.9",
    "sha512-s0EEi9xiSCdqz9lV4IiVH5yIZnDX/U1t0tCjB+0jXx9jW8lrR7kOpVupiUg175ogqVoudpDXHF1p6dKATCHMeg==",
    ("dist/umd/popper.min.js",),
)
# The versions dvc-render links (dvc_render.vega.VegaRenderer.SCRIPTS).
VEGA = Package(
    "vega",
    "5.20.2",
    "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw==",
    ("build/vega.min.js",),
)
VEGA_LITE = Package(
    "vega-lite",
    "5.2.0",
    "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw==",
    ("build/vega-lite.min.js",),
)
VEGA_EMBED = Package(
    "vega-embed",
    "6.18.2",
    "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
    ("build/vega-embed.min.js",),
)
PACKAGES = (
    BOOTSTRAP,
    BOOTSTRAP_DARK,
    BOOTSTRAP_TABLE,
    DATEPICKER,
    FONT_AWESOME,
    JQUERY,
    POPPER,
    VEGA,
    VEGA_LITE,
    VEGA_EMBED,
)
# What dvc-render's page loads, in its order.
VEGA_SCRIPTS = (
    (VEGA, "build/vega.min.js"),
    (VEGA_LITE, "build/vega-lite.min.js"),
    (VEGA_EMBED, "build/vega-embed.min.js"),
)


def asset(package: Package, file: str, root: Path = ASSETS_DIR) -> Path:
    """Where a fetched file of ``package`` lies."""
    return root / package.folder / file


def installed(root: Path = ASSETS_DIR) -> bool:
    """Whether every package has been fetched into ``root``."""
    return all((root / package.folder).is_dir() for package in PACKAGES)


def fetch(root: Path = ASSETS_DIR) -> list[Package]:
    """Fetch the packages not yet in ``root``; return those fetched."""
    missing = [p for p in PACKAGES if not (root / p.folder).is_dir()]
    for package in missing:
        try:
            with urllib.request.urlopen(package.tarball, timeout=DOWNLOAD_TIMEOUT) as response:
                tarball = response.read()
        except OSError as err:
            raise WebAssetsError(
                f"cannot fetch {package.folder} from {package.tarball}: {err}; offline reports "
                "link their CDNs until `python -m emoflow.components.web_assets` succeeds"
            ) from None
        unpack(package, tarball, root)
    return missing


def unpack(package: Package, tarball: bytes, root: Path) -> Path:
    """Check ``tarball`` against the pinned digest and keep the files pages load, as a whole."""
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if digest != package.integrity:
        raise WebAssetsError(
            f"{package.folder}: the tarball's digest {digest} is not the pinned {package.integrity}"
        )
    folder = root / package.folder
    with (
        tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive,
        atomic_dir(folder) as tmp,
    ):
        members = [m for m in archive.getmembers() if m.isfile() and _wanted(package, m.name)]
        missing = [f for f in package.files if not any(_wanted_by(f, m.name) for m in members)]
        if missing:
            raise WebAssetsError(f"{package.folder}: no {', '.join(missing)} in its tarball")
        for member in members:
            target = tmp / _inside(member.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.extractfile(member).read())
    return folder


def _inside(member: str) -> str:
    """A tarball member's path inside the package (npm tarballs hold one top folder)."""
    return member.split("/", 1)[1]


def _wanted_by(pattern: str, member: str) -> bool:
    return "/" in member and fnmatch.fnmatchcase(_inside(member), pattern)


def _wanted(package: Package, member: str) -> bool:
    return any(_wanted_by(pattern, member) for pattern in package.files)


def write_dvc_template(root: Path = ASSETS_DIR) -> Path:
    """A page template for ``dvc plots show`` with Vega, Vega-Lite and vega-embed inlined.

    It has no ``{scripts}`` placeholder, so DVC adds no CDN links; ``{plot_divs}`` and
    ``{refresh_tag}`` are DVC's (``dvc_render.html``). The rendered page needs no network.
    """
    scripts = []
    for package, file in VEGA_SCRIPTS:
        code = asset(package, file, root).read_text(encoding="utf8")
        if "</script" in code.lower() or any(p in code for p in DVC_PLACEHOLDERS):
            raise WebAssetsError(f"{package.folder}/{file} cannot be inlined in a page template")
        scripts.append(f"<script>/* {package.folder}/{file} */\n{code}\n</script>")
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            "<html>",
            "<head>",
            '<meta charset="utf-8">',
            "{refresh_tag}",
            "<title>DVC Plot</title>",
            *scripts,
            "<style>table { border-spacing: 15px; }</style>",
            "</head>",
            "<body>",
            "{plot_divs}",
            "</body>",
            "</html>",
        ]
    )
    template = root / DVC_TEMPLATE
    write_text(template, page + "\n")
    template.chmod(0o644)  # an installed file, readable by whoever runs dvc
    return template


def use_for_dvc_plots(project: Path, template: Path) -> None:
    """Name ``template`` as ``dvc plots``' page template in the project's local DVC config
    (``.dvc/config.local``: not committed, as the template's path is this machine's)."""
    subprocess.run(
        [sys.executable, "-m", "dvc", "config", "--local", "plots.html_template", str(template)],
        cwd=project,
        check=True,
    )


def main() -> None:
    """Fetch what is missing, write the DVC template, and use it in the project here."""
    fetched = fetch()
    template = write_dvc_template()
    print(f"web assets: {len(fetched)} package(s) fetched into {ASSETS_DIR}")
    if Path(".dvc").is_dir():
        use_for_dvc_plots(Path("."), template)
        print(f"dvc plots show: page template {template} (.dvc/config.local)")


if __name__ == "__main__":
    main()
