"""The run file: one HDF5 file per run (``RUN_DIR/run.h5``), layout in docs/run-format.md.

Crash safety. The writer uses HDF5's single-writer/multiple-reader mode (SWMR): every dataset is
created up front, series grow by resizing, and each commit writes its payload first and its
*commit record* (``checkpoints/steps`` or ``metrics/step``) last. A reader, or a resume after
``kill -9``, trusts only rows the commit record covers. Resume state (full parameters, optimizer
moments, RNG states) is double-buffered in ``resume/slot0`` and ``resume/slot1``; a slot's ``step``
is written last. A new file (a fresh run, or the copy ``--resume`` makes) is complete, resume state
included, and already in SWMR mode before it is renamed into place, so the file at ``run.h5`` is
always readable and resumable. Nothing is pickled: every value is a numeric dataset or a JSON
string attribute.

Integrity. Every dataset is chunked with HDF5's Fletcher-32 checksum filter, and each checkpoint
records a BLAKE2 digest of its tensors (``checkpoints/digest``), which keys the analysis cache by
content. The file's metadata carries HDF5's own checksums (``libver="latest"``). A read that fails a
checksum becomes one :class:`ProbeError` naming the dataset and the step. Checksums are verified
once per file state: after a series has been read through the filter without error, the rows read
are recorded in ``RUN_DIR/analysis/verified.json`` against the file's identity (device, inode,
size, modification and change times); later reads of those rows of an unchanged, finished file
take the raw chunks and skip the filter (:class:`Verified`). Any write to the file changes its
change time and voids the record, so edited bytes are always checked.

Validation. :class:`RunFile` checks on opening that every required group, dataset and attribute is
there with its type and shape, that indices are inside the task table, that steps increase, and
that the file holds no external links, virtual datasets or external storage. It refuses sizes that
would need huge allocations before reading them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from probe.errors import ProbeError, RunWriteError
from probe.tasks import Split

RUN_FILENAME = "run.h5"
FORMAT_NAME = "probe-run"
SCHEMA_VERSION = 2
CHUNK_BYTES = 1 << 18  # whole chunks are allocated at once: keep small runs small
METRIC_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
DIGEST_BYTES = 16
MAX_ROW_BYTES = 1 << 31  # one checkpoint of one tensor; larger shapes are refused unread
MAX_SAMPLES = 1 << 24
JSON_ATTRS = {"config": dict, "task": dict, "symbols": list, "parameters": list, "packages": dict}


def run_file_path(run_dir: str | os.PathLike[str]) -> Path:
    """``RUN_DIR/run.h5``; accepts the file itself too."""
    path = Path(run_dir)
    if path.is_file() and path.suffix == ".h5":
        return path
    return path / RUN_FILENAME


def _time_chunk(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    per_row = max(1, int(np.prod(shape)) * itemsize)
    rows = int(min(1024, max(1, CHUNK_BYTES // per_row)))
    return (rows, *shape)


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("probe", "torch", "transformer-lens", "h5py", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    out["hdf5"] = h5py.version.hdf5_version
    return out


def digest(arrays: list[np.ndarray]) -> np.ndarray:
    """BLAKE2b-128 of the arrays' bytes, in order: ``[16]`` uint8."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    for a in arrays:
        h.update(np.ascontiguousarray(a).view(np.uint8).data)
    return np.frombuffer(h.digest(), dtype=np.uint8).copy()


def _dataset(g: h5py.Group, name: str, data: np.ndarray | None = None, *, shape: tuple[int, ...] | None = None,
             maxshape: tuple[int | None, ...] | None = None, dtype: Any = None,
             chunks: tuple[int, ...] | None = None) -> h5py.Dataset:
    """Every dataset of a run: chunked, with the Fletcher-32 checksum filter."""
    if data is not None:
        data = np.asarray(data)
        shape, dtype = data.shape, data.dtype
    assert shape is not None
    if chunks is None:
        chunks = tuple(max(1, s) for s in shape) if shape else None
    if not shape:  # scalars cannot be chunked: store as [1]
        shape, chunks = (1,), (1,)
        data = None if data is None else data.reshape(1)
    ds = g.create_dataset(name, shape=shape, maxshape=maxshape or shape, dtype=dtype, chunks=chunks,
                          fletcher32=True)
    if data is not None and data.size:
        ds[...] = data
    return ds


