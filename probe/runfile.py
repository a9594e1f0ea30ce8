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
checksum becomes one :class:`ProbeError` naming the dataset and the step. The digests are checked
against the tensors before they key anything (:meth:`RunFile.digests`), so tensors edited in place
with their digests kept are an error, not a stale cache hit. Checksums and digests are verified
once per file state: the rows verified are recorded in ``RUN_DIR/analysis/verified.json`` against
the file's identity (device, inode, size, modification and change times) and sealed with the local
key (:mod:`probe.integrity`); later reads of those rows of an unchanged, finished file take the raw
chunks and skip the filter (:class:`Verified`). Any write to the file changes its change time and
voids the record; a record edited or forged without the key is ignored.

Validation. The schema is described once in :mod:`probe.schema`: the writer lays a file out from
a :class:`~probe.schema.RunLayout` and checks the result against the description before renaming
it into place; :class:`RunFile` checks on opening that every required group, dataset and attribute
is there with its type and rank, that indices are inside the task table, that steps increase, and
that the file holds no external links, virtual datasets or external storage. It refuses sizes that
would need huge allocations before reading them: a dataset may not declare more bytes than the
file stores for it (unwritten chunks read as zeros), split sizes are bounded by the task, resume
slots by the parameters.
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

from probe import integrity
from probe.errors import ProbeError, RunWriteError
from probe.schema import (DIGEST_BYTES, FORMAT_NAME, MAX_ROW_BYTES, MAX_SAMPLES, METRIC_COLUMNS, SCHEMA_VERSION,
                          SLOTS, RunHeader, RunLayout, check_size, check_structure, shape_problem, walk)
from probe.tasks import Split

__all__ = ["FORMAT_NAME", "SCHEMA_VERSION", "METRIC_COLUMNS", "DIGEST_BYTES", "RUN_FILENAME", "RunFile", "RunWriter",
           "ResumeState", "RunHeader", "RunLayout", "Verified", "digest", "package_versions", "run_file_path"]

RUN_FILENAME = "run.h5"
VERIFY_BLOCK_BYTES = 1 << 26  # digests are checked this many bytes of checkpoints at a time


def run_file_path(run_dir: str | os.PathLike[str]) -> Path:
    """``RUN_DIR/run.h5``; accepts the file itself too."""
    path = Path(run_dir)
    if path.is_file() and path.suffix == ".h5":
        return path
    return path / RUN_FILENAME


