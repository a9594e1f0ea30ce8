"""The run file's schema, described once (docs/run-format.md, docs/design.md "Run format").

:data:`RUN_ATTRS` lists the root attributes (name, type, JSON or not), :data:`RUN_GROUPS` and
:data:`RUN_DATASETS` the groups and datasets with their rank, element type and which of their rows
a reader may read. The writer fills a :class:`RunHeader` (the attributes, typed) and a
:class:`RunLayout` (everything a new file is laid out from) and checks the file it made with
:func:`check_structure` before it renames it into place; the reader (:class:`probe.runfile.RunFile`)
parses the attributes with :meth:`RunHeader.from_attrs` and checks the same structure, then the
sizes (:func:`check_sizes`): a dataset whose declared size its stored bytes could not hold is
refused before any of it is read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import h5py
import numpy as np

from probe.errors import ProbeError

FORMAT_NAME = "probe-run"
SCHEMA_VERSION = 2
METRIC_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
DIGEST_BYTES = 16
SLOTS = (0, 1)
SERIES_DTYPES = ("float32", "float64")
MAX_SAMPLES = 1 << 24
MAX_ROW_BYTES = 1 << 31  # one checkpoint of one tensor; larger shapes are refused unread
DEVICE_RNG = ("cuda",)  # RNG states only some devices have: a resume state may lack them
SIZE_SLACK = 1 << 22  # bytes a dataset may declare beyond its stored bytes (a commit record resized, not yet written)

Damaged = Callable[[str], ProbeError]


# --------------------------------------------------------------------------------------------------
# attributes
# --------------------------------------------------------------------------------------------------
def _str_list(value: Any) -> bool:
    return all(isinstance(v, str) for v in value)


def _lineage(value: Any) -> bool:
    return (isinstance(value.get("run"), str) and isinstance(value.get("step"), int)
            and not isinstance(value.get("step"), bool) and value["step"] >= 0
            and isinstance(value.get("optimizer", False), bool) and isinstance(value.get("config", {}), dict))


def _imported(value: Any) -> bool:
    files = value.get("files")
    return (isinstance(value.get("kind"), str) and isinstance(value.get("source"), str)
            and isinstance(files, list)
            and all(isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
                    for f in files)
            and isinstance(value.get("mapping"), dict))


@dataclass(frozen=True)
class AttrSpec:
    """One root attribute: its Python type once read (``dict``/``list`` for JSON strings), whether
    it is stored as JSON, whether every file has it, and an optional check of its contents
    (``what`` says what the check wants)."""

    name: str
    kind: type
    json: bool
    required: bool
    meaning: str
    check: Callable[[Any], bool] | None = None
    what: str = ""

    def parse(self, raw: Any, damaged: Damaged) -> Any:
        """The attribute's value from the stored one, or ``damaged(...)`` naming it."""
        if isinstance(raw, (bytes, np.bytes_)) and self.kind is not int:  # a fixed-length string
            try:
                raw = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                raise damaged(f"attribute {self.name!r} is not UTF-8 text") from None
        if self.json:
            if not isinstance(raw, str):
                raise damaged(f"attribute {self.name!r} is not a JSON string")
            try:
                value = json.loads(raw)
            except ValueError:
                raise damaged(f"attribute {self.name!r} is not JSON") from None
            if not isinstance(value, self.kind):
                raise damaged(f"attribute {self.name!r} is not a JSON {'object' if self.kind is dict else 'list'}")
        elif self.kind is int:
            if not isinstance(raw, (int, np.integer)) or isinstance(raw, (bool, np.bool_)):
                raise damaged(f"attribute {self.name!r} is not an integer")
            value = int(raw)
        else:
            if not isinstance(raw, str):
                raise damaged(f"attribute {self.name!r} is not a string")
            value = raw
        if self.check is not None and not self.check(value):
            raise damaged(f"attribute {self.name!r} is not {self.what}")
        return value

    def store(self, value: Any) -> str | int:
        """The stored form of ``value`` (checked as :meth:`parse` checks what it reads)."""
        def bad(what: str) -> ProbeError:
            return ProbeError(f"run header: {what}")

        stored: str | int = json.dumps(value) if self.json else value
        self.parse(stored, bad)
        return stored


