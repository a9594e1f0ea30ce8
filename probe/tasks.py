"""Tasks: finite operation tables ``c = a ∘ b`` and the digits classification set, plus splits.

A :class:`Task` is a pure description of a dataset: every sample as (inputs, label), the symbols and,
for operation tables, the full table. It is rebuilt from its JSON spec (``Task.spec``), which the run
file stores, so a run never needs pickled data.

Operations follow Power et al. (2022), Table 1 / Sec. 2: modular ``+ - * /`` and polynomials mod a
prime ``p``; division is defined for ``b != 0`` only. ``nonmod-add`` is the non-modular addition of
Liu et al. (2022), Sec. 2 (outputs ``0..2p-2``), over unordered pairs ``i <= j`` by default.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from probe.errors import ProbeError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
GROUPS_DIR = DATA_DIR / "groups"


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % k for k in range(2, int(math.isqrt(n)) + 1))


# name -> (function of (a, b, p) on int arrays, needs b != 0, commutative, needs prime p)
_Binary = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def _div(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    inv = np.array([pow(int(x), p - 2, p) if x % p else 0 for x in range(p)], dtype=np.int64)
    return (a * inv[b]) % p


def _mix1(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    return np.where(b % 2 == 1, _div(a, b, p), (a - b) % p)


MODULAR_OPS: dict[str, tuple[_Binary, bool, bool, bool]] = {
    "add": (lambda a, b, p: (a + b) % p, False, True, False),
    "sub": (lambda a, b, p: (a - b) % p, False, False, False),
    "mul": (lambda a, b, p: (a * b) % p, False, True, False),
    "div": (_div, True, False, True),
    "x2+y2": (lambda a, b, p: (a * a + b * b) % p, False, True, False),
    "x2+xy+y2": (lambda a, b, p: (a * a + a * b + b * b) % p, False, True, False),
    "x2+xy+y2+x": (lambda a, b, p: (a * a + a * b + b * b + a) % p, False, False, False),
    "x3+xy": (lambda a, b, p: (a**3 + a * b) % p, False, False, False),
    "x3+xy2+y": (lambda a, b, p: (a**3 + a * b * b + b) % p, False, False, False),
    "mix1": (_mix1, True, False, True),
}
OTHER_TASKS = ("nonmod-add", "perm", "group", "digits")
TASK_NAMES: tuple[str, ...] = tuple(MODULAR_OPS) + OTHER_TASKS


@dataclass(frozen=True, eq=False)
class Task:
    """A dataset of (inputs, label) samples.

    ``inputs`` is ``[N, 2]`` symbol indices (operation tables) or ``[N, F]`` float features (digits);
    ``labels`` is ``[N]`` class indices in ``0..n_classes-1``.
    """

    spec: dict[str, Any]
    inputs: np.ndarray
    labels: np.ndarray
    n_symbols: int
    n_classes: int
    symbols: tuple[str, ...]
    commutative: bool
    modulus: int | None = None  # p for the cyclic tasks (Fourier analysis applies)
    table: np.ndarray | None = field(default=None, repr=False)  # [n, n] labels, -1 = undefined

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def n_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def is_table(self) -> bool:
        return self.table is not None

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.spec.items() if k != "name" and v is not None)
        return f"{self.name}({extra})" if extra else self.name


def _pairs(n: int, ordered: bool, b_nonzero: bool) -> np.ndarray:
    a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a, b = a.ravel(), b.ravel()
    keep = np.ones_like(a, dtype=bool)
    if not ordered:
        keep &= a <= b
    if b_nonzero:
        keep &= b != 0
    return np.stack([a[keep], b[keep]], axis=1).astype(np.int64)


def _table_task(spec: dict[str, Any], table: np.ndarray, symbols: tuple[str, ...], n_classes: int,
                commutative: bool, ordered: bool, modulus: int | None) -> Task:
    n = table.shape[0]
    pairs = _pairs(n, ordered or not commutative, b_nonzero=False)
    defined = table[pairs[:, 0], pairs[:, 1]] >= 0
    pairs = pairs[defined]
    labels = table[pairs[:, 0], pairs[:, 1]].astype(np.int64)
    return Task(spec=spec, inputs=pairs, labels=labels, n_symbols=n, n_classes=n_classes,
                symbols=symbols, commutative=commutative, modulus=modulus, table=table)


def _permutation_table(n: int) -> tuple[np.ndarray, tuple[str, ...]]:
    perms = list(itertools.permutations(range(n)))
    index = {p: i for i, p in enumerate(perms)}
    table = np.empty((len(perms), len(perms)), dtype=np.int64)
    for i, a in enumerate(perms):
        for j, b in enumerate(perms):
            table[i, j] = index[tuple(a[b[x]] for x in range(n))]  # (a ∘ b)(x) = a(b(x))
    return table, tuple("".join(map(str, p)) for p in perms)


def group_table_path(name: str) -> Path:
    """Resolve a group table name (``S3``) or a path to a CSV file."""
    path = Path(name)
    if path.suffix == ".csv" and path.exists():
        return path
    candidate = GROUPS_DIR / f"{name}.csv"
    if candidate.exists():
        return candidate
    shipped = sorted(p.stem for p in GROUPS_DIR.glob("*.csv")) if GROUPS_DIR.exists() else []
    raise ProbeError(f"group table {name!r} not found (shipped: {', '.join(shipped) or 'none'}; "
                     "or give a path to a .csv file)")


def read_group_csv(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """Read a Cayley table: header row ``∘,e1,e2,...``, then one row per left operand.

    Raises :class:`ProbeError` unless the table is square, its row and column labels agree, and
    every entry is one of the elements (closure).
    """
    try:
        with open(path, newline="") as fh:
            rows = [[c.strip() for c in row] for row in csv.reader(fh) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError) as exc:
        raise ProbeError(f"cannot read group table {path}: {exc}") from None
    if len(rows) < 2:
        raise ProbeError(f"group table {path} is empty")
    cols = tuple(rows[0][1:])
    elems = tuple(r[0] for r in rows[1:])
    if len(set(cols)) != len(cols):
        raise ProbeError(f"group table {path}: duplicate column labels")
    if cols != elems:
        raise ProbeError(f"group table {path}: row labels {list(elems)} differ from column labels {list(cols)}")
    index = {e: i for i, e in enumerate(cols)}
    table = np.empty((len(cols), len(cols)), dtype=np.int64)
    for i, row in enumerate(rows[1:]):
        if len(row) != len(cols) + 1:
            raise ProbeError(f"group table {path}: row {row[0]!r} has {len(row) - 1} entries, expected {len(cols)}")
        for j, entry in enumerate(row[1:]):
            if entry not in index:
                raise ProbeError(f"group table {path} is not closed: {row[0]} ∘ {cols[j]} = {entry!r} "
                                 "is not an element")
            table[i, j] = index[entry]
    return table, cols


def make_task(name: str, p: int | None = None, n: int | None = None, group: str | None = None,
              ordered: bool | None = None) -> Task:
    """Build a task from its parameters; invalid combinations raise :class:`ProbeError`.

    ``ordered``: all ordered pairs (a, b), or for commutative tasks only a <= b (Liu et al.'s
    convention for non-modular addition). ``None`` takes the task's default: unordered for
    ``nonmod-add``, ordered otherwise.
    """
    spec: dict[str, Any] = {"name": name}
    if name in MODULAR_OPS:
        fn, b_nonzero, commutative, needs_prime = MODULAR_OPS[name]
        if p is None or p < 2:
            raise ProbeError(f"task {name!r} needs p >= 2, got p={p}")
        if not _is_prime(p):
            raise ProbeError(f"task {name!r} needs a prime modulus, got p={p}")
        ordered = True if ordered is None else ordered
        spec.update(p=p, ordered=ordered)
        a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
        table = fn(a.astype(np.int64), b.astype(np.int64), p).astype(np.int64)
        if b_nonzero:
            table[:, 0] = -1
        symbols = tuple(str(k) for k in range(p))
        return _table_task(spec, table, symbols, p, commutative, ordered, modulus=p)
    if name == "nonmod-add":
        if p is None or p < 2:
            raise ProbeError(f"task 'nonmod-add' needs p >= 2, got p={p}")
        ordered = False if ordered is None else ordered
        spec.update(p=p, ordered=ordered)
        a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
        return _table_task(spec, (a + b).astype(np.int64), tuple(str(k) for k in range(p)), 2 * p - 1,
                           True, ordered, modulus=None)
    if name == "perm":
        if n is None or not 2 <= n <= 5:
            raise ProbeError(f"task 'perm' (S_n composition) needs 2 <= n <= 5, got n={n}")
        table, symbols = _permutation_table(n)
        spec.update(n=n)
        return _table_task(spec, table, symbols, len(symbols), n < 3, True, modulus=None)
    if name == "group":
        if not group:
            raise ProbeError("task 'group' needs group=NAME (a CSV table in data/groups/) or a path")
        table, symbols = read_group_csv(group_table_path(group))
        commutative = bool(np.array_equal(table, table.T))
        ordered = True if ordered is None else ordered
        spec.update(group=group, ordered=ordered)
        return _table_task(spec, table, symbols, len(symbols), commutative, ordered, modulus=None)
    if name == "digits":
        from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

        x, y = load_digits(return_X_y=True)
        return Task(spec=spec, inputs=(x / 16.0).astype(np.float32), labels=y.astype(np.int64),
                    n_symbols=0, n_classes=10, symbols=tuple(str(k) for k in range(10)),
                    commutative=False)
    raise ProbeError(f"unknown task {name!r}{_valid(TASK_NAMES)}")


def _valid(names: tuple[str, ...] | list[str]) -> str:
    return f" (valid: {', '.join(names)})"


def task_from_spec(spec: dict[str, Any]) -> Task:
    """Rebuild a task from the JSON spec stored in a run."""
    return make_task(spec["name"], p=spec.get("p"), n=spec.get("n"), group=spec.get("group"),
                     ordered=spec.get("ordered"))


@dataclass(frozen=True, eq=False)
class Split:
    """Indices of the training and validation samples into ``Task.inputs``."""

    train: np.ndarray
    val: np.ndarray

    @property
    def sizes(self) -> tuple[int, int]:
        return int(self.train.shape[0]), int(self.val.shape[0])


def make_split(n_samples: int, train_fraction: float, seed: int, n_train: int | None = None) -> Split:
    """Random train/validation split: ``floor(train_fraction * N)`` (or ``n_train``) training samples.

    The permutation comes from ``numpy.random.default_rng(seed)``, independent of the model seed.
    """
    if n_train is None:
        if not 0.0 < train_fraction <= 1.0:
            raise ProbeError(f"train_fraction must be in (0, 1], got {train_fraction}")
        n_train = max(1, int(math.floor(train_fraction * n_samples + 1e-9)))
    if not 1 <= n_train <= n_samples:
        raise ProbeError(f"n_train must be in 1..{n_samples}, got {n_train}")
    perm = np.random.default_rng(seed).permutation(n_samples)
    return Split(train=np.sort(perm[:n_train]).astype(np.int64), val=np.sort(perm[n_train:]).astype(np.int64))
