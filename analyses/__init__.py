"""probe's analysis package: metrics over a checkpoint series.

``analyses.compute(run, "rqi", delta=0.01)`` -> pandas DataFrame (one row per checkpoint step).
``analyses.metrics()`` lists the registered metrics. The array-level functions in
:mod:`analyses.parallelograms`, :mod:`analyses.effective` and :mod:`analyses.fourier` work without
any run on disk. Attributes load lazily, so the command line starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analyses.registry import Metric, Param, get_metric
    from analyses.runner import ArraySource, compute, select_steps

_LAZY = {"compute": "analyses.runner", "ArraySource": "analyses.runner", "select_steps": "analyses.runner",
         "Metric": "analyses.registry", "Param": "analyses.registry", "get_metric": "analyses.registry"}


def metrics() -> list["Metric"]:
    """Every registered metric, sorted by name."""
    from analyses.registry import all_metrics

    return all_metrics()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'analyses' has no attribute {name!r}")


__all__ = ["ArraySource", "Metric", "Param", "compute", "get_metric", "metrics", "select_steps"]
