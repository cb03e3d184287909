"""The layer rule, checked by walking every import in the package.

``metadata`` ← ``runtime`` ← ``automation`` ← ``api`` / ``ui``: a module imports only from its own layer
and the layers to its left, plus the foundation modules every layer may use (``db``, ``errors``,
``config``). ``web`` is HTTP plumbing for ``api`` and ``ui`` only. Imports under ``if TYPE_CHECKING:``
are not imports at run time and are allowed. No CRM-specific code lives inside ``formwork/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "formwork"
FOUNDATION = {"formwork", "formwork.db", "formwork.errors", "formwork.config"}
LAYERS = ["metadata", "runtime", "automation", "api|ui"]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names.split("|")}
# the package root wires everything (create_app, the CLI, migrations): it may import any layer
WIRING = {"formwork", "formwork.cli", "formwork.migrations", "formwork.migrations.env", "formwork.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import that runs, at module level or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
    return [(line, name) for line, name in found if name.split(".")[0] == "formwork"]


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def upward_imports() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_name(path)
        if me in WIRING or me.startswith("formwork.migrations"):
            continue
        mine = layer_of(me)
        for line, target in runtime_imports(path):
            theirs = layer_of(target)
            if target.startswith("formwork.web") and mine not in ("api", "ui") and me != "formwork.web":
                problems.append(f"{me}:{line} imports {target} (web is plumbing for api/ui only)")
            elif mine is None and me != "formwork.web" and theirs is not None:
                problems.append(f"{me}:{line} (foundation) imports {target}")
            elif mine is not None and theirs is not None and RANK[theirs] > RANK[mine]:
                problems.append(f"{me}:{line} ({mine}) imports {target} ({theirs})")
            elif mine in ("api", "ui") and theirs in ("api", "ui") and theirs != mine:
                problems.append(f"{me}:{line} ({mine}) imports {target} ({theirs}): api and ui are siblings")
    return problems


def test_layers_import_only_downward() -> None:
    assert upward_imports() == []


def test_the_walker_sees_function_level_imports_and_skips_type_checking(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from formwork.ui import x\n"
        "def f():\n    from formwork.api import y\n",
        encoding="utf-8",
    )
    assert [name for _, name in runtime_imports(src)] == ["formwork.api.y"]


def crm_specific_code(path: Path) -> list[tuple[int, str]]:
    """Identifiers and string literals (docstrings aside) that name CRM things: the CRM's code lives
    beside its template in ``formwork_templates/crm/``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    words = ("crm", "opportunit", "customer")
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            text = node.id
        elif isinstance(node, ast.Attribute):
            text = node.attr
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            text = node.name
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
        else:
            continue
        if any(w in text.lower() for w in words):
            hits.append((getattr(node, "lineno", 0), text))
    return hits


def test_no_crm_specific_code_in_the_platform() -> None:
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name == "formwork.cli":
            continue  # the documented CLI (`init --with-crm`, `demo crm --customers N`) names the bundled CRM
        for line, text in crm_specific_code(path):
            hits.append(f"{name}:{line}: {text[:80]}")
    assert hits == []
