"""The emulators are their own package: none of their modules imports the product."""

from __future__ import annotations

import ast
from pathlib import Path

import sfamp_sandbox

ROOT = Path(sfamp_sandbox.__file__).parent


def _imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def test_no_emulator_module_imports_pipeline() -> None:
    offenders = {
        str(path.relative_to(ROOT)): name
        for path in ROOT.rglob("*.py")
        for name in _imported(ast.parse(path.read_text()))
        if name == "pipeline" or name.startswith("pipeline.")
    }
    assert offenders == {}, f"emulator modules import the product: {offenders}"