def _time_chunk(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One checkpoint per chunk: a commit writes only new chunks and never rewrites one holding
    committed rows, so a kill in the middle of a commit (a large write the kernel may cut short)
    cannot tear a checkpoint that ``checkpoints/steps`` already lists."""
    return (1, *shape)


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
    if maxshape is None:  # an empty axis (e.g. an empty validation split) cannot hold a chunk unless it may grow
        maxshape = tuple(None if s == 0 else s for s in shape)
    ds = g.create_dataset(name, shape=shape, maxshape=maxshape, dtype=dtype, chunks=chunks, fletcher32=True)
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
    def create(cls, path: Path, layout: RunLayout, *, copy_from: "RunFile | None" = None,
               resume: ResumeState | None = None) -> "RunWriter":
        """Create a run file at ``path`` from ``layout``: written whole under a temporary name, checked
        against the schema (:func:`probe.schema.check_structure`), switched to SWMR mode, then renamed
        into place, so ``path`` always holds a complete, resumable file.

        With ``copy_from`` the committed checkpoints and metrics of an existing run (up to
        ``resume.step``) are copied, their digests checked, and ``resume`` fills slot 0: this is how
        ``--resume`` rewrites a file that was killed mid-write, without touching the original until
        the copy is complete.
        """
        if resume is not None:
            bad = layout.resume_problem(resume.params, resume.optim, resume.rng, resume.schedule)
            if bad:
                raise ProbeError(f"the resume state does not fit the run: {bad}")
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            f = h5py.File(tmp, "w", libver="latest")
        except OSError as exc:
            raise ProbeError(f"cannot create {tmp}: {_reason(exc)}") from None
        try:
            with _writing(tmp):
                cls._layout(f, layout, copy_from, resume)
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
        return cls(path, f, list(layout.saved), next_slot=1 if resume is not None else 0)

    @staticmethod
    def _layout(f: h5py.File, layout: RunLayout, copy_from: "RunFile | None", resume: ResumeState | None) -> None:
        for key, value in layout.header.to_attrs().items():
            f.attrs[key] = value
        split = {"train": layout.split["train"], "val": layout.split["val"]}
        for group, arrays in (("task", layout.task_arrays), ("split", split), ("static", layout.static)):
            g = f.create_group(group)
            for key, arr in arrays.items():
                _dataset(g, key, arr)
        saved = list(layout.saved)
        ck = f.create_group("checkpoints")
        n_ck = 0 if copy_from is None else copy_from.n_checkpoints_upto(resume.step if resume else None)
        steps = _dataset(ck, "steps", shape=(n_ck,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
        dig = _dataset(ck, "digest", shape=(n_ck, DIGEST_BYTES), maxshape=(None, DIGEST_BYTES), dtype=np.uint8,
                       chunks=(1024, DIGEST_BYTES))
        if n_ck:
            assert copy_from is not None
            steps[:] = copy_from.steps[:n_ck]
        pg = ck.create_group("params")
        dtype = np.dtype(layout.series_dtype)
        copied: dict[str, h5py.Dataset] = {}
        for name in saved:
            shape = tuple(layout.param_shapes[name])
            ds = _dataset(pg, name, shape=(n_ck, *shape), maxshape=(None, *shape), dtype=dtype,
                          chunks=_time_chunk(shape))
            copied[name] = ds
        if n_ck:
            assert copy_from is not None
            if sorted(copy_from.tensor_names) != sorted(saved):
                raise ProbeError(f"{copy_from.path} saved {', '.join(copy_from.tensor_names)}; the run saves "
                                 f"{', '.join(saved)}")
            for lo in range(0, n_ck, 256):
                hi = min(n_ck, lo + 256)
                rows = {name: copy_from.read(copy_from.series_dataset(name), slice(lo, hi)) for name in saved}
                for name in saved:
                    copied[name][lo:hi] = rows[name]
                fresh = np.stack([digest([rows[n][i] for n in saved]) for i in range(hi - lo)])
                copy_from.check_digests(np.arange(lo, hi), fresh)  # never launder edited tensors
                dig[lo:hi] = fresh
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
        slot_dtype = np.dtype(layout.slot_dtype)
        for s in SLOTS:
            # Storage is allocated here, before SWMR writing starts: SWMR may only overwrite
            # allocated data or append chunks.
            sg = rg.create_group(f"slot{s}")
            _dataset(sg, "step", np.array([-1], dtype=np.int64))
            _dataset(sg, "has_optim", np.array([0], dtype=np.int8))
            spg = sg.create_group("params")
            for name, shape in layout.param_shapes.items():
                _dataset(spg, name, np.zeros(shape, slot_dtype))
            og = sg.create_group("optim")
            for key, shape in layout.optim_shapes.items():  # torch keeps these in float32: exact
                _dataset(og, key, np.zeros(shape, slot_dtype))
            rgg = sg.create_group("rng")
            for key, size in layout.rng_sizes.items():
                _dataset(rgg, key, np.zeros(size, np.uint8))
            _dataset(sg, "schedule", np.zeros(layout.schedule_size, np.float64))
        _dataset(f.create_group("status"), "finished", np.array([0], dtype=np.int8))

        def wrong(what: str) -> ProbeError:  # the writer broke its own schema: a bug, not a user error
            raise AssertionError(f"the new run file does not follow the schema: {what}")

        check_structure(f, SCHEMA_VERSION, wrong)

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
        for _, ds in walk(slot[group]):
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
    """Which rows of which series were read through the checksum filter without error, and which
    checkpoints' digests were checked against their tensors (``checkpoints/digest``), for one state
    of one run file (``RUN_DIR/analysis/verified.json``, docs/run-format.md).

    The record names the file by ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)`` and is
    sealed with the local key (:mod:`probe.integrity`): a copied, replaced or written file gets a
    fresh record, and a record edited or written without the key is ignored. Only finished runs
    keep the record on disk (``persist``); a live run's is kept in memory for one open file. Writing
    it is best effort (a read-only run directory simply verifies every time)."""

    def __init__(self, path: Path, persist: bool) -> None:
        self.record = path.parent / "analysis" / "verified.json"
        self.path = path
        self.persist = persist
        self.identity = self._identity(path)
        self.rows: dict[str, list[list[int]]] = {}
        self._dirty = False
        if persist:
            self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return
        if not isinstance(data, dict) or data.get("file") != self.identity or not isinstance(data.get("rows"), dict):
            return
        if not integrity.verify(data.get("seal"), *self._sealed(data["rows"])):
            return
        try:
            self.rows = {str(k): [[int(a), int(b)] for a, b in v] for k, v in data["rows"].items()}
        except (TypeError, ValueError):
            self.rows = {}

    def _sealed(self, rows: Any) -> tuple[str, str, str]:
        return "verified", json.dumps(self.identity), json.dumps(rows, sort_keys=True, separators=(",", ":"))

    @staticmethod
    def _identity(path: Path) -> list[int]:
        st = path.stat()
        return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]

    def covers(self, name: str, lo: int, hi: int) -> bool:
        return any(a <= lo and hi <= b for a, b in self.rows.get(name, ()))

    def add(self, name: str, lo: int, hi: int) -> None:
        """Record rows ``lo:hi`` of ``name`` as verified (in memory; :meth:`save` writes the record)."""
        spans = sorted(self.rows.get(name, []) + [[lo, hi]])
        merged: list[list[int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.rows[name] = merged
        self._dirty = True

    def save(self) -> None:
        if not (self.persist and self._dirty):
            return
        self._dirty = False
        try:
            if self._identity(self.path) != self.identity:  # changed since it was opened: record nothing
                return
        except OSError:
            return
        seal = integrity.seal(*self._sealed(self.rows))
        if seal is None:
            return
        try:
            self.record.parent.mkdir(exist_ok=True)
            tmp = self.record.with_name(f".verified-{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"file": self.identity, "rows": self.rows, "seal": seal}))
            os.replace(tmp, self.record)
        except OSError:
            pass


DIGEST_ROWS = "checkpoints/digest"  # the Verified entry of checkpoints whose digest matched their tensors


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


def _catch_up(ds: Any, rows: int, tries: int = 20, pause: float = 0.05) -> None:
    """Refresh ``ds`` until it shows ``rows`` rows (at most ``tries`` times): an SWMR reader sees each
    dataset's extent as of when it read that object's metadata, so a payload the writer flushed before
    its commit record can still look shorter here for a moment. Only a file that stays short is damaged."""
    import time

    for _ in range(tries):
        try:
            ds.refresh()
        except (OSError, ValueError):  # not opened in SWMR mode: its extent cannot change
            return
        if ds.shape[0] >= rows:
            return
        time.sleep(pause)


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
        f = self.f
        self.header = RunHeader.from_attrs(f.attrs, str(self.path), self.damaged)
        self.version = self.header.schema_version
        _refuse_foreign_storage(f, self)
        self.config, self.task_spec = self.header.config, self.header.task
        self.symbols, self.parameters = list(self.header.symbols), list(self.header.parameters)
        self.packages = self.header.packages
        self._specs = check_structure(f, self.version, self.damaged)
        self._file_bytes = self.path.stat().st_size
        for key, spec in self._specs.items():  # whatever is read whole is checked before it is read
            if spec.rows == "all":
                check_size(key, f[key], self._file_bytes, self.damaged)
        inputs, labels = f["task/inputs"], f["task/labels"]
        n = labels.shape[0]
        if inputs.shape[0] != n or n > MAX_SAMPLES:
            raise self.damaged(f"task/inputs has {inputs.shape[0]} rows and task/labels {n} (at most {MAX_SAMPLES})")
        self.n_samples = n
        sizes = {key: f[f"split/{key}"].shape[0] for key in ("train", "val")}
        if sizes["train"] + sizes["val"] > n:
            raise self.damaged(f"split/train and split/val hold {sizes['train']} + {sizes['val']} indices for a task "
                               f"of {n} samples")
        split = {}
        for key in ("train", "val"):
            idx = self.read(f[f"split/{key}"]).astype(np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise self.damaged(f"split/{key} holds indices outside 0..{n - 1}")
            split[key] = idx
        self.split = Split(**split)  # read and checked once, here
        self._steps = self.read(f["checkpoints/steps"])
        if np.any(np.diff(self._steps) <= 0) or (self._steps.size and self._steps[0] < 0):
            raise self.damaged("checkpoints/steps do not increase")
        params = f["checkpoints/params"]
        if len(params) == 0:
            raise self.damaged("group 'checkpoints/params' is empty")
        for name, ds in params.items():
            self._check_series(name, ds)
        self._metric_steps = self.read(f["metrics/step"])
        if np.any(np.diff(self._metric_steps) <= 0):
            raise self.damaged("metrics/step do not increase")
        self._check_committed()
        self._check_slots()

    def _check_committed(self) -> None:
        """Every series holds the rows its commit record covers, in no more bytes than the file stores."""
        committed = {"checkpoints": len(self._steps), "metrics": len(self._metric_steps)}
        for key, spec in self._specs.items():
            if spec.rows in committed:
                ds, rows = self.f[key], committed[spec.rows]
                if ds.shape[0] < rows:
                    _catch_up(ds, rows)  # a live writer's extent can reach this reader after its commit record
                if ds.shape[0] < rows:
                    raise self.damaged(f"dataset {key!r} has {ds.shape[0]} rows, fewer than the {rows} committed")
                check_size(key, ds, self._file_bytes, self.damaged, rows=rows)

    def _check_series(self, name: str, ds: Any) -> None:
        row = int(np.prod(ds.shape[1:], dtype=np.float64)) * ds.dtype.itemsize
        if row > MAX_ROW_BYTES:
            raise self.damaged(f"checkpoints/params/{name} has an implausible shape {ds.shape}")
        if name not in self.parameters:
            raise self.damaged(f"checkpoints/params/{name} is not one of the run's parameters")

    def _check_slots(self) -> None:
        """Both resume slots hold every parameter (shaped as its saved series) and the same state."""
        series = {name: tuple(ds.shape[1:]) for name, ds in self.f["checkpoints/params"].items()}
        shapes = []
        for s in SLOTS:
            slot = self.f[f"resume/slot{s}"]
            params = {k: tuple(v.shape) for k, v in slot["params"].items()}
            expected = {n: series.get(n, params.get(n, ())) for n in self.parameters}
            bad = shape_problem(params, expected, "parameter")
            if bad:
                raise self.damaged(f"resume/slot{s}: {bad}")
            shapes.append({f"{sub}/{k}": tuple(v.shape) for sub in ("params", "optim", "rng")
                           for k, v in walk(slot[sub])} | {"schedule": tuple(slot["schedule"].shape)})
        if shapes[0] != shapes[1]:
            diff = next(k for k in sorted(set(shapes[0]) | set(shapes[1])) if shapes[0].get(k) != shapes[1].get(k))
            raise self.damaged(f"resume/slot0 and resume/slot1 differ in {diff!r}")

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
            if self.version >= 2:
                self.f["checkpoints/digest"].refresh()
            self._file_bytes = self.path.stat().st_size
            for key in ("checkpoints/steps", "metrics/step"):
                check_size(key, self.f[key], self._file_bytes, self.damaged)
            steps, metric_steps = self.read(self.f["checkpoints/steps"]), self.read(self.f["metrics/step"])
        if np.any(np.diff(steps) <= 0) or np.any(np.diff(metric_steps) <= 0):
            raise self.damaged("checkpoints/steps or metrics/step do not increase")
        self._steps, self._metric_steps = steps, metric_steps
        self._check_committed()

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
        rows = self._rows(ds, lo, hi, what)
        self._verified().save()
        return rows

    def _rows(self, ds: h5py.Dataset, lo: int, hi: int, what: str) -> np.ndarray:
        verified = self._verified()
        name = ds.name.lstrip("/")
        if verified.persist and verified.covers(name, lo, hi):
            with self._reading(what):
                fast = _raw_rows(ds, lo, hi)
            if fast is not None:
                return fast
        with self._reading(what):
            rows = np.asarray(ds[lo:hi])
        verified.add(name, lo, hi)
        return rows

    def _verified(self) -> Verified:
        if "_verified_record" not in self.__dict__:  # kept on disk for finished runs only: a live run changes
            self._verified_record = Verified(self.path, persist=self.version >= 2 and self.finished)
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
        """Per-checkpoint content digests ``[len(indices), 16]`` (None for schema version 1 files),
        checked against the stored tensors once per file state first: a digest that no longer
        matches its checkpoint's tensors is an error naming the step, never a key for stale results."""
        if self.version < 2:  # digests are part of schema version 2
            return None
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return np.zeros((0, DIGEST_BYTES), np.uint8)
        if idx.min() < 0 or idx.max() >= len(self._steps):
            raise ProbeError(f"checkpoint indices must be in 0..{len(self._steps) - 1}")
        uniq, inverse = np.unique(idx, return_inverse=True)
        stored = self.read(self.f["checkpoints/digest"], uniq)
        self._verify_digests(uniq, stored)
        return stored[inverse]

    def _verify_digests(self, uniq: np.ndarray, stored: np.ndarray) -> None:
        verified = self._verified()
        todo = np.array([i for i in uniq.tolist() if not verified.covers(DIGEST_ROWS, i, i + 1)], dtype=np.int64)
        if todo.size == 0:
            return
        where = {int(i): k for k, i in enumerate(uniq.tolist())}
        names = self.digest_order
        datasets = [self.series_dataset(n) for n in names]
        row_bytes = sum(int(np.prod(ds.shape[1:])) * ds.dtype.itemsize for ds in datasets)
        block = max(1, VERIFY_BLOCK_BYTES // max(1, row_bytes))
        breaks = np.flatnonzero(np.diff(todo) != 1) + 1
        for run in np.split(todo, breaks):
            for lo in range(int(run[0]), int(run[-1]) + 1, block):
                hi = min(int(run[-1]) + 1, lo + block)
                span = f"steps {int(self._steps[lo])}..{int(self._steps[hi - 1])}"
                rows = [self._rows(ds, lo, hi, f"{ds.name.lstrip('/')} at {span}") for ds in datasets]
                fresh = np.stack([digest([r[j] for r in rows]) for j in range(hi - lo)])
                self.check_digests(np.arange(lo, hi), fresh, stored[[where[i] for i in range(lo, hi)]])
                verified.add(DIGEST_ROWS, lo, hi)
        verified.save()

    @property
    def digest_order(self) -> list[str]:
        """The saved tensors in the order their bytes enter a checkpoint's digest (model order)."""
        saved = set(self.tensor_names)
        return [n for n in self.parameters if n in saved]

    def check_digests(self, indices: np.ndarray, fresh: np.ndarray, stored: np.ndarray | None = None) -> None:
        """Compare digests computed from the tensors of checkpoints ``indices`` with the stored ones."""
        if self.version < 2:
            return
        if stored is None:
            stored = self.read(self.f["checkpoints/digest"], slice(int(indices[0]), int(indices[-1]) + 1))
        bad = np.flatnonzero(np.any(np.asarray(fresh) != np.asarray(stored), axis=1))
        if bad.size:
            step = int(self._steps[int(indices[int(bad[0])])])
            raise self.damaged(f"checkpoints/digest at step {step} does not match the tensors in checkpoints/params "
                               "(they were changed after they were written)")

    @property
    def finished(self) -> bool:
        if "status" in self.f:
            return bool(self.read(self.f["status/finished"])[0])
        return bool(self.f.attrs.get("finished", False))

    def resume_state(self) -> ResumeState | None:
        """The newest resume slot whose step is a committed checkpoint (normally the last one), or None
        when no slot is usable (then training restarts from step 0, which reproduces the run). The
        slots' shapes and sizes were checked at opening."""
        steps = set(self.steps.tolist())
        best: tuple[int, int] | None = None
        for s in SLOTS:
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
                optim={k: self.read(v) for k, v in walk(slot["optim"])},
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
