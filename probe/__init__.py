"""probe: grokking research toolkit.

``probe.load_run(RUN_DIR)`` opens a run written by probe's trainer, ``probe.load_sweep(SWEEP_DIR)`` a
sweep of runs; ``probe.ProbeError`` is the one
user-error type. Heavy dependencies (torch, TransformerLens) are imported only when needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from probe.errors import ProbeError

__version__ = "0.1.0"
__all__ = ["ProbeError", "Run", "Checkpoint", "load_run", "load_sweep", "Sweep", "make_task", "make_split",
           "__version__"]

if TYPE_CHECKING:
    from probe.run import Checkpoint, Run, load_run
    from probe.sweep import Sweep, load_sweep
    from probe.tasks import make_split, make_task


def __getattr__(name: str) -> Any:
    if name in ("Run", "Checkpoint", "load_run"):
        from probe import run

        return getattr(run, name)
    if name in ("Sweep", "load_sweep"):
        from probe import sweep

        return getattr(sweep, name)
    if name in ("analyses", "train"):
        import importlib

        return importlib.import_module(f"probe.{name}")
    if name in ("make_task", "make_split"):
        from probe import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module 'probe' has no attribute {name!r}")
