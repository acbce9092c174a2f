"""Which package may import which library: the adapters own their third-party clients."""

from __future__ import annotations

import ast
from pathlib import Path

import pipeline

ROOT = Path(pipeline.__file__).parent


def _imports(path: Path, *, module_level: bool = False) -> set[str]:
    """Top-level names imported anywhere in the module (or only in its own body)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body if module_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def _pipeline_packages(path: Path) -> set[str]:
    """The ``pipeline`` subpackages (or top-level modules) a module imports, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules = [node.module]
        else:
            continue
        names |= {m.split(".")[1] for m in modules if m.startswith("pipeline.")}
    return names


def _importers(library: str, *, module_level: bool = False) -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for path in ROOT.rglob("*.py")
        if library in _imports(path, module_level=module_level)
    }


def test_only_the_kafka_adapter_imports_aiokafka() -> None:
    outside = {path for path in _importers("aiokafka") if not path.startswith("kafka/")}
    assert outside == set(), f"modules outside pipeline/kafka import aiokafka: {outside}"


def test_the_check_sees_the_adapter_itself() -> None:
    assert "kafka/consumer.py" in _importers("aiokafka")


def test_the_product_never_imports_the_emulators_at_module_level() -> None:
    """Only the sandbox and demo glue may; the CLI imports them inside its commands."""
    glue = {"sandbox_stack.py", "demo.py"}
    importers = _importers("sfamp_sandbox", module_level=True) - glue
    assert importers == set(), f"product modules import sfamp_sandbox: {importers}"


ADAPTERS = frozenset(("kafka", "salesforce", "amplitude", "runtime"))


def test_the_transform_imports_no_adapter() -> None:
    """The pure core reads change envelopes and a mapping; it never reaches an adapter."""
    reached = {
        path.name: found
        for path in (ROOT / "transform").rglob("*.py")
        if (found := _pipeline_packages(path) & ADAPTERS)
    }
    assert reached == {}, f"pipeline/transform modules import adapters: {reached}"


def test_the_adapter_check_sees_an_adapter_import() -> None:
    assert "kafka" in _pipeline_packages(ROOT / "runtime" / "deliver" / "pump.py")


MAX_MODULE_LINES = 450


def test_no_product_module_is_over_450_lines() -> None:
    """Split by responsibility when one grows (the style guide aims under ~400)."""
    lengths = {path.relative_to(ROOT).as_posix(): path.read_text() for path in ROOT.rglob("*.py")}
    over = {
        name: count
        for name, text in lengths.items()
        if (count := text.count("\n")) > MAX_MODULE_LINES
    }
    assert over == {}, f"product modules over {MAX_MODULE_LINES} lines: {over}"
