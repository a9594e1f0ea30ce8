"""probe: grokking research toolkit.

``probe.load_run(RUN_DIR)`` opens a run written by probe's trainer, ``probe.load_sweep(SWEEP_DIR)`` a
sweep of runs; ``probe.ProbeError`` is the one user-error type. Heavy dependencies (torch,
TransformerLens) are imported only when needed.

This module is the package face, a top layer beside the command line (docs/design.md, Layers): it
reaches every layer lazily (``probe.train``, ``probe.analyses``), so no module of the core, the
trainer or the analyses imports it; they import from the module that defines a name
(``probe.run.load_run``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from probe.errors import ProbeError

__version__ = "0.1.0"
__all__ = ["ProbeError", "Run", "Checkpoint", "CheckpointSource", "load_run", "load_sweep", "Sweep", "make_task",
           "make_split", "__version__"]

if TYPE_CHECKING:
    from probe.run import Checkpoint, CheckpointSource, Run, load_run
    from probe.sweep import Sweep, load_sweep
    from probe.tasks import make_split, make_task

#: name -> the module that defines it (the face's names), and the layers above the core
_FACE = {"Run": "probe.run", "Checkpoint": "probe.run", "CheckpointSource": "probe.run", "load_run": "probe.run",
         "Sweep": "probe.sweep", "load_sweep": "probe.sweep", "make_task": "probe.tasks", "make_split": "probe.tasks"}
_LAYERS = {"analyses": "probe.analyses", "train": "probe.train"}


def __getattr__(name: str) -> Any:
    if name in _FACE:
        return getattr(importlib.import_module(_FACE[name]), name)
    if name in _LAYERS:
        return importlib.import_module(_LAYERS[name])
    raise AttributeError(f"module 'probe' has no attribute {name!r}")
