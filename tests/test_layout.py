"""The package layout the README describes: stages as packages, each importing only the stages
below it (lazy imports inside functions included), and a short top level."""

from __future__ import annotations

import ast
from pathlib import Path

import binwise

PACKAGE = Path(binwise.__file__).parent
# lowest first; a module may import its own stage and any stage before it
LAYERS = ["top", "taxonomy", "data", "model", "weights", "inference", "export", "evaluation", "training",
          "serving", "cli"]
TOP_LEVEL_MOST = 10  # modules beside the packages, __init__ and __main__ not counted


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else "top"


def module_name(path: Path, root: Path = PACKAGE.parent) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def imports(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """The binwise modules ``path`` (under ``root``) imports, relative imports resolved."""
    name, is_package = module_name(path, root)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "binwise":  # ``from binwise import x``: x is a stage or a top-level module
                found += [f"binwise.{a.name}" for a in node.names]
            elif target.startswith("binwise."):
                found.append(target)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("binwise.")]
    return found


def test_no_stage_imports_a_later_one():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name, _ = module_name(path)
        if name == "binwise.__main__":
            continue  # ``python -m binwise`` runs the CLI
        here = LAYERS.index(stage(name))
        upward += [f"{name} -> {target}" for target in imports(path)
                   if stage(target) in LAYERS and LAYERS.index(stage(target)) > here]
    assert not upward, "imports of a later stage:\n" + "\n".join(upward)


def test_every_package_is_a_known_stage_and_the_top_level_is_short():
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert packages == sorted(LAYERS[1:])
    top = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= TOP_LEVEL_MOST, top


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    source = tmp_path / "binwise" / "model" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text("from . import status\nfrom ..errors import BinwiseError\n\n\n"
                      "def f():\n    from ..serving.app import create_app\n")
    found = imports(source, tmp_path)
    assert found == ["binwise.model", "binwise.errors", "binwise.serving.app"]
    assert [stage(t) for t in found] == ["model", "top", "serving"]


def test_each_command_lives_in_the_module_named_after_it():
    import argparse
    import importlib

    from binwise.cli import COMMAND_MODULES

    for module in COMMAND_MODULES:
        subparsers = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"binwise.cli.{module}").register(subparsers)
        assert list(subparsers.choices) == [module.replace("_", "-")]


def test_no_module_imports_itself_back():
    """No import circles between modules, lazy imports inside functions included."""
    modules = {module_name(p)[0]: p for p in PACKAGE.rglob("*.py")}

    def resolved(target: str) -> str | None:
        parts = target.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        return ".".join(parts) or None

    graph = {name: {m for m in map(resolved, imports(path)) if m and m != name} for name, path in modules.items()}
    graph["binwise"] = set()  # the package's lazy public names (Classifier, load_model) are its API
    circles = set()
    for start in graph:  # a depth-first walk from each module back to itself
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    circles.add(" -> ".join(sorted(path)))
                elif nxt not in path and len(path) < 8:
                    stack.append((nxt, path + [nxt]))
    assert not circles, "import circles:\n" + "\n".join(sorted(circles))