RUN_ATTRS: tuple[AttrSpec, ...] = (
    AttrSpec("format", str, False, True, f"always `{FORMAT_NAME}`"),
    AttrSpec("schema_version", int, False, True,
             f"`{SCHEMA_VERSION}` (probe also reads version 1 files); readers refuse newer versions"),
    AttrSpec("config", dict, True, True, "the full training config (keys as in `probe train --dry-run`)"),
    AttrSpec("task", dict, True, True, 'task spec, e.g. `{"name": "add", "p": 113, "ordered": true}`'),
    AttrSpec("symbols", list, True, True, "names of the input symbols, in index order", _str_list, "a list of strings"),
    AttrSpec("n_classes", int, False, False, "number of output classes", lambda v: v >= 1, "a positive integer"),
    AttrSpec("parameters", list, True, True, "every model parameter name, in model order", _str_list,
             "a list of parameter names"),
    AttrSpec("packages", dict, True, True, "versions of probe, torch, transformer-lens, h5py, numpy, HDF5"),
    AttrSpec("created", str, False, False, "ISO timestamp (UTC) of the first write"),
    AttrSpec("resumed", str, False, False, "ISO timestamp (UTC) of the last `--resume`"),
    AttrSpec("device", str, False, False, "`cpu` or `cuda[:N]`"),
    AttrSpec("parent", dict, True, False,
             'runs started with `--from`: `{"run": path, "step": int, "optimizer": bool, "config": {...}}`',
             _lineage, 'an object {"run": path, "step": int, "optimizer": bool, "config": {...}}'),
    AttrSpec("imported_from", dict, True, False,
             'runs made by `probe import`: `{"kind": str, "source": path, "files": [{"path": str, "sha256": hex}, '
             '...], "mapping": {...}, ...}` (the source kind, the hashes of the files read, how tensor names were '
             'mapped, where task and split came from, the fidelity check and repeated checkpoints; docs/design.md, '
             '"Importing and exporting checkpoint series")',
             _imported,
             'an object {"kind": str, "source": path, "files": [{"path", "sha256"}, ...], "mapping": {...}}'),
)
ATTRS_BY_NAME = {a.name: a for a in RUN_ATTRS}


@dataclass(frozen=True)
class RunHeader:
    """A run file's root attributes, typed (one field per entry of :data:`RUN_ATTRS`)."""

    config: dict[str, Any]
    task: dict[str, Any]
    symbols: tuple[str, ...]
    parameters: tuple[str, ...]
    packages: dict[str, Any]
    n_classes: int | None = None
    created: str | None = None
    resumed: str | None = None
    device: str | None = None
    parent: dict[str, Any] | None = None
    imported_from: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    format: str = FORMAT_NAME

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbols", tuple(self.symbols))
        object.__setattr__(self, "parameters", tuple(self.parameters))
        self.to_attrs()  # every field checked as a reader checks it

    def to_attrs(self) -> dict[str, str | int]:
        """The attributes as stored (JSON strings where :data:`RUN_ATTRS` says so); absent optional
        fields are left out."""
        out: dict[str, str | int] = {}
        for spec in RUN_ATTRS:
            value = getattr(self, spec.name)
            if value is None:
                if spec.required:
                    raise ProbeError(f"run header: attribute {spec.name!r} is required")
                continue
            out[spec.name] = spec.store(list(value) if isinstance(value, tuple) else value)
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], where: str, damaged: Damaged) -> "RunHeader":
        """Parse and check the stored attributes of the run file ``where``."""
        fmt = attrs.get("format")
        if fmt != FORMAT_NAME:
            raise ProbeError(f"{where} is an HDF5 file but not a probe run (format attribute {str(fmt)[:40]!r})")
        version = ATTRS_BY_NAME["schema_version"].parse(attrs.get("schema_version"), damaged)
        if version > SCHEMA_VERSION:
            raise ProbeError(f"{where} was written with run schema version {version}; this probe reads up to "
                             f"version {SCHEMA_VERSION} (upgrade probe)")
        values: dict[str, Any] = {}
        for spec in RUN_ATTRS:
            raw = attrs.get(spec.name)
            if raw is None:
                if spec.required:
                    raise damaged(f"attribute {spec.name!r} is missing")
                continue
            values[spec.name] = spec.parse(raw, damaged)
        return cls(**values)


