"""
The kyoukai package imports itself without a cycle: every ``import`` and ``from ... import``
in a module counts, at the top, under ``if TYPE_CHECKING:`` and inside functions alike.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "kyoukai"


def module_name(path: Path) -> str:
    """The dotted name of a module file of the package (a package's ``__init__.py`` names the package)."""
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """
    Every name ``source`` imports, relative imports resolved: ``X`` for ``import X``, ``X.y``
    for ``from X import y`` (``y`` may be a submodule or a name in ``X``: see :func:`resolve`).
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module of the package that importing ``name`` names: ``name`` or its longest known prefix."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports."""
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(path.read_text(), module, path.name == "__init__.py"):
            if name != "kyoukai" and not name.startswith("kyoukai."):
                continue
            target = resolve(name, modules)
            if target is not None and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


class TestImportGraph:
    def test_no_cycle(self) -> None:
        cycle: list[str] = []
        try:
            graphlib.TopologicalSorter(import_graph()).prepare()
        except graphlib.CycleError as e:
            cycle = e.args[1]
        assert not cycle, "import cycle: " + " -> ".join(cycle)

    def test_the_graph_is_the_package(self) -> None:
        graph = import_graph()
        assert "kyoukai.blueprint" in graph["kyoukai.app"]
        assert "kyoukai.protocol.h2.connection" in graph["kyoukai.backends.http2"]

    def test_relative_and_conditional_imports_are_resolved(self) -> None:
        source = (
            "from typing import TYPE_CHECKING\n"
            "from . import util\n"
            "from .. import app\n"
            "if TYPE_CHECKING:\n"
            "    from .transport import close_transport\n"
            "def f():\n"
            "    import kyoukai.context\n"
        )
        names = imported_names(source, "kyoukai.backends.gunicorn", is_package=False)
        modules = package_modules()
        resolved = {resolve(n, modules) for n in names} - {None}
        assert resolved == {
            "kyoukai.backends",
            "kyoukai.app",
            "kyoukai.backends.transport",
            "kyoukai.context",
        }
        assert imported_names("from . import x", "kyoukai.backends", is_package=True) >= {"kyoukai.backends.x"}
