"""The metric registry: every metric declares its name, what it needs and its parameters.

A metric is a pure function of one checkpoint (``scope="checkpoint"``) or of the split alone
(``scope="split"``: computed once and reported on every row of the series). The loop over time,
caching and progress bars live once, in :mod:`analyses.runner`; CLI choices come from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from probe.errors import ProbeError

if TYPE_CHECKING:
    from analyses.runner import CheckpointData, Context
    from probe.tasks import Task

Need = Literal["embeddings", "forward", "split"]
Values = dict[str, float]


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
        except (TypeError, ValueError):
            raise ProbeError(f"--{self.flag}: {value!r} is not a valid {self.type.__name__} (metric {metric})") from None
        if self.choices is not None and out not in self.choices:
            raise ProbeError(f"--{self.flag}: {out!r} is not one of {', '.join(map(str, self.choices))} "
                             f"(metric {metric})")
        if self.check is not None:
            msg = self.check(out)
            if msg:
                raise ProbeError(f"--{self.flag}: {msg}, got {value!r} (metric {metric})")
        return out

    @property
    def flag(self) -> str:
        return self.name.replace("_", "-")


@dataclass(frozen=True)
class Metric:
    """One registered metric. ``fn(data, ctx, **params) -> {column: value}``."""

    name: str
    description: str
    needs: frozenset[str]
    tasks: str  # which tasks it applies to, in words
    fn: Callable[..., Values]
    scope: Literal["checkpoint", "split"] = "checkpoint"
    direction: Literal["higher", "lower", "none"] = "none"
    params: tuple[Param, ...] = ()
    applies: Callable[["Task"], str | None] = field(default=lambda task: None)
    #: extra needs that depend on the parameters (e.g. ``rqi --hook`` needs a forward pass)
    needs_for: Callable[[dict[str, Any]], frozenset[str]] | None = None

    def resolve(self, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults filled in, values validated: the parameters recorded with the result."""
        out = {}
        for p in self.params:
            out[p.name] = p.coerce(given[p.name], self.name) if given.get(p.name) is not None else p.default
        return out

    def requirements(self, params: dict[str, Any]) -> frozenset[str]:
        extra = self.needs_for(params) if self.needs_for is not None else frozenset()
        return self.needs | extra

    def check_task(self, task: "Task") -> None:
        reason = self.applies(task)
        if reason:
            raise ProbeError(f"metric {self.name} does not apply to task {task.describe()}: {reason}")


REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    if metric.name in REGISTRY:
        raise ValueError(f"metric {metric.name!r} is registered twice")
    REGISTRY[metric.name] = metric
    return metric


def metric(name: str, description: str, needs: tuple[str, ...], tasks: str, **kw: Any) -> Callable[[Callable[..., Values]], Callable[..., Values]]:
    """Decorator form of :func:`register`."""

    def wrap(fn: Callable[..., Values]) -> Callable[..., Values]:
        register(Metric(name=name, description=description, needs=frozenset(needs), tasks=tasks, fn=fn, **kw))
        return fn

    return wrap


def get_metric(name: str) -> Metric:
    _load()
    if name not in REGISTRY:
        raise ProbeError(f"unknown metric {name!r} (valid: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


def all_metrics() -> list[Metric]:
    _load()
    return [REGISTRY[k] for k in sorted(REGISTRY)]


def all_params() -> dict[str, Param]:
    """Every parameter name used by any metric (one CLI option each)."""
    out: dict[str, Param] = {}
    for m in all_metrics():
        for p in m.params:
            out.setdefault(p.name, p)
    return out


def _load() -> None:
    import analyses.parallelogram_metrics  # noqa: F401  (registers on import)
    import analyses.representation_metrics  # noqa: F401
