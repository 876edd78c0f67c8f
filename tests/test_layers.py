"""The layers of docs/architecture.md, checked from the source: no module imports or calls a
module above it (lazily or not; imports under TYPE_CHECKING aside), and no module reaches into
another module's underscore names."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mlops_cli"

# Lowest first. A module may use its own layer and those below it.
LAYERS: list[set[str]] = [
    {"errors", "naming", "timeutil", "results", "limits", "safefs", "yamlsafe", "hooks", "pushgw",
     "textsafe", "moments", "forked"},
    {"state", "schema", "stats", "records", "ks", "decision", "columns", "plan", "tail", "ramp",
     "features", "feature_drift"},
    {"store", "jsonl", "summary", "batch", "sources"},
    {"registry", "ab_testing", "drift", "prometheus", "report", "simulation", "webhooks", "watch"},
    {"project", "__init__"},
    {"cli", "ui", "demo", "entry", "__main__"},
]


def layer_of(module: str) -> int:
    """The layer of `mlops_cli.<module>` (a package's submodules share the package's layer)."""
    top = module.split(".")[0]
    for number, names in enumerate(LAYERS):
        if top in names:
            return number
    raise AssertionError(f"mlops_cli.{module} is in no layer: add it to LAYERS and the docs")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return ".".join(rel.parts)


def is_module(parts: list[str]) -> bool:
    where = PACKAGE.joinpath(*parts)
    return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, mlops_cli module) for every import outside `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    package = module_name(path).split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = [*base, *(node.module.split(".") if node.module else [])]
            names = [a.name for a in node.names] if not node.module else [""]
            for name in names:
                full = [*target, name] if name and is_module([*target, name]) else target
                out.append((node.lineno, ".".join(full) or "__init__"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlops_cli"):
            out.append((node.lineno, (node.module or "").removeprefix("mlops_cli.") or "__init__"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mlops_cli."):
                    out.append((node.lineno, alias.name.removeprefix("mlops_cli.")))
    return out


def test_no_module_imports_a_layer_above_it() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        own = layer_of(here if path.name != "__init__.py" or path.parent != PACKAGE else "__init__")
        for line, target in imported(path):
            if layer_of(target) > own:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_module_uses_another_modules_underscore_names() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        own = {  # names this module defines: its own private names are its business
            n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))
        } | {
            t.attr
            for n in ast.walk(tree)
            if isinstance(n, (ast.Assign, ast.AnnAssign))
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
            if isinstance(t, ast.Attribute)
        }
        for node in ast.walk(tree):
            name = getattr(node, "attr", None)
            if not (isinstance(node, ast.Attribute) and isinstance(name, str)):
                continue
            if not name.startswith("_") or name.startswith("__") or name in own:
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Name) and owner.id in ("os", "sys"):
                continue  # the standard library's documented names (os._exit)
            wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} uses .{name}")
    assert not wrong, "reaches into private names:\n" + "\n".join(wrong)


def test_the_layers_hold_every_module() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name != "__init__.py" or path.parent != PACKAGE:
            layer_of(module_name(path))
