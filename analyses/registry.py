"""The metric registry: every metric declares its name, what it needs and its parameters.

A metric is a pure function of one checkpoint (``scope="checkpoint"``) or of the split alone
(``scope="split"``: computed once and reported on every row of the series). The loop over time,
caching and progress bars live once, in :mod:`probe.analyses.runner`; CLI choices come from here.

This module imports no metric. :data:`CATALOGUE` lists the modules that register metrics; they are
imported the first time the registry is asked for a metric. A new metric is one decorated function
in one of those modules (a new family: one more line in the catalogue).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

from probe.analyses.applies import Applies, anything, describe
from probe.errors import ProbeError, valid
from probe.registry import Registry

if TYPE_CHECKING:
    from probe.config import TrainConfig
    from probe.tasks import Task

Values = dict[str, Any]

#: every module that registers metrics, in the order ``probe metrics`` lists families
CATALOGUE: tuple[str, ...] = (
    "probe.analyses.families.parallelograms",
    "probe.analyses.families.fourier",
    "probe.analyses.families.irreps",
    "probe.analyses.families.pca",
    "probe.analyses.families.clock_pizza",
    "probe.analyses.families.coordinates",
    "probe.analyses.families.dynamics",
)


def positive(x: float) -> str | None:
    """Parameter check: a finite number > 0."""
    return None if x == x and 0 < x < float("inf") else "must be a positive number"


def positive_int(x: int) -> str | None:
    """Parameter check: an integer >= 1."""
    return None if x >= 1 else "must be >= 1"


def fraction(x: float) -> str | None:
    """Parameter check: a number in (0, 1)."""
    return None if 0 < x < 1 else "must be in (0, 1)"


@dataclass(frozen=True)
class Param:
    """A metric parameter; ``--NAME`` on the command line (underscores become dashes)."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None  # returns an error message, or None

    def coerce(self, value: Any, metric: str) -> Any:
        if value is None:
            return None
        try:
            out = self.type(value)
        except (TypeError, ValueError, OverflowError):
            raise ProbeError(f"{value!r} is not a valid {self.type.__name__} (metric {metric})", param=self.name) from None
        if self.choices is not None and out not in self.choices:
            raise ProbeError(f"unknown value {out!r} for metric {metric}{valid(self.choices)}",
                             param=self.name)
        if self.check is not None:
            msg = self.check(out)
            if msg:
                raise ProbeError(f"{msg}, got {value!r} (metric {metric})", param=self.name)
        return out

    @property
    def flag(self) -> str:
        return self.name.replace("_", "-")


@dataclass(frozen=True)
class Metric:
    """One registered metric. ``fn(checkpoint, ctx, **params) -> {column: value}``.

    ``applies`` (a task check) and ``applies_config`` (a check of how the run was trained, e.g.
    margins need class logits) are :class:`~probe.analyses.applies.Applies`: what ``probe metrics``
    prints under "applies to" (:attr:`tasks`) is their description, so the words and the check are
    one fact.

    ``batch_fn(checkpoints, ctx, **params) -> [values per checkpoint]`` is an optional faster form
    over a chunk of checkpoints; the runner uses it when ``batch_when(params)`` holds, and its
    results must equal ``fn``'s.
    """

    name: str
    description: str
    needs: frozenset[str]
    fn: Callable[..., Values]
    scope: Literal["checkpoint", "split"] = "checkpoint"
    direction: Literal["higher", "lower", "none"] = "none"
    params: tuple[Param, ...] = ()
    applies: "Applies[Task]" = anything
    #: extra needs that depend on the parameters (e.g. ``rqi --hook`` needs a forward pass)
    needs_for: Callable[[dict[str, Any]], frozenset[str]] | None = None
    batch_fn: Callable[..., list[Values]] | None = None
    batch_when: Callable[[dict[str, Any]], bool] | None = None
    #: applicability that depends on how the run was trained (e.g. margins need class logits)
    applies_config: "Applies[TrainConfig] | None" = None

    @property
    def tasks(self) -> str:
        """What the metric applies to, in words: the descriptions of its checks."""
        return describe(self.applies, self.applies_config)

    def resolve(self, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults filled in, values validated: the parameters recorded with the result."""
        return {p.name: p.coerce(given[p.name], self.name) if given.get(p.name) is not None else p.default
                for p in self.params}

    def requirements(self, params: dict[str, Any]) -> frozenset[str]:
        extra = self.needs_for(params) if self.needs_for is not None else frozenset()
        return self.needs | extra

    def batch_fn_applies(self, params: dict[str, Any]) -> bool:
        return self.batch_fn is not None and (self.batch_when is None or self.batch_when(params))

    def check_task(self, task: "Task", config: "TrainConfig | None" = None) -> None:
        """The one "does this metric apply" check: raises naming the metric, task and reason."""
        reason = self.applies(task)
        if reason:
            raise ProbeError(f"metric {self.name} does not apply to task {task.describe()}: {reason}")
        if config is not None and self.applies_config is not None:
            reason = self.applies_config(config)
            if reason:
                raise ProbeError(f"metric {self.name} does not apply to this run: {reason}")


METRICS: Registry[Metric] = Registry("metric")
_loaded = False


def metric(name: str, description: str, needs: tuple[str, ...],
           **kw: Any) -> Callable[[Callable[..., Values]], Callable[..., Values]]:
    """Decorator: register ``fn`` as metric ``name`` (``applies=`` says which tasks it applies to;
    without it, any task)."""

    def wrap(fn: Callable[..., Values]) -> Callable[..., Values]:
        METRICS.add(name, Metric(name=name, description=description, needs=frozenset(needs), fn=fn, **kw))
        return fn

    return wrap


def load() -> Registry[Metric]:
    """Import the catalogue's modules once (each registers its metrics) and return the registry."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in CATALOGUE:
            importlib.import_module(module)
    return METRICS


def get_metric(name: str) -> Metric:
    reg = load()
    if name not in reg:
        raise ProbeError(f"unknown metric {name!r}{valid(sorted(reg.names()))}", param="metric")
    return reg.get(name)


def all_metrics() -> list[Metric]:
    reg = load()
    return [reg.get(k) for k in sorted(reg.names())]


def all_params() -> dict[str, Param]:
    """Every parameter name used by any metric (one CLI option each)."""
    out: dict[str, Param] = {}
    for m in all_metrics():
        for p in m.params:
            out.setdefault(p.name, p)
    return out
