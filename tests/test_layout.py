"""The folder list shows the architecture: stages on top, the engines under them, the base (io,
outputs, config, run machinery, the shared top-level modules) at the bottom, and imports only
ever point down (see each sub-package's docstring)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sptar"
ENGINES = ("llm", "retrieval", "reporting")
BASE = ("io", "outputs", "config", "run")
ENTRY = ("sptar.cli", "sptar.__main__")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    if module in ENTRY:
        return "entry"
    if len(parts) > 1 and parts[1] == "stages":
        return "stage"
    if len(parts) > 1 and parts[1] in ENGINES:
        return "engine"
    return "base"  # io, outputs, config, run and the shared top-level modules


def imported(module: str) -> set[str]:
    """Every sptar module the module imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("sptar")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sptar"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names
                      if f"{node.module}.{a.name}" in MODULES}
    return {m for m in found if m in MODULES and m != "sptar"}


def engine_of(module: str) -> str:
    return module.split(".")[1]


def test_imports_point_down_only():
    wrong = []
    for module in MODULES:
        mine = layer(module)
        for other in imported(module):
            theirs = layer(other)
            if mine == "stage" and theirs == "stage" and other != "sptar.stages":
                wrong.append(f"{module} imports the stage {other}: stages meet through files")
            elif mine == "engine" and theirs == "stage":
                wrong.append(f"{module} (engine) imports the stage {other}")
            elif mine == "engine" and theirs == "engine" and engine_of(other) != engine_of(module):
                wrong.append(f"{module} imports another engine's {other}")
            elif mine == "base" and theirs in ("stage", "engine", "entry"):
                wrong.append(f"{module} (base) imports {other} ({theirs})")
    assert not wrong, "\n".join(wrong)


def test_the_rule_sees_a_wrong_import():
    """The checker is not blind: the runner really imports base modules, and a stage that
    imported another would be caught by the same classification."""
    assert "sptar.run.stagelog" in imported("sptar.run.runner")
    assert layer("sptar.stages.train") == layer("sptar.stages.filter") == "stage"
    assert layer("sptar.retrieval.bm25") == "engine" and layer("sptar.io.formats") == "base"
    assert "sptar.retrieval.bm25" in imported("sptar.stages.filter")  # lazy imports count too


def test_few_modules_at_the_top_level():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top


@pytest.mark.parametrize("package", [*ENGINES, *BASE, "stages"])
def test_each_sub_package_says_what_lives_there(package):
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
    assert doc, f"sptar/{package}/__init__.py has no docstring"
    if package not in ("config", "outputs"):
        assert "May import" in doc


FILE_NAME = re.compile(r"""["'][\w./<>{}-]*\.(?:jsonl|json|tsv|md|txt|trec|png|npy|csv)["']""")


def test_stage_output_file_names_live_in_outputs():
    """Stage modules name no output file: the names are in ``sptar/outputs/`` (one place)."""
    found = [f"{p.name}: {m.group(0)}" for p in sorted((PACKAGE / "stages").glob("*.py"))
             for m in FILE_NAME.finditer(re.sub(r'"""[\s\S]*?"""', "", p.read_text()))]
    assert not found, found
