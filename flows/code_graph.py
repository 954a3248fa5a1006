"""The project's import graph, read from the source without importing anything.

Three things need to know which code a stage runs: the flow's cache key (an edited module
re-runs the stages that import it), ``dvc.yaml``'s code dependencies (checked against this
graph by a test) and the layering rules between the sub-packages of ``components/``.
Parsing instead of importing keeps all three cheap: no TensorFlow is loaded to answer.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import textwrap
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

PACKAGE = "emoflow"  # the namespace the project's packages install under
PROJECT_PACKAGES = ("components", "flows")  # its packages, and their folders at the top
COMPONENTS = f"{PACKAGE}.components"
PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout, or site-packages/emoflow


def imports_of(tree: ast.AST) -> set[str]:
    """Project modules named by the import statements anywhere in ``tree``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from emoflow.components import labels` imports emoflow.components.labels
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.startswith(f"{PACKAGE}.") and origin(n) is not None}


def module_imports(module: str, top_level_only: bool = False) -> set[str]:
    """The project modules ``module`` imports (only at its top level, if asked)."""
    tree = parse(module)
    if top_level_only:
        body = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        tree = ast.Module(body=body, type_ignores=[])
    return imports_of(tree)


def closure(roots: Iterable[str]) -> set[str]:
    """``roots`` and every project module they import, transitively."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or origin(name) is None:
            continue
        seen.add(name)
        todo.extend(module_imports(name))
    return seen


def function_imports(function: Callable[..., object]) -> set[str]:
    """Project modules a function imports in its body (the stages import lazily)."""
    return imports_of(ast.parse(textwrap.dedent(inspect.getsource(function))))


def parse(module: str) -> ast.Module:
    """The module's syntax tree; one that does not parse still counts, by its text, as a leaf."""
    try:
        return ast.parse(source(module))
    except SyntaxError:
        return ast.Module(body=[], type_ignores=[])


@cache
def origin(module: str) -> Path | None:
    """The source file of a module, found without importing it (nor TensorFlow with it).
    A project module ``emoflow.components.a.b`` is ``components/a/b.py`` (or its
    ``__init__.py``) in the folder that holds the packages, a checkout or an installed
    ``emoflow``; any other (a test's stages) is looked up from its top-level package."""
    namespace, _, name = module.partition(".")
    if namespace == PACKAGE:
        in_project = name.split(".")[0] in PROJECT_PACKAGES
        return _source_file(PROJECT_ROOT.joinpath(*name.split("."))) if in_project else None
    spec = importlib.util.find_spec(namespace)
    if spec is None:
        return None
    if not name:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    if not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    return _source_file(package.joinpath(*name.split(".")))


def _source_file(base: Path) -> Path | None:
    """``base``'s module file, or its package's ``__init__.py``."""
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def source(module: str) -> str:
    # Read on every call: an edited file must change a cache key within one long-lived worker.
    return origin(module).read_text()


# What each part of components/ may import, besides itself. The shared root (settings,
# labels, manifest, ...) imports only the root. Serving is what a registered model ships, so
# it stays clear of the pipeline's other parts; ingest borrows serving's face detector to
# crop the original CK+ frames.
ROOT = "root"
ALLOWED_IMPORTS: dict[str, frozenset[str]] = {
    ROOT: frozenset(),
    "sample": frozenset({ROOT}),
    "serving": frozenset({ROOT}),
    "ingest": frozenset({ROOT, "serving"}),
    "validate": frozenset({ROOT}),
    "records": frozenset({ROOT}),
    "training": frozenset({ROOT, "records", "serving"}),
    "judging": frozenset({ROOT, "records"}),
}


def part_of(module: str) -> str:
    """The part of ``components/`` a module belongs to: a sub-package's name, or the root."""
    parts = module.removeprefix(f"{COMPONENTS}.").split(".")
    return parts[0] if parts[0] in ALLOWED_IMPORTS else ROOT


def layer_violations(components_dir: Path) -> list[str]:
    """Imports between parts of ``components_dir`` that :data:`ALLOWED_IMPORTS` forbids."""
    found = []
    for file in sorted(components_dir.rglob("*.py")):
        relative = file.relative_to(components_dir).with_suffix("")
        module = ".".join([COMPONENTS, *(p for p in relative.parts if p != "__init__")])
        importer = part_of(module)
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                else []
            )
            for name in names:
                if not name.startswith(f"{COMPONENTS}."):
                    continue
                imported = part_of(name)
                if imported != importer and imported not in ALLOWED_IMPORTS[importer]:
                    found.append(f"{file}:{node.lineno}: {importer} imports {name}")
    return found


def stage_code_files(stage: Callable[..., object]) -> list[str]:
    """The source files a pipeline stage runs, relative to the project: the component it
    calls and every ``components`` module that imports, transitively (what ``dvc.yaml``'s
    ``deps`` must list for the stage to re-run when its code changes)."""
    roots = function_imports(stage) | module_imports(stage.__module__, top_level_only=True)
    modules = {m for m in closure(roots) if m.startswith(f"{COMPONENTS}.")}
    files = {origin(m) for m in modules}
    return sorted(f.relative_to(PROJECT_ROOT).as_posix() for f in files if f.read_text().strip())
