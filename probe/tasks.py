"""Tasks: finite operation tables ``c = a ∘ b`` and the digits classification set, plus splits.

A :class:`Task` is a pure description of a dataset: every sample as (inputs, label), the symbols and,
for operation tables, the full table. It is rebuilt from its JSON spec (``Task.spec``), which the run
file stores, so a run never needs pickled data.

Operations follow Power et al. (2022), Table 1 / Sec. 2: modular ``+ - * /`` and polynomials mod
``p``; division is defined for ``b != 0`` only. Power et al. take ``p`` prime; only the operations
that divide (``div``, ``mix1``) need it, the others are defined on ``Z_p`` for every ``p >= 2``.
Tasks are looked up in :data:`TASKS` when used, so a task registered from any module is as good as
a shipped one. ``nonmod-add`` is the non-modular addition of
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

from probe.errors import ProbeError, valid
from probe.registry import Registry


def _groups_dir() -> Path:
    """The shipped group tables: package data ``probe.groups`` (``data/groups`` in the source tree)."""
    from importlib.resources import files

    return Path(str(files("probe.groups")))


def shipped_groups() -> tuple[str, ...]:
    """Names of the shipped Cayley tables (S3, D4, Q8, A4)."""
    return tuple(sorted(p.stem for p in _groups_dir().glob("*.csv")))


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % k for k in range(2, int(math.isqrt(n)) + 1))


_Binary = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def _div(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """``a / b mod p`` via Fermat's inverse ``b^(p-2)``, an inverse only when ``p`` is prime."""
    inv = np.array([pow(int(x), p - 2, p) if x % p else 0 for x in range(p)], dtype=np.int64)
    return (a * inv[b]) % p