# --------------------------------------------------------------------------------------------------
# groups and datasets
# --------------------------------------------------------------------------------------------------
KINDS = {"int": "iu", "float": "f", "number": "iuf", "bytes": "u"}
KIND_WORDS = {"int": "integers", "float": "floats", "number": "numbers", "bytes": "bytes (uint8)"}


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset, or with ``each`` every dataset in the group ``path`` (with ``nested`` also in its
    subgroups). ``ndim`` is its rank (None: any, ``-1``: at least one); ``kind`` its element type
    (:data:`KINDS`); ``rows`` which rows a reader may read: ``all``, or ``checkpoints`` / ``metrics``
    (the rows the commit record ``checkpoints/steps`` / ``metrics/step`` covers). ``since`` is the
    first schema version that has it."""

    path: str
    ndim: int | None
    kind: str
    rows: str
    meaning: str
    each: bool = False
    nested: bool = False
    required: bool = True
    since: int = 1
    shape: str = ""  # for the docs: shape and dtype as written

    def check(self, key: str, ds: Any, damaged: Damaged) -> h5py.Dataset:
        if not isinstance(ds, h5py.Dataset):
            raise damaged(f"dataset {key!r} is missing")
        if self.ndim == -1 and ds.ndim < 1 or self.ndim is not None and self.ndim >= 0 and ds.ndim != self.ndim:
            raise damaged(f"dataset {key!r} has shape {ds.shape}, expected {self.ndim} dimension(s)")
        if ds.dtype.kind not in KINDS[self.kind] or self.kind == "bytes" and ds.dtype.itemsize != 1:
            raise damaged(f"dataset {key!r} has type {ds.dtype}, expected {KIND_WORDS[self.kind]}")
        return ds


def _slot(s: int, sub: str) -> str:
    return f"resume/slot{s}/{sub}"


RUN_GROUPS: tuple[tuple[str, int], ...] = (  # (path, since)
    ("task", 1), ("split", 1), ("static", 1), ("checkpoints", 1), ("checkpoints/params", 1), ("metrics", 1),
    ("resume", 1), *((_slot(s, sub), 1) for s in SLOTS for sub in ("params", "optim", "rng")), ("status", 2),
)

RUN_DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec("task/table", 2, "int", "all", "group and table tasks: the operation table itself (runs never "
                "read the CSV again)", required=False, shape="`[n, n]` int64"),
    DatasetSpec("task/inputs", 2, "number", "all", "every sample's operands `(a, b)`",
                shape="`[N, 2]` int64 (`[N, 64]` float32 for digits)"),
    DatasetSpec("task/labels", 1, "int", "all", "every sample's label `a ∘ b`", shape="`[N]` int64"),
    DatasetSpec("split/train", 1, "int", "all", "indices into `task/*` (at most `N`)", shape="`[N_train]` int64"),
    DatasetSpec("split/val", 1, "int", "all", "indices into `task/*` (`N_train + N_val <= N`)",
                shape="`[N_val]` int64"),
    DatasetSpec("static", None, "number", "all", "fixed tensors, e.g. `targets` (`[n_classes, d_out]`): the toy "
                "model's regression targets", each=True, shape="any"),
    DatasetSpec("checkpoints/steps", 1, "int", "all", "training step of each checkpoint, increasing; step 0 is "
                "the initialisation (the commit record of checkpoints)", shape="`[T]` int64"),
    DatasetSpec("checkpoints/digest", 2, "bytes", "checkpoints", "BLAKE2b-128 of each checkpoint's tensors (in "
                "the order of the `parameters` attribute, as stored); keys the analysis cache and is checked "
                "against the tensors on the first read of a file state", since=2, shape="`[T, 16]` uint8"),
    DatasetSpec("checkpoints/params", -1, "float", "checkpoints", "parameter `<name>` (TransformerLens names, "
                "e.g. `embed.W_E`, `blocks.0.mlp.W_in`) at each checkpoint", each=True,
                shape="`[T, *shape]` float32"),
    DatasetSpec("metrics/step", 1, "int", "all", "steps at which metrics were recorded (the commit record of "
                "metrics)", shape="`[M]` int64"),
    *(DatasetSpec(f"metrics/{c}", 1, "number", "metrics", "metrics of the parameters *at* that step (before its "
                  "update); NaN where a split is empty", shape="`[M]` float64") for c in METRIC_COLUMNS),
    *(d for s in SLOTS for d in (
        DatasetSpec(_slot(s, "step"), 1, "int", "all", "the checkpoint step this slot holds (-1 while written)",
                    shape="`[1]` int64"),
        DatasetSpec(_slot(s, "has_optim"), 1, "int", "all", "1 if the slot holds optimizer state", shape="`[1]` int8"),
        DatasetSpec(_slot(s, "schedule"), 1, "float", "all", "the checkpoint schedule's state",
                    shape="`[k]` float64"),
        DatasetSpec(_slot(s, "params"), None, "float", "all", "every parameter, in its model shape", each=True,
                    shape="float32 (float64 runs: float64)"),
        DatasetSpec(_slot(s, "optim"), None, "number", "all", "optimizer and intervention state", each=True,
                    nested=True, shape="float32"),
        DatasetSpec(_slot(s, "rng"), 1, "bytes", "all", "RNG states", each=True, shape="uint8"),
    )),
    DatasetSpec("status/finished", 1, "int", "all", "1 once training reached its last step (written in SWMR "
                "mode; version 1 files keep a root attribute `finished`)", since=2, shape="`[1]` int8"),
)


def walk(group: h5py.Group, prefix: str = "", nested: bool = True) -> Iterator[tuple[str, Any]]:
    """``(relative name, object)`` of every member of ``group`` (and of its subgroups with ``nested``)."""
    for key, item in group.items():
        if nested and isinstance(item, h5py.Group):
            yield from walk(item, f"{prefix}{key}/", nested)
        else:
            yield f"{prefix}{key}", item


def datasets(f: h5py.File, version: int, damaged: Damaged) -> Iterator[tuple[DatasetSpec, str, h5py.Dataset]]:
    """Every dataset the schema of ``version`` describes, checked for presence, rank and type."""
    for path, since in RUN_GROUPS:
        if version >= since and not isinstance(f.get(path), h5py.Group):
            raise damaged(f"group {path!r} is missing")
    for spec in RUN_DATASETS:
        if version < spec.since:
            continue
        if spec.each:
            for name, ds in walk(f[spec.path], nested=spec.nested):
                key = f"{spec.path}/{name}"
                yield spec, key, spec.check(key, ds, damaged)
        elif spec.path in f or spec.required:
            yield spec, spec.path, spec.check(spec.path, f.get(spec.path), damaged)


def check_structure(f: h5py.File, version: int, damaged: Damaged) -> dict[str, DatasetSpec]:
    """Check every group and dataset of :data:`RUN_GROUPS` / :data:`RUN_DATASETS`; returns the spec
    of each dataset by path."""
    return {key: spec for spec, key, _ in datasets(f, version, damaged)}


# --------------------------------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------------------------------
def stored_bytes(ds: h5py.Dataset) -> int:
    """Bytes the file holds for ``ds`` (allocated chunks, or its contiguous block)."""
    return int(ds.id.get_storage_size())


def declared_bytes(ds: h5py.Dataset, rows: int | None = None) -> float:
    """Bytes reading ``ds`` (its first ``rows`` rows) would allocate, as a float (no overflow)."""
    row = float(math.prod(ds.shape[1:])) if ds.ndim > 1 else 1.0
    n = float(ds.shape[0] if rows is None or ds.ndim == 0 else min(rows, ds.shape[0])) if ds.ndim else 1.0
    return n * row * ds.dtype.itemsize


def check_size(key: str, ds: h5py.Dataset, file_bytes: int, damaged: Damaged, rows: int | None = None) -> None:
    """Refuse ``ds`` when the rows a reader may read (all, or the first ``rows``) are more bytes than
    the file holds for it: unwritten chunks read as zeros, so a small file could otherwise declare
    terabytes. Nothing is read."""
    need = declared_bytes(ds, rows)
    have = min(stored_bytes(ds), file_bytes)
    if need > have + SIZE_SLACK:
        shape = ds.shape if rows is None else (min(rows, ds.shape[0]), *ds.shape[1:])
        raise damaged(f"dataset {key!r} declares {_human(need)} {tuple(shape)} but the file holds "
                      f"{_human(have)} for it (implausible size, refused unread)")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


# --------------------------------------------------------------------------------------------------
# what a new file is laid out from
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunLayout:
    """Everything a new run file is laid out from: the header, the task's arrays (``inputs``,
    ``labels`` and for table tasks ``table``), the split, the fixed tensors, every parameter's shape
    (model order), which parameters are saved per checkpoint and in which float type, and the sizes
    of the resume slots' optimizer, RNG and schedule state."""

    header: RunHeader
    task_arrays: Mapping[str, np.ndarray]
    split: Mapping[str, np.ndarray]
    static: Mapping[str, np.ndarray]
    param_shapes: Mapping[str, tuple[int, ...]]
    saved: tuple[str, ...]
    series_dtype: str
    optim_shapes: Mapping[str, tuple[int, ...]]
    rng_sizes: Mapping[str, int]
    schedule_size: int
    slot_dtype: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "saved", tuple(self.saved))
        object.__setattr__(self, "slot_dtype", "float64" if self.series_dtype == "float64" else "float32")
        bad = self._problem()
        if bad:
            raise ValueError(f"run layout: {bad}")

    def _problem(self) -> str | None:
        if tuple(self.param_shapes) != self.header.parameters:
            return "param_shapes must list the header's parameters in order"
        if not self.saved or list(self.saved) != [n for n in self.header.parameters if n in self.saved]:
            return "saved must be a non-empty subsequence of the parameters"
        if self.series_dtype not in SERIES_DTYPES:
            return f"series_dtype must be one of {SERIES_DTYPES}"
        if set(self.task_arrays) - {"inputs", "labels", "table"} or set(self.split) != {"train", "val"}:
            return "task_arrays are inputs, labels (and table); split is train and val"
        n = np.asarray(self.task_arrays["labels"]).shape[0]
        if np.asarray(self.task_arrays["inputs"]).shape[0] != n or not 0 < n <= MAX_SAMPLES:
            return "inputs and labels must have the same number of rows"
        split = [np.asarray(self.split[k]) for k in ("train", "val")]
        if sum(len(idx) for idx in split) > n or any(idx.size and (idx.min() < 0 or idx.max() >= n) for idx in split):
            return "split indices must be inside the task, train and val at most N together"
        if self.schedule_size < 0 or any(v < 1 for v in self.rng_sizes.values()):
            return "sizes must be positive"
        return None

    def resume_problem(self, params: Mapping[str, np.ndarray], optim: Mapping[str, np.ndarray],
                       rng: Mapping[str, np.ndarray], schedule: np.ndarray) -> str | None:
        """What is wrong with a resume state for this layout (None: it fits the slots)."""
        shape_of = {k: np.shape(v) for k, v in params.items()}
        bad = shape_problem(shape_of, self.param_shapes, "parameter")
        if bad:
            return bad
        missing = [k for k in self.optim_shapes if k not in optim]
        if missing:
            return f"optimizer state {missing[0]!r} is missing"
        for key, arr in optim.items():
            want = self.optim_shapes.get(key)
            if want is None:
                return f"optimizer state {key!r} has no place in the resume slots"
            if int(np.size(arr)) != math.prod(want):
                return f"optimizer state {key!r} has {np.size(arr)} values, the slot holds {math.prod(want)}"
        missing = [k for k in self.rng_sizes if k not in rng and k not in DEVICE_RNG]
        if missing:
            return f"RNG state {missing[0]!r} is missing"
        for key, arr in rng.items():
            if key not in self.rng_sizes:
                return f"RNG state {key!r} has no place in the resume slots (saved on another kind of device?)"
            if np.ndim(arr) != 1 or np.shape(arr)[0] > self.rng_sizes[key]:
                return f"RNG state {key!r} has shape {np.shape(arr)}, the slot holds ({self.rng_sizes[key]},)"
        if np.shape(schedule) != (self.schedule_size,):
            return f"schedule state has shape {np.shape(schedule)}, the slot holds ({self.schedule_size},)"
        return None


def shape_problem(shapes: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
                  what: str) -> str | None:
    """Whether ``shapes`` names exactly the ``expected`` tensors with their shapes (None: yes)."""
    missing = [n for n in expected if n not in shapes]
    if missing:
        return f"{what} {missing[0]!r} is missing"
    extra = [n for n in shapes if n not in expected]
    if extra:
        return f"{what} {extra[0]!r} is not one of the model's"
    for name, want in expected.items():
        if tuple(shapes[name]) != tuple(want):
            return f"{what} {name!r} has shape {tuple(shapes[name])}, the model's has {tuple(want)}"
    return None
