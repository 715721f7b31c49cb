"""The package's layers, read from the import statements (ast): operators and sensors are siblings,
nothing above the hook reaches into ``protocol`` (errors classify themselves), nothing below the waits
reaches up into them, and the emulator stands apart (it imports nothing of the provider, the provider
imports neither it nor its web framework)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "airflow_provider_cfworkflows"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
# Modules that sit above the hook: they use it, the errors and the wait rules, never the wire format.
ABOVE_THE_HOOK = (
    "operators",
    "sensors",
    "triggers",
    "plugins",
    "base",
    "task_waits",
    "looks",
    "checks",
    "side_effects",
    "instance_changes",
    "assets",
    "lineage",
)
# The waits (decisions, looks, task-level waits) use the hook; the hook and what it stands on never use them.
WAIT_MODULES = ("checks", "looks", "task_waits")
BELOW_THE_WAITS = ("hooks", "transport", "protocol", "instance_details")
# What only the emulator needs (its `emulator` extra); FastAPI brings Starlette.
EMULATOR_ONLY = ("fastapi", "starlette", "uvicorn", "yaml")


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


def paths_of(names: tuple[str, ...]) -> list[Path]:
    """The files of these subpackages and modules."""
    return [
        path
        for name in names
        for path in (modules_under(name) if (ROOT / name).is_dir() else [ROOT / f"{name}.py"])
    ]


def is_emulator(module: str) -> bool:
    return module == f"{PACKAGE}.emulator" or module.startswith(f"{PACKAGE}.emulator.")


def provider_paths() -> list[Path]:
    """Every module of the package outside ``emulator/``."""
    return [path for path in sorted(ROOT.rglob("*.py")) if not is_emulator(module_name(path))]


def path_of(module: str) -> Path | None:
    """The file of a package module (None for other modules and for names imported from a module)."""
    relative = Path(*module.split("."))
    for path in (ROOT.parent / relative.with_suffix(".py"), ROOT.parent / relative / "__init__.py"):
        if path.is_file():
            return path
    return None


def reachable_from(paths: list[Path]) -> set[str]:
    """The package modules these files import, directly or through other package modules."""
    seen: set[str] = set()
    todo = list(paths)
    while todo:
        for name in imported_modules(todo.pop()):
            path = path_of(name) if layer_of(name) else None
            if path is not None and name not in seen:
                seen.add(name)
                todo.append(path)
    return seen


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
    paths = paths_of(ABOVE_THE_HOOK)
    assert len(paths) > len(ABOVE_THE_HOOK)
    offenders = {
        module_name(path): sorted(name for name in imported_modules(path) if layer_of(name) == "protocol")
        for path in paths
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_nothing_below_the_waits_imports_them():
    paths = paths_of(BELOW_THE_WAITS)
    assert len(paths) > len(BELOW_THE_WAITS)
    reached = {layer_of(name) for name in reachable_from(paths)}
    assert {"transport", "protocol", "instance_details"} <= reached  # the reader follows the imports
    assert reached.isdisjoint(WAIT_MODULES), sorted(reached & set(WAIT_MODULES))


def test_the_emulator_imports_nothing_of_the_provider():
    paths = modules_under("emulator")
    assert len(paths) > 10
    offenders = {
        module_name(path): sorted(
            name for name in imported_modules(path) if name.split(".")[0] == PACKAGE and not is_emulator(name)
        )
        for path in paths
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_the_provider_imports_neither_the_emulator_nor_its_web_framework():
    paths = provider_paths()
    assert f"{PACKAGE}.hooks.workflows" in {module_name(path) for path in paths}
    offenders = {
        module_name(path): sorted(
            name
            for name in imported_modules(path)
            if is_emulator(name) or name.split(".")[0] in EMULATOR_ONLY
        )
        for path in paths
    }
    assert {module: names for module, names in offenders.items() if names} == {}


# Imports every module outside emulator/ and reports what got loaded, and every import statement of an
# emulator-only package run by provider code (Airflow itself loads PyYAML, so sys.modules alone cannot
# tell for that one).
IMPORT_EVERYTHING = """
import builtins, importlib, json, sys
package, modules, web = json.loads(sys.argv[1])
statements = []
real_import = builtins.__import__

def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__") or ""
    if level == 0 and name.split(".")[0] in web and importer.split(".")[0] == package:
        statements.append(f"{importer}: import {name}")
    return real_import(name, globals, locals, fromlist, level)

builtins.__import__ = recording_import
for module in modules:
    importlib.import_module(module)
loaded = [name for name in sys.modules if name.split(".")[0] in web or name.startswith(package + ".emulator")]
print(json.dumps({"loaded": sorted(loaded), "statements": statements}))
"""


def test_importing_the_provider_loads_neither_the_emulator_nor_its_web_framework():
    modules = [module_name(path) for path in provider_paths()]
    assert len(modules) > 30
    arguments = json.dumps([PACKAGE, modules, EMULATOR_ONLY])
    finished = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING, arguments],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),  # the test Airflow home (tests/conftest.py)
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(finished.stdout.strip().splitlines()[-1])
    # PyYAML is Airflow's own (its configuration loads it): what counts is that no provider code imports it.
    assert [name for name in report["loaded"] if name.split(".")[0] != "yaml"] == []
    assert report["statements"] == []
