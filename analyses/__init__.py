"""probe's analysis package (installed as ``probe.analyses``): metrics over a checkpoint series.

``analyses.compute(run, "rqi", delta=0.01)`` -> pandas DataFrame (one row per checkpoint step).
``analyses.metrics()`` lists the registered metrics. The array-level functions in
:mod:`probe.analyses.parallelograms`, :mod:`probe.analyses.effective`, :mod:`probe.analyses.fourier`
and :mod:`probe.analyses.representations` work without any run on disk. Attributes load lazily, so
the command line starts fast.

Layers, bottom up: pure maths (parallelograms, fourier, effective, representations) -> sources,
context, cache, shared forward passes -> registry and metric wrappers (``metrics/``) -> runner ->
figures, export, theory. The command line (:mod:`probe.cli`) sits on top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from probe.analyses.events import EventRule, find_events
    from probe.analyses.registry import Metric, Param, get_metric
    from probe.analyses.runner import compute
    from probe.analyses.sources import ArraySource
    from probe.run import select_steps

_LAZY = {"compute": "probe.analyses.runner", "find_events": "probe.analyses.events", "EventRule": "probe.analyses.events", "ArraySource": "probe.analyses.sources", "select_steps": "probe.run",
         "Metric": "probe.analyses.registry", "Param": "probe.analyses.registry",
         "get_metric": "probe.analyses.registry"}


def metrics() -> list["Metric"]:
    """Every registered metric, sorted by name."""
    from probe.analyses.registry import all_metrics

    return all_metrics()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'probe.analyses' has no attribute {name!r}")


__all__ = ["ArraySource", "EventRule", "Metric", "Param", "compute", "find_events", "get_metric", "metrics",
           "select_steps"]