def _mix1(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    return np.where(b % 2 == 1, _div(a, b, p), (a - b) % p)


@dataclass(frozen=True)
class ModularOp:
    """One operation ``c = fn(a, b) mod p`` on ``Z_p`` (Power et al. Table 1).

    ``needs_prime``: the operation divides, and ``b`` has an inverse mod ``p`` for every ``b != 0``
    exactly when ``p`` is prime, so a composite ``p`` is refused. Sums, differences, products and
    polynomials are defined on ``Z_p`` for every ``p >= 2`` (docs/design.md, Tasks).
    """

    fn: _Binary
    #: defined for ``b != 0`` only (the operation divides by ``b``)
    b_nonzero: bool = False
    commutative: bool = False
    needs_prime: bool = False
    #: where the operation and its domain come from (the task's description cites it)
    source: str = "Power et al. Table 1"


#: the modular operations, registered as tasks of the same names
MODULAR_OPS: dict[str, ModularOp] = {
    "add": ModularOp(lambda a, b, p: (a + b) % p, commutative=True),
    "sub": ModularOp(lambda a, b, p: (a - b) % p),
    "mul": ModularOp(lambda a, b, p: (a * b) % p, commutative=True),
    "div": ModularOp(_div, b_nonzero=True, needs_prime=True),
    "x2+y2": ModularOp(lambda a, b, p: (a * a + b * b) % p, commutative=True),
    "x2+xy+y2": ModularOp(lambda a, b, p: (a * a + a * b + b * b) % p, commutative=True),
    "x2+xy+y2+x": ModularOp(lambda a, b, p: (a * a + a * b + b * b + a) % p),
    "x3+xy": ModularOp(lambda a, b, p: (a**3 + a * b) % p),
    "x3+xy2+y": ModularOp(lambda a, b, p: (a**3 + a * b * b + b) % p),
    # a / b for odd b, a - b for even b: divides by odd b, so it needs inverses as div does
    "mix1": ModularOp(_mix1, b_nonzero=True, needs_prime=True),
    # products on division's domain 0 <= a < p, 0 < b < p: (p - 1) p equations, none with b = 0 (Lee et al.
    # 2024's main.py, multiplication_mod_p_data); the domain is not symmetric, so no unordered pairs
    "mul-b-nonzero": ModularOp(lambda a, b, p: (a * b) % p, b_nonzero=True,
                               source="Lee et al. 2024's main.py: b != 0"),
}


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
    candidate = _groups_dir() / f"{name}.csv"
    if name in shipped_groups():
        return candidate
    raise ProbeError(f"group table {name!r} not found (shipped: {', '.join(shipped_groups())}; "
                     "or give a path to a .csv file)", param="group")


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
    if len(rows) > MAX_TABLE + 1:
        raise ProbeError(f"group table {path} has more than {MAX_TABLE} elements")
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


# --------------------------------------------------------------------------------------------------
# the task registry: one entry per task name
# --------------------------------------------------------------------------------------------------
MAX_SYMBOLS = 2048  # p limit: p^2 samples (4M) fit in memory with room to spare
MAX_TABLE = 256  # operation tables from CSV: the group axioms are checked in n^3 lookups


@dataclass(frozen=True)
class TaskKind:
    """A registered task: its builder and what it needs. ``build(p=, n=, group=, ordered=, table=,
    symbols=) -> Task``; ``table`` and ``symbols`` carry a stored operation table (runs store it, so
    a run never reads a CSV file again). ``check(p=, n=)`` refuses parameters the task cannot use
    without building anything (configs call it); ``op`` is the operation of a modular task."""

    name: str
    description: str
    build: Callable[..., Task]
    check: Callable[..., None] = field(default=lambda **_: None)
    op: ModularOp | None = None

    @property
    def modular(self) -> bool:
        return self.op is not None


TASKS: Registry[TaskKind] = Registry("task")


def _check_modulus(name: str, p: int | None, prime: bool) -> None:
    if p is None or p < 2:
        raise ProbeError(f"task {name!r} needs p >= 2, got p={p}", param="p")
    if p > MAX_SYMBOLS:
        raise ProbeError(f"task {name!r} supports p <= {MAX_SYMBOLS}, got p={p}", param="p")
    if prime and not _is_prime(p):
        factor = next(k for k in range(2, p) if p % k == 0)
        raise ProbeError(f"task {name!r} divides mod p and needs a prime p (an inverse of every b != 0); "
                         f"got p={p} = {factor} x {p // factor}", param="p")


def modular_task(name: str, op: ModularOp) -> TaskKind:
    """Register ``op`` as the task ``name``: the table ``fn(a, b) mod p`` over ``Z_p``."""

    def build(p: int | None = None, ordered: bool | None = None, **_: Any) -> Task:
        _check_modulus(name, p, op.needs_prime)
        assert p is not None
        ordered = True if ordered is None else ordered
        a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
        table = op.fn(a.astype(np.int64), b.astype(np.int64), p).astype(np.int64)
        if op.b_nonzero:
            table[:, 0] = -1
        spec = {"name": name, "p": p, "ordered": ordered}
        return _table_task(spec, table, tuple(str(k) for k in range(p)), p, op.commutative, ordered, modulus=p)

    def check(p: int | None = None, **_: Any) -> None:
        _check_modulus(name, p, op.needs_prime)

    modulus = "p prime" if op.needs_prime else "any p >= 2"
    return TASKS.add(name, TaskKind(name, f"({name}) mod p, {modulus} ({op.source})", build, check, op))


for _name, _op in MODULAR_OPS.items():
    modular_task(_name, _op)


def _build_nonmod_add(p: int | None = None, ordered: bool | None = None, **_: Any) -> Task:
    _check_modulus("nonmod-add", p, prime=False)
    assert p is not None
    ordered = False if ordered is None else ordered
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    return _table_task({"name": "nonmod-add", "p": p, "ordered": ordered}, (a + b).astype(np.int64),
                       tuple(str(k) for k in range(p)), 2 * p - 1, True, ordered, modulus=None)


def _check_perm(n: int | None = None, **_: Any) -> None:
    if n is None or not 2 <= n <= 5:
        raise ProbeError(f"task 'perm' (S_n composition) needs 2 <= n <= 5, got n={n}", param="n")


def _build_perm(n: int | None = None, **_: Any) -> Task:
    _check_perm(n)
    assert n is not None
    table, symbols = _permutation_table(n)
    return _table_task({"name": "perm", "n": n}, table, symbols, len(symbols), n < 3, True, modulus=None)


def _build_table_task(kind: str, group: str | None, ordered: bool | None, table: np.ndarray | None,
                      symbols: tuple[str, ...] | None) -> Task:
    if table is None:
        if not group:
            raise ProbeError(f"task {kind!r} needs group=NAME (a shipped table: {', '.join(shipped_groups())}) "
                             "or a path to a CSV file", param="group")
        table, symbols = read_group_csv(group_table_path(group))
    else:
        table, symbols = _checked_table(np.asarray(table), symbols)
    if kind == "group":
        problem = group_axioms_problem(table)
        if problem:
            raise ProbeError(f"the table {group!r} is not a group: {problem} (use task=table for a plain "
                             "operation table)", param="group")
    commutative = bool(np.array_equal(table, table.T))
    ordered = True if ordered is None else ordered
    spec = {"name": kind, "group": _table_label(group), "ordered": ordered}
    return _table_task(spec, table, tuple(symbols), len(symbols), commutative, ordered, modulus=None)


def _table_label(group: str | None) -> str | None:
    """How a table task names its table: a shipped name as is, a CSV file by its stem."""
    if group is None:
        return None
    return Path(group).stem if group.endswith(".csv") else group


def _checked_table(table: np.ndarray, symbols: tuple[str, ...] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    if table.ndim != 2 or table.shape[0] != table.shape[1] or not 1 <= table.shape[0] <= MAX_TABLE:
        raise ProbeError(f"a stored operation table must be square with 1..{MAX_TABLE} rows, got shape "
                         f"{table.shape}")
    if not np.issubdtype(table.dtype, np.integer) or table.min() < 0 or table.max() >= table.shape[0]:
        raise ProbeError("a stored operation table must hold element indices 0..n-1")
    n = table.shape[0]
    if symbols is None or len(symbols) != n:
        symbols = tuple(str(k) for k in range(n))
    return table.astype(np.int64), tuple(str(s) for s in symbols)


def group_axioms_problem(table: np.ndarray) -> str | None:
    """The first group axiom ``table`` violates (associativity, identity, inverses), or None."""
    t = np.asarray(table)
    n = t.shape[0]
    # (a*b)*c == a*(b*c) for all a, b, c: n^3 lookups, vectorised
    left = t[t[:, :, None], np.arange(n)[None, None, :]]  # [(a*b)*c]
    right = t[np.arange(n)[:, None, None], t[None, :, :]]  # [a*(b*c)]
    bad = np.argwhere(left != right)
    if bad.size:
        a, b, c = bad[0]
        return f"not associative ((e{a} e{b}) e{c} != e{a} (e{b} e{c}))"
    ident = [e for e in range(n) if np.array_equal(t[e], np.arange(n)) and np.array_equal(t[:, e], np.arange(n))]
    if not ident:
        return "no identity element"
    e = ident[0]
    if not all((t[a] == e).any() and (t[:, a] == e).any() for a in range(n)):
        return "not every element has an inverse"
    return None


TASKS.add("nonmod-add", TaskKind("nonmod-add", "a + b over 0..p-1, not reduced (Liu et al. Sec. 2)",
                                 _build_nonmod_add, lambda p=None, **_: _check_modulus("nonmod-add", p, False)))
TASKS.add("perm", TaskKind("perm", "composition in S_n (n = 2..5)", _build_perm, _check_perm))
TASKS.add("group", TaskKind("group", "a group from a Cayley table (shipped S3, D4, Q8, A4 or a CSV path); "
                            "group axioms checked", lambda group=None, ordered=None, table=None, symbols=None,
                            **_: _build_table_task("group", group, ordered, table, symbols)))
TASKS.add("table", TaskKind("table", "any closed operation table from a CSV (no axioms checked)",
                            lambda group=None, ordered=None, table=None, symbols=None,
                            **_: _build_table_task("table", group, ordered, table, symbols)))


def _build_digits(**_: Any) -> Task:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    x, y = load_digits(return_X_y=True)
    return Task(spec={"name": "digits"}, inputs=(x / 16.0).astype(np.float32), labels=y.astype(np.int64),
                n_symbols=0, n_classes=10, symbols=tuple(str(k) for k in range(10)), commutative=False)


TASKS.add("digits", TaskKind("digits", "scikit-learn's bundled 8x8 digits (Omnigrok-style MLP)", _build_digits))


#: how a task's samples are labelled: ``task``, by the task itself; ``shuffled``, by a fixed random permutation
#: of the task's own labels (the same inputs and class counts, no structure left to generalise: Varma
#: et al. 2023 train on random labels so that only a memorising circuit can fit the data)
LABELS = ("task", "shuffled")
#: tasks whose labels may be shuffled: every task rebuilt from its spec alone (a group or table task
#: stores its own table, which must stay the group's)
_NO_SHUFFLE = ("group", "table")


def check_labels(name: str, labels: str, label_seed: int) -> None:
    """Refuse a labelling the task cannot take, building nothing (configs call it)."""
    if labels not in LABELS:
        raise ProbeError(f"unknown labels {labels!r}{valid(LABELS)}", param="labels")
    if labels == "shuffled" and name in _NO_SHUFFLE:
        raise ProbeError(f"labels=shuffled is not offered for task {name!r}, which stores its own operation "
                         "table", param="labels")
    if isinstance(label_seed, bool) or not isinstance(label_seed, int) or not 0 <= label_seed < 2**32:
        raise ProbeError(f"label_seed must be an integer in 0..{2**32 - 1}, got {label_seed!r}", param="label_seed")
    if labels == "task" and label_seed != 0:
        raise ProbeError("label_seed applies to labels=shuffled only", param="label_seed")


def shuffled_labels(task: Task, label_seed: int) -> Task:
    """``task`` with its labels permuted by ``numpy.random.default_rng([label_seed, 2])`` (the class
    counts kept). The table, where the task has one, holds the shuffled labels, so analyses read what
    the run trained on; the result is neither cyclic (``modulus`` None: no Fourier analysis) nor
    commutative. Its spec records ``labels`` and ``label_seed``, from which it is rebuilt."""
    perm = np.random.default_rng([label_seed, 2]).permutation(task.n_samples)
    labels = task.labels[perm].astype(np.int64)
    table = None
    if task.table is not None:
        table = np.full_like(task.table, -1)
        table[task.inputs[:, 0], task.inputs[:, 1]] = labels
    spec = {**task.spec, "labels": "shuffled", "label_seed": int(label_seed)}
    return Task(spec=spec, inputs=task.inputs, labels=labels, n_symbols=task.n_symbols, n_classes=task.n_classes,
                symbols=task.symbols, commutative=False, modulus=None, table=table)


def make_task(name: str, p: int | None = None, n: int | None = None, group: str | None = None,
              ordered: bool | None = None, table: np.ndarray | None = None,
              symbols: tuple[str, ...] | None = None, labels: str = "task", label_seed: int = 0) -> Task:
    """Build a task from its parameters; invalid combinations raise :class:`ProbeError`.

    ``ordered``: all ordered pairs (a, b), or for commutative tasks only a <= b (Liu et al.'s
    convention for non-modular addition). ``None`` takes the task's default: unordered for
    ``nonmod-add``, ordered otherwise. ``table``/``symbols``: a stored operation table for the
    ``group`` and ``table`` tasks (instead of reading ``group``'s CSV file). ``labels="shuffled"``:
    the task's labels permuted with ``label_seed`` (:func:`shuffled_labels`).
    """
    check_labels(name, labels, label_seed)
    task = TASKS.get(name).build(p=p, n=n, group=group, ordered=ordered, table=table, symbols=symbols)
    return shuffled_labels(task, label_seed) if labels == "shuffled" else task


def task_from_spec(spec: dict[str, Any], table: np.ndarray | None = None,
                   symbols: tuple[str, ...] | None = None) -> Task:
    """Rebuild a task from the JSON spec stored in a run (and its stored operation table, if any).

    A stored spec never makes probe read a file: table tasks come from the table stored in the run,
    or, for runs that did not store one, from a shipped table named in the spec.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ProbeError("the stored task spec is not a JSON object with a 'name'")
    name = spec["name"]
    if name in ("group", "table") and table is None:
        label = spec.get("group")
        if not isinstance(label, str) or label not in shipped_groups():
            raise ProbeError(f"the run names the group table {str(label)[:40]!r} but does not store it; only the "
                             f"shipped tables ({', '.join(shipped_groups())}) can be rebuilt from a name")
    kw = {k: spec.get(k) for k in ("p", "n", "group", "ordered")}
    for key in ("p", "n"):
        if kw[key] is not None and (isinstance(kw[key], bool) or not isinstance(kw[key], int)):
            raise ProbeError(f"the stored task has a non-integer {key}={str(kw[key])[:40]!r}")
    if kw["ordered"] is not None and not isinstance(kw["ordered"], bool):
        raise ProbeError("the stored task has a non-boolean 'ordered'")
    if kw["group"] is not None and not isinstance(kw["group"], str):
        raise ProbeError("the stored task has a non-string 'group'")
    labels, label_seed = spec.get("labels", "task"), spec.get("label_seed", 0)
    if not isinstance(labels, str) or isinstance(label_seed, bool) or not isinstance(label_seed, int):
        raise ProbeError("the stored task has a non-string 'labels' or a non-integer 'label_seed'")
    return make_task(name, table=table, symbols=symbols, labels=labels, label_seed=label_seed, **kw)


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


class GrokkingSquaredStream:
    """Liu et al.'s ``toy/train_add.py`` random stream, ``np.random.seed(seed)``: first
    ``y_templates = normal(0, 1, size=target_shape)`` (one regression target per class,
    ``(2p - 1, output_dim)``), then ``train_id = choice(n_samples, n_train, replace=False)`` (every
    other sample validates), then one ``choice(n_train, batch_size, replace=False)`` per step, the
    step's minibatch as positions in ``train_id``'s drawn order."""

    def __init__(self, n_samples: int, n_train: int, seed: int, target_shape: tuple[int, int],
                 discard_shape: tuple[int, int] | None = None) -> None:
        """``discard_shape``: a ``normal(0, 1)`` draw of this shape comes first and is thrown away (the
        phase-diagram notebook's unused ``x_templates``, ``(p, output_dim)``)."""
        if not 1 <= n_train <= n_samples:
            raise ProbeError(f"n_train must be in 1..{n_samples}, got {n_train}")
        self.n_samples, self.n_train, self.seed, self.target_shape = n_samples, n_train, seed, target_shape
        self.discard_shape = discard_shape
        self._rs, self.targets, self.order = self._start()
        self.split = Split(train=np.sort(self.order).astype(np.int64),
                           val=np.setdiff1d(np.arange(n_samples), self.order).astype(np.int64))
        self._rank = np.searchsorted(self.split.train, self.order)  # drawn position -> sorted position
        self._next = 0  # the step whose minibatch the stream draws next

    def _start(self) -> tuple[np.random.RandomState, np.ndarray, np.ndarray]:
        rs = np.random.RandomState(self.seed)
        if self.discard_shape is not None:
            rs.normal(0, 1, size=self.discard_shape)
        targets = rs.normal(0, 1, size=self.target_shape).astype(np.float32)
        order = rs.choice(self.n_samples, self.n_train, replace=False).astype(np.int64)
        return rs, targets, order

    def batch(self, step: int, batch_size: int) -> np.ndarray:
        """Step ``step``'s minibatch (0 = the first update) as rows of the sorted training split.
        Steps are drawn in order; asking for another step (a resumed run) replays the stream to it."""
        if step != self._next:
            self._rs = self._start()[0]
            for _ in range(step):
                self._rs.choice(self.n_train, batch_size, replace=False)
        self._next = step + 1
        return self._rank[self._rs.choice(self.n_train, batch_size, replace=False)]


def subset_split(split: Split, fraction: float | None, seed: int) -> Split:
    """Keep ``floor(fraction * n_train)`` (at least one) of the training rows, chosen with
    ``numpy.random.default_rng([seed, 1])``; validation is unchanged (Varma et al.'s ungrokking trains
    a grokked model further on a subset of its training data and tests on the same held-out set)."""
    if fraction is None or fraction >= 1.0:
        return split
    keep = max(1, int(math.floor(fraction * split.train.shape[0] + 1e-9)))
    chosen = np.random.default_rng([seed, 1]).permutation(split.train.shape[0])[:keep]
    return Split(train=np.sort(split.train[chosen]).astype(np.int64), val=split.val)
