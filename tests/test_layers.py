"""The package's layers only point down: no module imports one of a higher layer (read from the source, AST)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hf_vjepa_area"

# Low to high; a module may import its own layer and those below. The longest matching prefix decides.
LAYERS = [
    ["modeling"],  # self-contained: ships as remote code
    ["_version", "_files", "_build", "checkpoint_keys", "locate", "registration"],
    ["data", "hub"],
    ["timm_models", "conversion.load", "conversion.__init__"],
    ["sources"],  # what a model source is, for every entry point
    ["conversion.convert", "conversion.cli", "conversion.__main__", "probing", "ssl", "runs", "anneal", "ac"],
    ["__init__"],  # the package root: imports what it exports; nothing imports it
]


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def layer_of(name: str) -> int:
    """`name` relative to the package ("conversion.load", "data.masks", "__init__")."""
    matches = [(len(prefix), i) for i, layer in enumerate(LAYERS) for prefix in layer
               if name == prefix or name.startswith(prefix + ".")]  # fmt: skip
    assert matches, f"{name} is in no layer: add it to LAYERS in {Path(__file__).name}"
    return max(matches)[1]


def imported(path: Path) -> set[str]:
    """Package modules `path` imports (module level or inside functions), relative to the package."""
    package = module_name(path).split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] + ([node.module] if node.module else [])
            elif (node.module or "").split(".")[0] == PACKAGE.name:
                base = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # `from . import x`: x may be a module
                candidate = PACKAGE.joinpath(*base, alias.name)
                is_module = candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file()
                found.add(".".join([*base, alias.name] if is_module else base) or "__init__")
        elif isinstance(node, ast.Import):
            found |= {".".join(a.name.split(".")[1:]) or "__init__" for a in node.names if a.name.split(".")[0] == PACKAGE.name}
    return {name if (PACKAGE / name.replace(".", "/")).with_suffix(".py").is_file() or name == "__init__"
            else name + ".__init__" for name in found}  # fmt: skip


def test_imports_only_point_down():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        for target in imported(path):
            if layer_of(target) > layer_of(name):
                upward.append(f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})")
    assert not upward, "\n".join(upward)


def test_the_reader_sees_the_imports_and_their_layers():
    """What the rule above runs on: a lazy import inside a function counts, `from . import x` names module x."""
    assert layer_of("conversion.load") < layer_of("sources") < layer_of("conversion.convert")
    assert layer_of("conversion.__init__") < layer_of("__init__") and layer_of("data.masks") == layer_of("data")
    assert imported(PACKAGE / "conversion" / "convert.py") >= {"sources", "_version", "conversion.load"}
    assert imported(PACKAGE / "sources.py") >= {"timm_models", "conversion.load", "locate"}
    assert imported(PACKAGE / "__init__.py") >= {"sources", "timm_models", "_version"}
