"""Which tasks an analysis applies to: the one set of checks, shared by metrics, theory and tables.

Each check is an :class:`Applies`: the words ``probe metrics`` prints under "applies to" and the
predicate, which returns None when the analysis applies and otherwise the reason it does not, in
words. A metric states the fact once, with its check; :func:`require` turns a reason into a
:class:`ProbeError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Generic, TypeVar

from probe.analyses.irreps import MAX_ORDER, group_problem
from probe.errors import ProbeError
from probe.tasks import Task

if TYPE_CHECKING:
    from probe.config import TrainConfig

T = TypeVar("T")


@dataclass(frozen=True)
class Applies(Generic[T]):
    """``description``: what the analysis applies to, in words; ``check(thing)``: None when it applies,
    else why not. Checks of tasks take a :class:`~probe.tasks.Task`, checks of runs a
    :class:`~probe.config.TrainConfig`."""

    description: str
    check: Callable[[T], "str | None"]

    def __call__(self, thing: T) -> str | None:
        return self.check(thing)


def applies_to(description: str) -> Callable[[Callable[[T], "str | None"]], Applies[T]]:
    """Decorator: a predicate, with the words that describe what it admits."""

    def wrap(check: Callable[[T], "str | None"]) -> Applies[T]:
        return Applies(description, check)

    return wrap


@applies_to("any task")
def anything(task: Task) -> str | None:
    return None


@applies_to("operation tables")
def table_task(task: Task) -> str | None:
    return None if task.is_table else "it needs an operation table (pairs of symbols)"


@applies_to("abelian operation tables")
def abelian(task: Task) -> str | None:
    if not task.is_table:
        return "it needs an operation table (pairs of symbols)"
    if not task.commutative:
        return "it assumes an abelian operation (sum aggregation, Liu Sec. 3)"
    return None


@applies_to("modular tasks")
def modular(task: Task) -> str | None:
    return None if task.modulus else "Fourier analysis needs a modular task (symbols are Z_p)"


@applies_to("modular addition")
def modular_add(task: Task) -> str | None:
    return None if task.name == "add" and task.modulus else "it is defined for modular addition"


@applies_to("modular addition, full p x p table")
def modular_add_grid(task: Task) -> str | None:
    if task.name != "add" or not task.modulus:
        return "it is defined for modular addition"
    if task.n_samples != task.modulus**2:
        return "it needs the full ordered p x p table (train with ordered=true)"
    return None


@applies_to(f"finite groups of order <= {MAX_ORDER} (group, perm, add)")
def group_task(task: Task) -> str | None:
    """Tasks whose operation table is a group's Cayley table, small enough for exact irreducible
    representations (:mod:`probe.analyses.irreps`): the group tables, S_n, addition mod p."""
    if not task.is_table:
        return "it needs the Cayley table of a finite group"
    return group_problem(task.table)


@applies_to(f"finite groups of order <= {MAX_ORDER}, every ordered pair (a, b)")
def group_task_grid(task: Task) -> str | None:
    """:func:`group_task` with every ordered pair a sample: logits as functions of (a, b, c)."""
    reason = group_task(task)
    if reason:
        return reason
    if task.n_samples != task.n_symbols ** 2:
        return "it needs the logits of every ordered pair (a, b) (train with ordered=true)"
    return None


@applies_to("classification runs")
def classification(cfg: "TrainConfig") -> str | None:
    """Runs trained with cross-entropy on class logits."""
    if cfg.model.objective != "cross_entropy":
        return f"it needs class logits (cross_entropy); this run trains with {cfg.model.objective}"
    return None


@applies_to("runs whose logits read the last position")
def last_position_readout(cfg: "TrainConfig") -> str | None:
    """Patching the neurons at the last position changes the whole answer only when the logits read
    that position alone (not a transformer with ``model.readout: concat``)."""
    if getattr(cfg.model, "readout", "last") != "last":
        return ("it patches the neurons at the last position, and this run's logits read every position "
                "(model.readout concat)")
    return None


def describe(task_check: Applies[Task], run_check: "Applies[TrainConfig] | None" = None) -> str:
    """What an analysis applies to, in words: its checks' descriptions (``any task`` when it has none)."""
    parts = [] if task_check is anything and run_check is not None else [task_check.description]
    if run_check is not None:
        parts.append(run_check.description)
    return ", ".join(parts)


def require(check: Applies[Task], task: Task, what: str) -> None:
    """Raise unless ``check`` passes: ``"<what> does not apply to task <task>: <reason>"``."""
    reason = check(task)
    if reason:
        raise ProbeError(f"{what} does not apply to task {task.describe()}: {reason}")