@dataclass
class ResumeState:
    """Everything needed to continue training bit-identically from ``step``."""

    step: int
    params: dict[str, np.ndarray]  # full parameters (and buffers) by name
    optim: dict[str, np.ndarray]  # flattened optimizer state: "<param>/<key>"
    has_optim: bool
    rng: dict[str, np.ndarray]  # uint8 generator states
    schedule: np.ndarray  # float64 [k] schedule state (last checkpoint's metrics)


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------
class RunWriter:
    """Appends checkpoints and metrics to a run file in SWMR mode."""

    def __init__(self, path: Path, f: h5py.File, saved: list[str], next_slot: int) -> None:
        self.path = path
        self.f = f
        self.saved = saved
        self._pending: list[dict[str, float]] = []
        self._queued: list[tuple[int, dict[str, np.ndarray]]] = []
        self._next_slot = next_slot
        self._last_flush = time.monotonic()
        self._broken = False

    @classmethod
    def create(cls, path: Path, *, attrs: dict[str, Any], task_arrays: dict[str, np.ndarray],
               split: dict[str, np.ndarray], static: dict[str, np.ndarray],
               param_shapes: dict[str, tuple[int, ...]], saved: list[str], series_dtype: str,
               optim_shapes: dict[str, tuple[int, ...]], rng_sizes: dict[str, int], schedule_size: int,
               copy_from: "RunFile | None" = None, resume: ResumeState | None = None) -> "RunWriter":
        """Create a run file at ``path``: written whole under a temporary name, switched to SWMR mode,
        then renamed into place, so ``path`` always holds a complete, resumable file.

        With ``copy_from`` the committed checkpoints and metrics of an existing run (up to
        ``resume.step``) are copied and ``resume`` fills slot 0: this is how ``--resume`` rewrites a
        file that was killed mid-write, without touching the original until the copy is complete.
        """
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            f = h5py.File(tmp, "w", libver="latest")
        except OSError as exc:
            raise ProbeError(f"cannot create {tmp}: {_reason(exc)}") from None
        try:
            with _writing(tmp):
                cls._layout(f, attrs, task_arrays, split, static, param_shapes, saved, series_dtype, optim_shapes,
                            rng_sizes, schedule_size, copy_from, resume)
                if resume is not None:
                    _write_slot(f["resume/slot0"], resume)
                f.flush()
                f.close()
                f = h5py.File(tmp, "r+", libver="latest")
                f.swmr_mode = True
        except BaseException:
            if f.id.valid:
                f.close()
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
        return cls(path, f, saved, next_slot=1 if resume is not None else 0)

    @staticmethod
    def _layout(f: h5py.File, attrs: dict[str, Any], task_arrays: dict[str, np.ndarray], split: dict[str, np.ndarray],
                static: dict[str, np.ndarray], param_shapes: dict[str, tuple[int, ...]], saved: list[str],
                series_dtype: str, optim_shapes: dict[str, tuple[int, ...]], rng_sizes: dict[str, int],
                schedule_size: int, copy_from: "RunFile | None", resume: ResumeState | None) -> None:
        for key, value in attrs.items():
            f.attrs[key] = value
        for group, arrays in (("task", task_arrays), ("split", split), ("static", static)):
            g = f.create_group(group)
            for key, arr in arrays.items():
                _dataset(g, key, arr)
        ck = f.create_group("checkpoints")
        n_ck = 0 if copy_from is None else copy_from.n_checkpoints_upto(resume.step if resume else None)
        steps = _dataset(ck, "steps", shape=(n_ck,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
        dig = _dataset(ck, "digest", shape=(n_ck, DIGEST_BYTES), maxshape=(None, DIGEST_BYTES), dtype=np.uint8,
                       chunks=(1024, DIGEST_BYTES))
        if n_ck:
            assert copy_from is not None
            steps[:] = copy_from.steps[:n_ck]
        pg = ck.create_group("params")
        dtype = np.dtype(series_dtype)
        copied: dict[str, h5py.Dataset] = {}
        for name in saved:
            shape = param_shapes[name]
            ds = _dataset(pg, name, shape=(n_ck, *shape), maxshape=(None, *shape), dtype=dtype,
                          chunks=_time_chunk(shape, dtype.itemsize))
            copied[name] = ds
        if n_ck:
            assert copy_from is not None
            for lo in range(0, n_ck, 256):
                hi = min(n_ck, lo + 256)
                rows = {name: copy_from.read(copy_from.series_dataset(name), slice(lo, hi)) for name in saved}
                for name in saved:
                    copied[name][lo:hi] = rows[name]
                dig[lo:hi] = np.stack([digest([rows[n][i] for n in saved]) for i in range(hi - lo)])
        mg = f.create_group("metrics")
        n_m = 0
        if copy_from is not None:
            m_steps = copy_from.metric_steps()
            n_m = int(np.searchsorted(m_steps, resume.step, side="left")) if resume else len(m_steps)
        _dataset(mg, "step", shape=(n_m,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        for col in METRIC_COLUMNS:
            _dataset(mg, col, shape=(n_m,), maxshape=(None,), dtype=np.float64, chunks=(4096,))
        if n_m:
            assert copy_from is not None
            old = copy_from.metrics()
            mg["step"][:] = old["step"][:n_m]
            for col in METRIC_COLUMNS:
                mg[col][:] = old[col][:n_m]
        rg = f.create_group("resume")
        slot_dtype = np.float64 if series_dtype == "float64" else np.float32
        for s in range(2):
            # Storage is allocated here, before SWMR writing starts: SWMR may only overwrite
            # allocated data or append chunks.
            sg = rg.create_group(f"slot{s}")
            _dataset(sg, "step", np.array([-1], dtype=np.int64))
            _dataset(sg, "has_optim", np.array([0], dtype=np.int8))
            spg = sg.create_group("params")
            for name, shape in param_shapes.items():
                _dataset(spg, name, np.zeros(shape, slot_dtype))
            og = sg.create_group("optim")
            for key, shape in optim_shapes.items():  # torch keeps these in float32: exact
                _dataset(og, key, np.zeros(shape, slot_dtype))
            rgg = sg.create_group("rng")
            for key, size in rng_sizes.items():
                _dataset(rgg, key, np.zeros(size, np.uint8))
            _dataset(sg, "schedule", np.zeros(schedule_size, np.float64))
        _dataset(f.create_group("status"), "finished", np.array([0], dtype=np.int8))

    # appends ----------------------------------------------------------------------------------
    def add_metrics(self, row: dict[str, float]) -> None:
        """Queue one metrics row; rows are committed with the next checkpoint or every few seconds."""
        self._pending.append(row)
        if time.monotonic() - self._last_flush > 5.0:
            self.flush_metrics()

    def flush_metrics(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        with _writing(self.path, self):
            mg = self.f["metrics"]
            n, k = mg["step"].shape[0], len(self._pending)
            for col in METRIC_COLUMNS:
                ds = mg[col]
                ds.resize((n + k,))
                ds[n:] = np.array([r.get(col, np.nan) for r in self._pending], dtype=np.float64)
                ds.flush()
            step = mg["step"]
            step.resize((n + k,))
            step[n:] = np.array([r["step"] for r in self._pending], dtype=np.int64)
            step.flush()
        self._pending.clear()

    def write_checkpoint(self, step: int, series: dict[str, np.ndarray], resume: ResumeState) -> None:
        """Commit one checkpoint: metrics, resume slot, tensor rows and digest first, ``steps`` last."""
        self.queue_checkpoint(step, series)
        self.commit(resume)

    def queue_checkpoint(self, step: int, series: dict[str, np.ndarray]) -> None:
        """Hold one checkpoint's tensors in memory until :meth:`commit` (a kill before then loses only
        these rows: the run resumes from its last commit and trains them again)."""
        self._queued.append((step, {name: np.array(series[name], copy=True) for name in self.saved}))

    @property
    def queued(self) -> int:
        return len(self._queued)

    def commit(self, resume: ResumeState) -> None:
        """Write the queued checkpoints in one append per tensor. ``resume`` is the training state at the
        last queued step; it goes to the older of the two resume slots before ``steps`` grows, so a
        kill at any instant leaves a file whose newest usable slot matches a committed checkpoint."""
        if not self._queued:
            return
        if resume.step != self._queued[-1][0]:
            raise ValueError(f"resume state at step {resume.step}, last queued checkpoint at {self._queued[-1][0]}")
        self.flush_metrics()
        rows, self._queued = self._queued, []
        k = len(rows)
        with _writing(self.path, self):
            slot = self.f[f"resume/slot{self._next_slot}"]
            _write_slot(slot, resume)
            self._next_slot = 1 - self._next_slot
            pg = self.f["checkpoints/params"]
            n = self.f["checkpoints/steps"].shape[0]
            stacked = {name: np.stack([np.asarray(r[name], dtype=pg[name].dtype) for _, r in rows])
                       for name in self.saved}
            for name in self.saved:
                ds = pg[name]
                ds.resize((n + k, *ds.shape[1:]))
                ds[n:] = stacked[name]
                ds.flush()
            dig = self.f["checkpoints/digest"]
            dig.resize((n + k, DIGEST_BYTES))
            dig[n:] = np.stack([digest([stacked[name][j] for name in self.saved]) for j in range(k)])
            dig.flush()
            steps = self.f["checkpoints/steps"]
            steps.resize((n + k,))
            steps[n:] = np.array([st for st, _ in rows], dtype=steps.dtype)
            steps.flush()

    def close(self, finished: bool) -> None:
        """Flush and close; a run that reached its last step is marked ``finished`` (in SWMR mode, so
        concurrent readers never block this)."""
        if not self.f.id.valid:
            return
        if self._broken:  # a failed write (disk full): leave the file as a kill would (committed part intact)
            return
        self.flush_metrics()
        if finished:
            with _writing(self.path, self):
                ds = self.f["status/finished"]
                ds[0] = 1
                ds.flush()
        self.f.close()


def _write_slot(slot: h5py.Group, state: ResumeState) -> None:
    slot["step"][0] = -1
    slot["step"].flush()
    for name, arr in state.params.items():
        slot["params"][name][...] = arr
    for key, arr in state.optim.items():
        slot["optim"][key][...] = np.asarray(arr).reshape(slot["optim"][key].shape)
    for key, arr in state.rng.items():
        ds = slot["rng"][key]
        buf = np.zeros(ds.shape, np.uint8)
        buf[: arr.shape[0]] = arr
        ds[...] = buf
    slot["schedule"][...] = state.schedule
    slot["has_optim"][0] = int(state.has_optim)
    for group in ("params", "optim", "rng"):
        for _, ds in _walk(slot[group]):
            ds.flush()
    slot["schedule"].flush()
    slot["has_optim"].flush()
    slot["step"][0] = state.step
    slot["step"].flush()


@contextmanager
def _writing(path: Path, writer: RunWriter | None = None) -> Iterator[None]:
    """A failed write (disk full, quota, I/O error) becomes one ProbeError; what was committed stays."""
    try:
        yield
    except (OSError, RuntimeError, ValueError) as exc:
        if writer is not None:
            writer._broken = True
        raise RunWriteError(f"cannot write {path}: {_reason(exc)}; the checkpoints already committed are intact: "
                         f"free space and continue with 'probe train --resume {path.parent}'") from None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    if "No space left" in str(exc) or getattr(exc, "errno", None) == 28:
        return "no space left on device"
    return str(text).splitlines()[0][:160] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------------
# reading and validation
# --------------------------------------------------------------------------------------------------
class Verified:
    """Which rows of which series were read through the checksum filter without error, for one
    state of one finished run file (``RUN_DIR/analysis/verified.json``, docs/run-format.md).

    The record names the file by ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``; a copied,
    replaced or written file gets a fresh record. Writing the record is best effort (a read-only
    run directory simply verifies every time)."""

    def __init__(self, path: Path) -> None:
        self.record = path.parent / "analysis" / "verified.json"
        self.identity = self._identity(path)
        self.path = path
        self.rows: dict[str, list[list[int]]] = {}
        try:
            data = json.loads(self.record.read_text())
            if isinstance(data, dict) and data.get("file") == self.identity and isinstance(data.get("rows"), dict):
                self.rows = {k: [[int(a), int(b)] for a, b in v] for k, v in data["rows"].items()}
        except (OSError, ValueError, TypeError):
            pass

    @staticmethod
    def _identity(path: Path) -> list[int]:
        st = path.stat()
        return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]

    def covers(self, name: str, lo: int, hi: int) -> bool:
        return any(a <= lo and hi <= b for a, b in self.rows.get(name, ()))

    def add(self, name: str, lo: int, hi: int) -> None:
        try:
            if self._identity(self.path) != self.identity:  # changed since it was opened: record nothing
                return
        except OSError:
            return
        spans = sorted(self.rows.get(name, []) + [[lo, hi]])
        merged: list[list[int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.rows[name] = merged
        try:
            self.record.parent.mkdir(exist_ok=True)
            tmp = self.record.with_name(f".verified-{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"file": self.identity, "rows": self.rows}))
            os.replace(tmp, self.record)
        except OSError:
            pass


def _raw_rows(ds: h5py.Dataset, lo: int, hi: int) -> np.ndarray | None:
    """Rows ``lo:hi`` of a time-chunked series from its raw chunks (filters skipped), or None when
    the layout is not one this reads (chunks not whole rows, or filters besides Fletcher-32)."""
    chunks = ds.chunks
    filters_besides_checksum = ds.compression is not None or ds.shuffle or ds.scaleoffset is not None
    if chunks is None or tuple(chunks[1:]) != tuple(ds.shape[1:]) or not ds.fletcher32 or filters_besides_checksum:
        return None
    k = chunks[0]
    per_chunk = int(np.prod(chunks))
    out = np.empty((hi - lo, *ds.shape[1:]), dtype=ds.dtype)
    zero = (0,) * (len(chunks) - 1)
    for c in range(lo // k, (hi - 1) // k + 1):
        mask, raw = ds.id.read_direct_chunk((c * k, *zero))
        if mask:
            return None
        block = np.frombuffer(raw, dtype=ds.dtype, count=per_chunk).reshape(chunks)
        a, b = max(lo, c * k), min(hi, (c + 1) * k)
        out[a - lo: b - lo] = block[a - c * k: b - c * k]
    return out


class RunFile:
    """Read-only, validated view of a run file; readable while a writer appends (SWMR)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            raise ProbeError(f"{path.parent} is not a probe run (no {path.name})" if path.parent.exists()
                             else f"run directory {path.parent} does not exist")
        if not path.is_file():
            raise ProbeError(f"{path} is not a file")
        self.f = _open(path)
        try:
            self._validate()
        except ProbeError:
            self.f.close()
            raise
        except (KeyError, ValueError, OSError, RuntimeError, TypeError, IndexError) as exc:
            self.f.close()
            raise _corrupt(path, str(exc)) from None

    # structure ------------------------------------------------------------------------------------
    def _validate(self) -> None:
        f, path = self.f, self.path
        fmt = f.attrs.get("format")
        if fmt != FORMAT_NAME:
            raise ProbeError(f"{path} is an HDF5 file but not a probe run (format attribute {str(fmt)[:40]!r})")
        version = f.attrs.get("schema_version")
        if not isinstance(version, (int, np.integer)) or isinstance(version, bool):
            raise self.damaged("attribute 'schema_version' is not an integer")
        self.version = int(version)
        if self.version > SCHEMA_VERSION:
            raise ProbeError(f"{path} was written with run schema version {self.version}; this probe reads up to "
                             f"version {SCHEMA_VERSION} (upgrade probe)")
        _refuse_foreign_storage(f, self)
        for key, kind in JSON_ATTRS.items():
            value = f.attrs.get(key)
            if value is None:
                raise self.damaged(f"attribute {key!r} is missing")
            try:
                parsed = json.loads(value)
            except (TypeError, ValueError):
                raise self.damaged(f"attribute {key!r} is not JSON") from None
            if not isinstance(parsed, kind):
                raise self.damaged(f"attribute {key!r} is not a JSON {'object' if kind is dict else 'list'}")
            setattr(self, key if key not in ("task",) else "task_spec", parsed)
        if not all(isinstance(p, str) for p in self.parameters):
            raise self.damaged("attribute 'parameters' must list parameter names")
        inputs = self._require("task/inputs", ndim=2)
        labels = self._require("task/labels", ndim=1, integer=True)
        n = labels.shape[0]
        if inputs.shape[0] != n or n > MAX_SAMPLES:
            raise self.damaged(f"task/inputs has {inputs.shape[0]} rows and task/labels {n} (at most {MAX_SAMPLES})")
        self.n_samples = n
        split = {}
        for key in ("train", "val"):
            idx = self.read(self._require(f"split/{key}", ndim=1, integer=True)).astype(np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise self.damaged(f"split/{key} holds indices outside 0..{n - 1}")
            split[key] = idx
        self.split = Split(**split)  # read and checked once, here
        steps_ds = self._require("checkpoints/steps", ndim=1, integer=True)
        self._steps = self.read(steps_ds)
        if np.any(np.diff(self._steps) <= 0) or (self._steps.size and self._steps[0] < 0):
            raise self.damaged("checkpoints/steps do not increase")
        params = self.f.get("checkpoints/params")
        if not isinstance(params, h5py.Group) or len(params) == 0:
            raise self.damaged("group 'checkpoints/params' is missing or empty")
        for name, ds in params.items():
            self._check_series(name, ds)
        if "digest" in self.f["checkpoints"]:
            self._require("checkpoints/digest", ndim=2, integer=True, min_rows=len(self._steps))
        mstep = self._require("metrics/step", ndim=1, integer=True)
        self._metric_steps = self.read(mstep)
        if np.any(np.diff(self._metric_steps) <= 0):
            raise self.damaged("metrics/step do not increase")
        for col in METRIC_COLUMNS:
            self._require(f"metrics/{col}", ndim=1, numeric=True, min_rows=len(self._metric_steps))
        for s in range(2):
            self._require(f"resume/slot{s}/step", ndim=1, integer=True)
            for sub in ("params", "optim", "rng"):
                if not isinstance(self.f.get(f"resume/slot{s}/{sub}"), h5py.Group):
                    raise self.damaged(f"group 'resume/slot{s}/{sub}' is missing")
        if self.version >= 2:
            self._require("status/finished", ndim=1, integer=True)

    def _require(self, key: str, *, ndim: int, integer: bool = False, numeric: bool = False,
                 min_rows: int = 0) -> h5py.Dataset:
        ds = self.f.get(key)
        if not isinstance(ds, h5py.Dataset):
            raise self.damaged(f"dataset {key!r} is missing")
        if len(ds.shape) != ndim:
            raise self.damaged(f"dataset {key!r} has shape {ds.shape}, expected {ndim} dimension(s)")
        kind = ds.dtype.kind
        if integer and kind not in "iu":
            raise self.damaged(f"dataset {key!r} has type {ds.dtype}, expected integers")
        if (numeric or not integer) and kind not in "iuf":
            raise self.damaged(f"dataset {key!r} has type {ds.dtype}, expected numbers")
        if ds.shape[0] < min_rows:
            raise self.damaged(f"dataset {key!r} has {ds.shape[0]} rows, fewer than the {min_rows} committed")
        if ds.size * ds.dtype.itemsize > MAX_ROW_BYTES * 64:
            raise self.damaged(f"dataset {key!r} is implausibly large {ds.shape}")
        return ds

    def _check_series(self, name: str, ds: Any) -> None:
        if not isinstance(ds, h5py.Dataset):
            raise self.damaged(f"checkpoints/params/{name} is not a dataset")
        if ds.dtype.kind != "f" or ds.ndim < 1:
            raise self.damaged(f"checkpoints/params/{name} has type {ds.dtype}, expected floats")
        row = int(np.prod(ds.shape[1:], dtype=np.float64)) * ds.dtype.itemsize
        if row > MAX_ROW_BYTES:
            raise self.damaged(f"checkpoints/params/{name} has an implausible shape {ds.shape}")
        if ds.shape[0] < len(self._steps):
            raise self.damaged(f"checkpoints/params/{name} has {ds.shape[0]} rows for {len(self._steps)} checkpoints")

    def damaged(self, what: str) -> ProbeError:
        return ProbeError(f"{self.path} is damaged: {what}")

    # access -------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self.f.id.valid:
            self.f.close()

    def refresh(self) -> None:
        """See rows committed by a concurrent writer since opening."""
        with self._reading("checkpoints"):
            for ds in (self.f["checkpoints/steps"], self.f["metrics/step"]):
                ds.refresh()
            for ds in self.f["checkpoints/params"].values():
                ds.refresh()
            for ds in self.f["metrics"].values():
                ds.refresh()
            if "digest" in self.f["checkpoints"]:
                self.f["checkpoints/digest"].refresh()
            self._steps = self.read(self.f["checkpoints/steps"])
            self._metric_steps = self.read(self.f["metrics/step"])

    @property
    def steps(self) -> np.ndarray:
        """Steps of the committed checkpoints (read and checked at opening or refresh)."""
        return self._steps

    def n_checkpoints_upto(self, step: int | None) -> int:
        steps = self.steps
        return len(steps) if step is None else int(np.searchsorted(steps, step, side="right"))

    @property
    def tensor_names(self) -> list[str]:
        return list(self.f["checkpoints/params"].keys())

    def series_dataset(self, name: str) -> h5py.Dataset:
        try:
            return self.f["checkpoints/params"][name]
        except KeyError:
            raise ProbeError(f"tensor {name!r} is not saved in this run (saved: {', '.join(self.tensor_names)})") from None

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        try:
            yield
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise ProbeError(f"cannot read {what} from {self.path}: {_read_reason(exc)}") from None

    def read_rows(self, ds: h5py.Dataset, lo: int, hi: int, what: str) -> np.ndarray:
        """Rows ``lo:hi`` of a series, checksums verified once per file state (see :class:`Verified`)."""
        verified = self._verified()
        name = ds.name.lstrip("/")
        if verified is not None and verified.covers(name, lo, hi):
            with self._reading(what):
                fast = _raw_rows(ds, lo, hi)
            if fast is not None:
                return fast
        with self._reading(what):
            rows = np.asarray(ds[lo:hi])
        if verified is not None:
            verified.add(name, lo, hi)
        return rows

    def _verified(self) -> Verified | None:
        if "_verified_record" not in self.__dict__:  # finished runs only: a live run changes under readers
            self._verified_record = Verified(self.path) if self.version >= 2 and self.finished else None
        return self._verified_record

    def read(self, ds: h5py.Dataset, sel: Any = slice(None), step: int | None = None) -> np.ndarray:
        """``ds[sel]`` with checksum failures turned into one error naming the dataset (and step)."""
        what = ds.name.lstrip("/") + (f" at step {step}" if step is not None else "")
        with self._reading(what):
            return np.asarray(ds[sel])

    def metric_steps(self) -> np.ndarray:
        return self._metric_steps

    def metrics(self) -> dict[str, np.ndarray]:
        """Committed metric rows only (``metrics/step`` is the commit record)."""
        n = len(self._metric_steps)
        out = {"step": self._metric_steps.copy()}
        for col in METRIC_COLUMNS:
            out[col] = self.read(self.f["metrics"][col], slice(0, n)).astype(np.float64)
        return out

    def static(self) -> dict[str, np.ndarray]:
        return {k: self.read(v) for k, v in self.f["static"].items()}

    def digests(self, indices: np.ndarray) -> np.ndarray | None:
        """Per-checkpoint content digests ``[len(indices), 16]`` (None for schema-1 files)."""
        if "digest" not in self.f["checkpoints"]:
            return None
        return self.read(self.f["checkpoints/digest"], np.asarray(indices))

    @property
    def finished(self) -> bool:
        if "status" in self.f:
            return bool(self.read(self.f["status/finished"])[0])
        return bool(self.f.attrs.get("finished", False))

    def resume_state(self) -> ResumeState | None:
        """The newest resume slot whose step is a committed checkpoint (normally the last one), or None
        when no slot is usable (then training restarts from step 0, which reproduces the run)."""
        steps = set(self.steps.tolist())
        best: tuple[int, int] | None = None
        for s in range(2):
            step = int(self.read(self.f[f"resume/slot{s}/step"])[0])
            if step in steps and (best is None or step > best[1]):
                best = (s, step)
        if best is None:
            return None
        slot = self.f[f"resume/slot{best[0]}"]
        with self._reading(f"resume/slot{best[0]}"):
            return ResumeState(
                step=best[1],
                params={k: self.read(v) for k, v in slot["params"].items()},
                optim={k: self.read(v) for k, v in _walk(slot["optim"])},
                has_optim=bool(self.read(slot["has_optim"])[0]),
                rng={k: self.read(v) for k, v in slot["rng"].items()},
                schedule=self.read(slot["schedule"]),
            )


def _open(path: Path) -> h5py.File:
    """Open for reading without taking file locks (readers never block the writer).

    A plain open fails fast on a damaged file (an SWMR reader would retry damaged metadata). A file
    flagged "open for writing" is opened in SWMR-read mode (a live or killed SWMR writer); a file
    flagged by a writer that was killed before it switched to SWMR mode has the stale flag cleared.
    """
    from probe.hdf5 import clear_stale_write_flag, held_by_another_process

    try:
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        msg = str(exc)
    if "open for write" not in msg and "already open" not in msg:
        raise _corrupt(path, msg)
    try:
        return h5py.File(path, "r", libver="latest", swmr=True, locking=False)
    except OSError:
        pass
    try:
        busy = held_by_another_process(path)
    except OSError as exc:
        raise ProbeError(f"cannot open {path}: {_reason(exc)}") from None
    if busy:
        raise ProbeError(f"{path} is being written by another process that has not switched to SWMR mode yet; "
                         "try again in a moment")
    try:
        cleared = clear_stale_write_flag(path)
    except OSError as exc:
        raise ProbeError(f"{path} was left marked open for writing by a process that ended, and the mark cannot "
                         f"be cleared ({_reason(exc)}); run 'h5clear -s {path}'") from None
    if not cleared:
        raise _corrupt(path, msg)
    warnings.warn(f"{path} was left marked open for writing by a process that ended; cleared the mark "
                  "(as 'h5clear -s' does; no data changed)", stacklevel=3)
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise _corrupt(path, str(exc)) from None


def _refuse_foreign_storage(f: h5py.File, rf: RunFile) -> None:
    """Refuse anything that would make a read leave the file: external or soft links, virtual
    datasets, external raw storage, named datatypes."""

    def visit(group: h5py.Group, prefix: str) -> None:
        for name in group:
            link = group.get(name, getlink=True)
            where = f"{prefix}{name}"
            if not isinstance(link, h5py.HardLink):
                raise ProbeError(f"{rf.path} is refused: {where!r} is a {type(link).__name__}; a run file holds only "
                                 "its own data")
            obj = group[name]
            if isinstance(obj, h5py.Group):
                visit(obj, where + "/")
            elif isinstance(obj, h5py.Dataset):
                if obj.is_virtual or obj.external:
                    raise ProbeError(f"{rf.path} is refused: dataset {where!r} reads data from outside the file "
                                     f"({'virtual dataset' if obj.is_virtual else 'external storage'})")
            else:
                raise ProbeError(f"{rf.path} is refused: {where!r} is not a group or dataset")

    visit(f, "")


def _corrupt(path: Path, message: str) -> ProbeError:
    return ProbeError(f"cannot read run file {path}: corrupt or truncated HDF5 ({message.splitlines()[0][:120]})")


def _read_reason(exc: BaseException) -> str:
    text = str(exc)
    if "filter" in text.lower() or "checksum" in text.lower() or "fletcher" in text.lower():
        return "checksum mismatch (the data on disk changed after they were written)"
    return text.splitlines()[0][:120] if text else type(exc).__name__


def _walk(group: h5py.Group, prefix: str = "") -> Iterator[tuple[str, h5py.Dataset]]:
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            yield from _walk(item, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", item
