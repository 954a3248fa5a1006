"""What the distribution installs: everything under one ``emoflow`` name in site-packages,
while ``components/`` and ``flows/`` stay at the top of the repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from emoflow.flows.code_graph import PROJECT_ROOT

IGNORED = shutil.ignore_patterns("__pycache__")
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def source_packages() -> set[str]:
    """Every package folder of the checkout, by the name it installs under."""
    return {
        ".".join(["emoflow", *init.parent.relative_to(PROJECT_ROOT).parts])
        for top in ("components", "flows")
        for init in (PROJECT_ROOT / top).rglob("__init__.py")
    }


def test_every_package_folder_is_installed_under_emoflow():
    assert set(PYPROJECT["packages"]) == source_packages()
    assert PYPROJECT["package-dir"] == {
        "emoflow.components": "components",
        "emoflow.flows": "flows",
    }


@pytest.mark.slow
def test_the_wheel_puts_nothing_but_emoflow_at_the_top_of_site_packages(tmp_path):
    # Built from a copy: a build/ folder left in the checkout would slip stale files in.
    source = tmp_path / "source"
    for name in ("components", "flows"):
        shutil.copytree(PROJECT_ROOT / name, source / name, ignore=IGNORED)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(PROJECT_ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path)]
        + [str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = tmp_path.glob("emoflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    distribution, version = wheel.name.split("-")[:2]
    assert {name.split("/")[0] for name in names} == {
        "emoflow",
        f"{distribution}-{version}.dist-info",
    }
    assert "emoflow/__init__.py" not in names, "emoflow is a namespace package"
    for package in source_packages():
        assert f"{package.replace('.', '/')}/__init__.py" in names
    assert "emoflow/components/serving/demo_page.html" in names
