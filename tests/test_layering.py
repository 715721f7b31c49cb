"""The package's layers, read from the import statements (ast): operators and sensors are siblings, and
nothing above the hook reaches into ``protocol`` (errors classify themselves)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "airflow_provider_cfworkflows"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
# Modules that sit above the hook: they use it, the errors and the wait rules, never the wire format.
ABOVE_THE_HOOK = (
    "operators",
    "sensors",
    "triggers",
    "base",
    "task_waits",
    "looks",
    "checks",
    "instance_changes",
    "assets",
    "lineage",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; ``from x import y`` counts ``x`` and ``x.y``)."""
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


def modules_under(subpackage: str) -> list[Path]:
    return sorted((ROOT / subpackage).glob("*.py"))


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == PACKAGE else None


def test_the_graph_reader_sees_imports():
    # Guard against a reader that finds nothing: the operators do import the base module.
    imports = imported_modules(ROOT / "operators" / "instances.py")
    assert f"{PACKAGE}.base" in imports
    assert f"{PACKAGE}.task_waits.InstanceWait" in imports


@pytest.mark.parametrize(("layer", "sibling"), [("operators", "sensors"), ("sensors", "operators")])
def test_operators_and_sensors_do_not_import_each_other(layer, sibling):
    assert modules_under(layer)
    offenders = {
        module_name(path): sorted(name for name in imported_modules(path) if layer_of(name) == sibling)
        for path in modules_under(layer)
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_nothing_above_the_hook_imports_protocol():
    paths = [
        path
        for name in ABOVE_THE_HOOK
        for path in (modules_under(name) if (ROOT / name).is_dir() else [ROOT / f"{name}.py"])
    ]
    assert len(paths) > len(ABOVE_THE_HOOK)
    offenders = {
        module_name(path): sorted(name for name in imported_modules(path) if layer_of(name) == "protocol")
        for path in paths
    }
    assert {module: names for module, names in offenders.items() if names} == {}
