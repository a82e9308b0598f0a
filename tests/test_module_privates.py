"""No module of normlab imports or reads another module's private (underscore) names."""

from __future__ import annotations

import ast
from pathlib import Path

import normlab

SRC = Path(normlab.__file__).parent


def modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_module_imports_a_private_name_of_another():
    found = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(
                            f"{path.relative_to(SRC)}: from {node.module} import {alias.name}"
                        )
    assert not found, found


def test_no_module_reads_a_private_name_of_an_imported_module():
    found = []
    for path in modules():
        tree = ast.parse(path.read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):  # normlab's own modules only (os._exit is fine)
                imported |= {
                    (a.asname or a.name).split(".")[0]
                    for a in node.names
                    if a.name.startswith("normlab")
                }
            elif isinstance(node, ast.ImportFrom) and (
                node.level or "normlab" in (node.module or "")
            ):
                imported |= {a.asname or a.name for a in node.names}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not found, found
