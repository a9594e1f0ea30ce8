"""probe's analysis package: metrics over a checkpoint series.

``analyses.compute(run, "rqi", delta=0.01)`` -> pandas DataFrame (one row per checkpoint step).
``analyses.metrics()`` lists the registered metrics. The array-level functions in
:mod:`analyses.parallelograms` and :mod:`analyses.effective` work without any run on disk.
"""

from __future__ import annotations

from analyses.registry import Metric, Param, all_metrics, get_metric
from analyses.runner import ArraySource, compute, select_steps


def metrics() -> list[Metric]:
    """Every registered metric, sorted by name."""
    return all_metrics()


__all__ = ["ArraySource", "Metric", "Param", "compute", "get_metric", "metrics", "select_steps"]
