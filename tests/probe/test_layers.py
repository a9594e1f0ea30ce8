"""The layering of docs/design.md, checked on the source: each layer imports only those below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder,forbidden", [
    ("probe", ("probe.train", "probe.analyses")),
    ("train", ("probe.analyses", "probe.cli")),
    ("analyses", ("probe.train", "probe.cli")),
])
def test_layers_import_only_downwards(folder, forbidden):
    for path in _files(folder):
        if path.name == "cli.py" and folder == "probe":
            continue  # the command line is the top layer
        bad = [m for m in _imports(path) if m.startswith(forbidden) or m.split(".")[0] in ("train", "analyses")]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_metric_registry_imports_no_metric():
    mods = _imports(ROOT / "analyses" / "registry.py")
    assert not [m for m in mods if "families" in m or "runner" in m]


def test_analyses_never_sniff_model_structure():
    for path in _files("analyses"):
        text = path.read_text()
        assert 'hasattr(model, "blocks")' not in text and 'kind == "digits"' not in text, path
