"""The layers of DESIGN.md, read from the imports: each module imports only its own layer or
the ones below it, and layers 1-4 never import dagster."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import PROJECT_DIR

# The first name under elt_repo/ decides a module's layer. A new top-level module or folder
# must be placed here, or the test fails naming it.
LAYERS = {
    "settings": 1,
    "redact": 1,
    "tool_env": 1,
    "warehouse": 1,
    "schemas": 2,
    "git": 3,
    "discovery": 4,
    "manifest": 5,
    "refresh": 5,
    "defs": 6,
    "definitions": 7,
    "cli": 8,
}
NO_DAGSTER_BELOW = 5


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str, package: str) -> int | None:
    """The layer of an `elt_repo` module; 0 for the package itself, None if unplaced."""
    parts = module.split(".")
    return 0 if len(parts) == 1 else LAYERS.get(parts[1]) if parts[0] == package else None


def _imports(path: Path, module: str, root: Path) -> list[tuple[int, str]]:
    """Every module that `path` imports, anywhere in it, with the line of the import."""
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
            for alias in node.names:  # `from elt_repo import defs` imports the module defs
                sub = f"{base}.{alias.name}"
                rel = Path(*sub.split("."))
                if (root.parent / rel).is_dir() or (root.parent / rel).with_suffix(".py").is_file():
                    found.append((node.lineno, sub))
    return found


def layer_violations(root: Path) -> list[str]:
    """One line per import that breaks the layers, naming the file, the line and the import."""
    problems: list[str] = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        rel = path.relative_to(root.parent)
        own = _layer(module, root.name)
        if own is None:
            problems.append(f"{rel}: {module} belongs to no layer (add it to LAYERS)")
            continue
        for line, imported in _imports(path, module, root):
            top = imported.split(".")[0]
            if top == root.name:
                theirs = _layer(imported, root.name)
                if theirs is not None and theirs > own:
                    problems.append(
                        f"{rel}:{line}: imports {imported} (layer {theirs}) "
                        f"from layer {own}; a module may import only its own layer or lower"
                    )
            elif own < NO_DAGSTER_BELOW and (top == "dagster" or top.startswith("dagster_")):
                problems.append(
                    f"{rel}:{line}: imports {imported} in layer {own}; layers 1-4 never import dagster"
                )
    return problems


def test_every_import_follows_the_layers() -> None:
    assert layer_violations(PROJECT_DIR / "elt_repo") == []


def test_the_check_names_each_kind_of_offending_import(tmp_path: Path) -> None:
    root = tmp_path / "elt_repo"
    for folder in ("git", "defs", "discovery"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "settings.py").write_text("import os\n")
    (root / "git" / "source.py").write_text(
        "from elt_repo.settings import X\n"  # fine: layer 1
        "def f():\n"
        "    from elt_repo.defs.assets import COMMIT_TAG\n"  # upward, inside a function
        "    import dagster_graphql\n"
    )
    (root / "defs" / "assets.py").write_text("import dagster\nfrom ..cli import demo\n")
    (root / "discovery" / "walk.py").write_text("from elt_repo import defs\nfrom . import git\n")
    (root / "stray.py").write_text("")
    assert layer_violations(root) == [
        "elt_repo/defs/assets.py:2: imports elt_repo.cli (layer 8) from layer 6; "
        "a module may import only its own layer or lower",
        "elt_repo/discovery/walk.py:1: imports elt_repo.defs (layer 6) from layer 4; "
        "a module may import only its own layer or lower",
        "elt_repo/git/source.py:3: imports elt_repo.defs.assets (layer 6) from layer 3; "
        "a module may import only its own layer or lower",
        "elt_repo/git/source.py:4: imports dagster_graphql in layer 3; layers 1-4 never import dagster",
        "elt_repo/stray.py: elt_repo.stray belongs to no layer (add it to LAYERS)",
    ]
