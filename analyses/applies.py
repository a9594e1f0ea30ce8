"""Which tasks an analysis applies to: the one set of checks, shared by metrics, theory and tables.

Each predicate returns None when the analysis applies to ``task`` and otherwise the reason it does
not, in words; :func:`require` turns a reason into a :class:`ProbeError`.
"""

from __future__ import annotations

from typing import Callable

from probe.errors import ProbeError
from probe.tasks import Task

Applies = Callable[[Task], "str | None"]


def anything(task: Task) -> str | None:
    return None


def table_task(task: Task) -> str | None:
    return None if task.is_table else "it needs an operation table (pairs of symbols)"


def abelian(task: Task) -> str | None:
    if not task.is_table:
        return "it needs an operation table (pairs of symbols)"
    if not task.commutative:
        return "it assumes an abelian operation (sum aggregation, Liu Sec. 3)"
    return None


def modular(task: Task) -> str | None:
    return None if task.modulus else "Fourier analysis needs a modular task (symbols are Z_p)"


def modular_add(task: Task) -> str | None:
    return None if task.name == "add" and task.modulus else "it is defined for modular addition"


def modular_add_grid(task: Task) -> str | None:
    if task.name != "add" or not task.modulus:
        return "it is defined for modular addition"
    if task.n_samples != task.modulus**2:
        return "it needs the full ordered p x p table (train with ordered=true)"
    return None


def require(check: Applies, task: Task, what: str) -> None:
    """Raise unless ``check`` passes: ``"<what> does not apply to task <task>: <reason>"``."""
    reason = check(task)
    if reason:
        raise ProbeError(f"{what} does not apply to task {task.describe()}: {reason}")
