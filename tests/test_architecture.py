"""The import rules of ARCHITECTURE.md, enforced: the package reads as the data flow, and a
stage never reaches into a later one (models know nothing of rules, tickets or web; sinks know
nothing of rules; the store knows nothing of rules)."""

from __future__ import annotations

import ast
import os
import re

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "agent")

FOUNDATIONS = {"agent", "agent.clock", "agent.persistence", "agent.metrics", "agent.config.decode", "agent.systemd",
               "agent.scheduling", "agent.processes"}

# unit -> the units it may import (besides itself and the foundations). A unit is the longest
# prefix of a module's dotted name that appears in this table.
ALLOWED: dict[str, set[str]] = {
    "agent": set(),
    "agent.clock": set(),
    "agent.persistence": set(),
    "agent.metrics": set(),
    "agent.systemd": set(),
    "agent.scheduling": set(),
    "agent.processes": set(),
    "agent.config.decode": set(),
    "agent.store": set(),
    "agent.models": set(),
    "agent.promql": {"agent.store"},
    "agent.tickets.sinks": set(),
    "agent.tickets.suppress": set(),
    "agent.tickets.remediation": {"agent.tickets.sinks"},
    "agent.trends.settings": set(),
    "agent.config": {"agent.tickets.sinks", "agent.tickets.suppress", "agent.tickets.remediation",
                     "agent.trends.settings"},
    "agent.sources": {"agent.store", "agent.config", "agent.promql"},
    "agent.tickets.policy": set(),
    "agent.rules": {"agent.store", "agent.promql", "agent.models", "agent.config", "agent.tickets.policy",
                    "agent.tickets.remediation"},
    "agent.tickets": {"agent.tickets.sinks", "agent.tickets.suppress", "agent.tickets.policy", "agent.config", "agent.store",
                      "agent.tickets.remediation"},
    "agent.trends": {"agent.tickets", "agent.tickets.sinks", "agent.tickets.suppress", "agent.config",
                     "agent.trends.settings"},
    "agent.web": {"agent.store", "agent.promql", "agent.models", "agent.config", "agent.rules", "agent.tickets",
                  "agent.tickets.sinks", "agent.tickets.suppress", "agent.sources",
                     "agent.tickets.remediation"},
    "agent.pipeline": {"agent.store", "agent.promql", "agent.models", "agent.config", "agent.rules", "agent.tickets",
                       "agent.tickets.sinks", "agent.tickets.suppress", "agent.sources", "agent.trends",
                     "agent.tickets.remediation"},
    "agent.replay": {"agent.store", "agent.promql", "agent.models", "agent.config", "agent.rules", "agent.tickets",
                     "agent.tickets.sinks", "agent.tickets.suppress", "agent.sources", "agent.pipeline",
                     "agent.tickets.remediation"},
    "agent.daemon": {"agent.store", "agent.promql", "agent.models", "agent.config", "agent.rules", "agent.tickets",
                     "agent.tickets.sinks", "agent.tickets.suppress", "agent.sources", "agent.trends", "agent.pipeline",
                     "agent.web",
                     "agent.tickets.remediation"},
    "agent.commands": {"*"},
    "agent.cli": {"agent.commands"},
    "agent.__main__": {"agent.cli"},
}


def unit_of(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in ALLOWED:
            return prefix
    return module


def modules() -> list[tuple[str, str]]:
    out = []
    for directory, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(directory, f)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                out.append((rel.removesuffix(".__init__"), path))
    return sorted(out)


def imports(module: str, path: str) -> list[tuple[int, str, list[str], bool]]:
    """(line, imported module, names, inside a function) for every import of agent code."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target == "agent" or target.startswith("agent."):
                    names = [a.name for a in child.names]
                    # `from agent.x import y` may name a submodule y
                    found.append((child.lineno, target, names, in_function))
            elif isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.startswith("agent."):
                        found.append((child.lineno, a.name, [], in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def _target_units(target: str, names: list[str]) -> list[str]:
    units = []
    for name in names or [""]:
        candidate = f"{target}.{name}" if name else target
        sub = os.path.join(os.path.dirname(ROOT), *candidate.split("."))
        units.append(unit_of(candidate if (os.path.isdir(sub) or os.path.exists(sub + ".py")) else target))
    return units


def test_every_module_has_a_unit():
    unknown = [m for m, _ in modules() if unit_of(m) not in ALLOWED]
    assert not unknown, f"modules outside ARCHITECTURE.md's table: {unknown}"


def test_import_rules():
    violations = []
    for module, path in modules():
        unit = unit_of(module)
        allowed = ALLOWED[unit]
        for line, target, names, _ in imports(module, path):
            for target_unit in _target_units(target, names):
                if target_unit == unit or target_unit in FOUNDATIONS or "*" in allowed or target_unit in allowed:
                    continue
                violations.append(f"{os.path.relpath(path, os.path.dirname(ROOT))}:{line}: {unit} imports {target_unit}")
    assert not violations, "import rules broken (see ARCHITECTURE.md):\n" + "\n".join(violations)


def test_foundations_import_only_foundations():
    for module, path in modules():
        if unit_of(module) not in FOUNDATIONS:
            continue
        for line, target, names, _ in imports(module, path):
            for target_unit in _target_units(target, names):
                assert target_unit in FOUNDATIONS, f"{path}:{line}: foundation {module} imports {target_unit}"


def test_no_private_names_across_modules():
    """A leading underscore means 'this module's own': another module reaching for it couples
    to an implementation detail. Share it under a public name instead."""
    bad = []
    for module, path in modules():
        for line, target, names, _ in imports(module, path):
            if target == module:
                continue
            bad += [f"{path}:{line}: {target}.{n}" for n in names if n.startswith("_") and n != "__version__"]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


MODULE_DOC = re.compile(r"\S")


@pytest.mark.parametrize("module,path", modules())
def test_module_docstring_says_what_it_owns(module, path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    doc = ast.get_docstring(tree)
    if module.endswith("__main__"):
        return
    assert doc and len(doc) >= 20, f"{path}: a module docstring says what the module owns"
