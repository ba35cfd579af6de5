"""Package layering: no module imports a layer above its own (function-level imports included).

Layers, bottom up: ``errors``/``vocabulary``/``structures``/``_torch_io`` -> ``data`` and ``metrics`` (they
know no models) -> ``models`` (knows no knowledge, inference, interop, callbacks or cli) -> ``knowledge``,
``inference``, ``interop`` -> ``callbacks`` -> ``sweep``/``cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "hoiclip_lightning"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE
BASE = {"errors", "vocabulary", "structures", "_torch_io", "resources"}
ALLOWED = {
    "errors": set(),
    "vocabulary": {"errors"},
    "structures": {"errors", "vocabulary"},
    "_torch_io": {"errors"},
    "resources": set(),
    "data": BASE,
    "metrics": BASE,
    "models": BASE | {"data", "metrics"},
    "knowledge": BASE | {"data", "metrics", "models", "__init__"},
    "inference": BASE | {"data", "metrics", "models"},
    "interop": BASE | {"data", "metrics", "models"},
    "callbacks": BASE | {"data", "metrics", "models", "inference"},
}


def imported_layers(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, layer)`` of every import of this package in ``source`` (module- and function-level)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                targets = [".".join(parts + ([node.module] if node.module else []))]
            else:
                targets = [node.module or ""]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            if target == PACKAGE:
                found.append((node.lineno, "__init__"))
            elif target.startswith(PACKAGE + "."):
                found.append((node.lineno, target.split(".")[1]))
    return found


def layer_violations(root: Path = SRC) -> list[str]:
    """Every import that runs up the layers, as ``file:line: layer -> layer``."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        is_package = rel.name == "__init__"
        module = ".".join(rel.parts[:-1] if is_package else rel.parts)
        own = module.split(".")[1] if "." in module else "__init__"
        allowed = ALLOWED.get(own)
        if allowed is None:  # the top: cli, sweep and the package's __init__
            continue
        for line, target in imported_layers(path.read_text(), module, is_package):
            if target != own and target not in allowed:
                bad.append(f"{path.relative_to(root.parent)}:{line}: {own} -> {target}")
    return bad


def test_no_import_runs_up_the_layers():
    assert layer_violations() == []


def test_the_check_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "models").mkdir(parents=True)
    (pkg / "data").mkdir()
    (pkg / "models" / "ok.py").write_text("from ..metrics import report\nfrom ..errors import X\n")
    (pkg / "models" / "bad.py").write_text("def f():\n    from ..knowledge import prompts\n")
    (pkg / "data" / "bad.py").write_text("import hoiclip_lightning.models.hoiclip\n")
    assert layer_violations(pkg) == [
        f"{PACKAGE}/data/bad.py:1: data -> models",
        f"{PACKAGE}/models/bad.py:2: models -> knowledge",
    ]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_every_layer_exists(layer):
    assert (SRC / layer).is_dir() or (SRC / f"{layer}.py").is_file()
