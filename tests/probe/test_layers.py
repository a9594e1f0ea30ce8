"""The layering of docs/design.md, checked on the source: each layer imports only those below it.

Layers, bottom up: the core (``probe/``) < the trainer (``train/``, installed as ``probe.train``) and
the analyses (``analyses/``, installed as ``probe.analyses``) < the top: the command line
(``probe/cli.py``) and the package face (``probe/__init__.py``: ``probe.load_run`` and friends, which
reach every layer lazily). Imports count however they are written: ``import``/``from`` statements
anywhere in a file, and ``importlib.import_module``/``__import__`` calls (a literal name; an f-string
by its literal head; any other argument by every module name the file spells, e.g. a lazy
``__getattr__`` table). Nothing below the top may use the face: lower layers import what they use
from the module that defines it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: the top layer: files allowed to import every layer (and the face's names)
TOP = {"probe/cli.py": "the command line", "probe/__init__.py": "the package face"}

LAYERS = [
    ("probe", ("probe.train", "probe.analyses", "probe.reproduce", "probe.cli", "train", "analyses", "reproduce")),
    ("train", ("probe.analyses", "probe.reproduce", "probe.cli", "analyses", "reproduce")),
    ("analyses", ("probe.train", "probe.reproduce", "probe.cli", "train", "reproduce")),
    ("reproduce", ("probe.cli",)),
]

#: dynamic imports whose target no string in the file names, and the test that bounds them
DECLARED_DYNAMIC = {
    "probe/models/__init__.py": "test_model_builders_live_in_the_core",
    "probe/plugins.py": "test_plugins_import_only_the_modules_the_variable_names",
}

_MODULE = re.compile(r"^(probe|train|analyses|reproduce)(\.[A-Za-z_]\w*)*$")
_IMPORTERS = {"import_module", "__import__"}


def _importer(call: ast.Call, aliases: set[str]) -> bool:
    f = call.func
    return ((isinstance(f, ast.Name) and f.id in _IMPORTERS | aliases)
            or (isinstance(f, ast.Attribute) and f.attr in _IMPORTERS))


def scan(text: str) -> tuple[set[str], list[int]]:
    """``(modules, unresolved lines)`` a source text imports. A name ending in ``*`` stands for every
    module its head could complete to (``probe.*`` from ``import_module(f"probe.{name}")``)."""
    tree = ast.parse(text)
    out: set[str] = set()
    spelled = {n.value for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str) and _MODULE.match(n.value)}
    aliases = {a.asname for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "importlib"
               for a in n.names if a.name == "import_module" and a.asname}
    unresolved: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.Call) and _importer(node, aliases) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                out.add(arg.value)
            elif isinstance(arg, ast.JoinedStr):
                head = arg.values[0].value if arg.values and isinstance(arg.values[0], ast.Constant) else ""
                out.add(f"{head}*")
            elif spelled:
                out.update(spelled)
            else:
                unresolved.append(node.lineno)
    return out, unresolved


def reaches(module: str, forbidden: tuple[str, ...]) -> bool:
    """Whether ``module`` (or, for ``head*``, some completion of it) is in a forbidden layer."""
    if module.endswith("*"):
        head = module[:-1]
        return any(f.startswith(head) or head.startswith(f + ".") or head == f for f in forbidden)
    return any(module == f or module.startswith(f + ".") for f in forbidden)


def _probe_submodules() -> set[str]:
    core = ROOT / "probe"
    return ({p.stem for p in core.glob("*.py")} | {d.name for d in core.iterdir() if (d / "__init__.py").exists()}
            | {"train", "analyses", "reproduce", "groups"})


def face_uses(text: str, submodules: set[str]) -> list[str]:
    """Uses of the package face ``probe`` itself: ``import probe``, ``from probe import NAME`` or
    ``probe.NAME`` for a NAME that is not a submodule."""
    out = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out += [f"import {a.name}" for a in node.names if a.name == "probe" and a.asname is None]
            out += [f"import probe as {a.asname}" for a in node.names if a.name == "probe" and a.asname]
        elif isinstance(node, ast.ImportFrom) and node.module == "probe" and node.level == 0:
            out += [f"from probe import {a.name}" for a in node.names if a.name not in submodules]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "probe"
              and node.attr not in submodules):
            out.append(f"probe.{node.attr}")
    return out


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("folder,forbidden", LAYERS)
def test_layers_import_only_downwards(folder, forbidden):
    for path in _files(folder):
        if _rel(path) in TOP:
            continue
        mods, unresolved = scan(path.read_text())
        bad = sorted(m for m in mods if reaches(m, forbidden))
        assert not bad, f"{_rel(path)} imports {bad}"
        if unresolved:
            assert _rel(path) in DECLARED_DYNAMIC, (f"{_rel(path)} imports a module named nowhere in the file "
                                                    f"(lines {unresolved}); name it, or declare and bound it here")


@pytest.mark.parametrize("folder", [f for f, _ in LAYERS])
def test_nothing_below_the_top_uses_the_package_face(folder):
    submodules = _probe_submodules()
    for path in _files(folder):
        if _rel(path) in TOP:
            continue
        uses = face_uses(path.read_text(), submodules)
        assert not uses, f"{_rel(path)} uses the package face: {uses} (import from the defining module)"


def test_model_builders_live_in_the_core():
    """``probe.models.build_model`` imports the builder each model kind declares: all in the core."""
    from probe.config import MODELS

    for name, cls in MODELS.items():
        module = cls.builder.partition(":")[0]
        assert module.startswith("probe.models."), f"model kind {name} is built by {module}"


def test_plugins_import_only_the_modules_the_variable_names(monkeypatch):
    """``probe.plugins`` imports what ``PROBE_PLUGINS`` names, nothing else (never a layer of probe's)."""
    import importlib

    from probe import plugins

    seen: list[str] = []
    monkeypatch.setattr(importlib, "import_module", lambda name: seen.append(name))
    monkeypatch.setenv(plugins.ENV, "")
    assert plugins.load_plugins() == [] and seen == []
    monkeypatch.setenv(plugins.ENV, " my_ext , other.ext,my_ext")
    assert plugins.load_plugins() == ["my_ext", "other.ext"] and seen == ["my_ext", "other.ext"]


@pytest.mark.parametrize("source", [
    'import importlib\ndef f():\n    return importlib.import_module("probe.analyses.runner")\n',
    'from importlib import import_module\ndef f(name):\n    return import_module(f"probe.{name}")\n',
    'def f():\n    return __import__("probe.train.loop")\n',
    'import importlib\n_LAZY = {"compute": "probe.analyses.runner"}\n'
    'def __getattr__(name):\n    return getattr(importlib.import_module(_LAZY[name]), name)\n',
    'def f():\n    from probe import analyses\n    return analyses\n',
    'from importlib import import_module as load\ndef f():\n    return load("probe.train")\n',
])
def test_a_lower_layer_reaching_up_is_caught(source):
    mods, _ = scan(source)
    assert any(reaches(m, dict(LAYERS)["probe"]) for m in mods), mods


def test_unnamed_dynamic_imports_are_reported():
    mods, unresolved = scan("import importlib\ndef f(cfg):\n    return importlib.import_module(cfg.module)\n")
    assert unresolved == [3] and not mods - {"importlib"}


def test_face_uses_are_caught():
    subs = {"run", "errors", "train", "analyses"}
    assert face_uses("import probe\nprobe.load_run('x')\n", subs) == ["import probe", "probe.load_run"]
    assert face_uses("from probe import load_run, run\n", subs) == ["from probe import load_run"]
    assert face_uses("import probe.run\nprobe.run.load_run('x')\n", subs) == []


def test_metric_registry_imports_no_metric():
    """Importing the registry loads no metric: the catalogue's modules are imported when first asked for."""
    tree = ast.parse((ROOT / "analyses" / "registry.py").read_text())
    static = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in static for a in n.names] + [n.module or "" for n in static if isinstance(n, ast.ImportFrom)]
    assert not [m for m in names if "families" in m or "runner" in m]


def test_analyses_never_sniff_model_structure():
    for path in _files("analyses"):
        text = path.read_text()
        assert 'hasattr(model, "blocks")' not in text and 'kind == "digits"' not in text, path
