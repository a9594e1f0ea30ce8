"""The run file: one HDF5 file per run (``RUN_DIR/run.h5``), layout documented in docs/run-format.md.

Crash safety. The writer uses HDF5's single-writer/multiple-reader mode (SWMR): every dataset is
created up front, series grow by resizing, and after each checkpoint the writer flushes in a fixed
order: tensor rows first, the commit record (``checkpoints/steps`` or ``metrics/step``) last. A
reader, or a resume after ``kill -9``, trusts only rows the commit record covers. Resume state
(full parameters, optimizer moments, RNG states) is double-buffered in ``resume/slot0`` and
``resume/slot1``; a slot's ``step`` is written last, so the slot of the last committed checkpoint is
always whole. Nothing is pickled: every value is a numeric dataset or a JSON string attribute.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from probe.errors import ProbeError

RUN_FILENAME = "run.h5"
FORMAT_NAME = "probe-run"
SCHEMA_VERSION = 1
CHUNK_BYTES = 1 << 18  # whole chunks are allocated at once: keep small runs small
METRIC_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")


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


@dataclass
class ResumeState:
    """Everything needed to continue training bit-identically from ``step``."""

    step: int
    params: dict[str, np.ndarray]  # full parameters (and buffers) by name
    optim: dict[str, np.ndarray]  # flattened optimizer state: "<param>/<key>"
    has_optim: bool
    rng: dict[str, np.ndarray]  # uint8 generator states
    schedule: np.ndarray  # float64 [k] schedule state (last checkpoint's metrics)


class RunWriter:
    """Appends checkpoints and metrics to a run file in SWMR mode."""

    def __init__(self, path: Path, f: h5py.File, saved: list[str], slot_names: list[str]) -> None:
        self.path = path
        self.f = f
        self.saved = saved
        self.slot_names = slot_names
        self._pending: list[dict[str, float]] = []
        self._next_slot = 0
        self._last_flush = time.monotonic()

    # creation ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, *, attrs: dict[str, Any], task_arrays: dict[str, np.ndarray],
               split: dict[str, np.ndarray], static: dict[str, np.ndarray],
               param_shapes: dict[str, tuple[int, ...]], saved: list[str], series_dtype: str,
               optim_shapes: dict[str, tuple[int, ...]], rng_sizes: dict[str, int], schedule_size: int,
               copy_from: "RunFile | None" = None, resume: ResumeState | None = None) -> "RunWriter":
        """Create a fresh run file (written to a temporary name, then renamed into place).

        With ``copy_from`` the committed checkpoints and metrics of an existing run (up to
        ``resume.step``) are copied, and ``resume`` fills slot 0: this is how ``--resume`` rewrites a
        file that was killed mid-write, without touching the original until the copy is complete.
        """
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            tmp.unlink()
        f = h5py.File(tmp, "w", libver="latest")
        try:
            for key, value in attrs.items():
                f.attrs[key] = value
            g = f.create_group("task")
            for key, arr in task_arrays.items():
                g.create_dataset(key, data=arr)
            g = f.create_group("split")
            for key, arr in split.items():
                g.create_dataset(key, data=arr)
            g = f.create_group("static")
            for key, arr in static.items():
                g.create_dataset(key, data=arr)
            ck = f.create_group("checkpoints")
            n_ck = 0 if copy_from is None else copy_from.n_checkpoints_upto(resume.step if resume else None)
            ck.create_dataset("steps", shape=(n_ck,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
            if n_ck:
                ck["steps"][:] = copy_from.steps[:n_ck]
            pg = ck.create_group("params")
            dtype = np.dtype(series_dtype)
            for name in saved:
                shape = param_shapes[name]
                ds = pg.create_dataset(name, shape=(n_ck, *shape), maxshape=(None, *shape), dtype=dtype,
                                       chunks=_time_chunk(shape, dtype.itemsize))
                if n_ck:
                    src = copy_from.f["checkpoints/params"][name]
                    for lo in range(0, n_ck, 256):
                        hi = min(n_ck, lo + 256)
                        ds[lo:hi] = src[lo:hi]
            mg = f.create_group("metrics")
            n_m = 0
            if copy_from is not None:
                m_steps = copy_from.metric_steps()
                n_m = int(np.searchsorted(m_steps, resume.step, side="left")) if resume else len(m_steps)
            mg.create_dataset("step", shape=(n_m,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
            for col in METRIC_COLUMNS:
                mg.create_dataset(col, shape=(n_m,), maxshape=(None,), dtype=np.float64, chunks=(4096,))
            if n_m:
                mg["step"][:] = copy_from.f["metrics/step"][:n_m]
                for col in METRIC_COLUMNS:
                    mg[col][:] = copy_from.f["metrics"][col][:n_m]
            rg = f.create_group("resume")
            for s in range(2):
                sg = rg.create_group(f"slot{s}")
                sg.create_dataset("step", data=np.array([-1], dtype=np.int64))
                sg.create_dataset("has_optim", data=np.array([0], dtype=np.int8))
                # Storage is allocated here, before SWMR writing starts: SWMR may only overwrite
                # allocated data or append chunks, never allocate contiguous storage later.
                spg = sg.create_group("params")
                slot_dtype = np.float64 if series_dtype == "float64" else np.float32
                for name, shape in param_shapes.items():
                    spg.create_dataset(name, data=np.zeros(shape, slot_dtype))
                og = sg.create_group("optim")
                for key, shape in optim_shapes.items():  # torch keeps these in float32: exact
                    og.create_dataset(key, data=np.zeros(shape, slot_dtype))
                rgg = sg.create_group("rng")
                for key, size in rng_sizes.items():
                    rgg.create_dataset(key, data=np.zeros(size, np.uint8))
                sg.create_dataset("schedule", data=np.zeros(schedule_size, np.float64))
            f.attrs["finished"] = False
            f.flush()
            f.close()
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
        f = h5py.File(path, "r+", libver="latest")
        f.swmr_mode = True
        writer = cls(path, f, saved, list(param_shapes))
        if resume is not None:
            writer.write_resume(resume)
        return writer

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
        """Commit one checkpoint: metrics, tensor rows and resume slot first, ``steps`` last."""
        self.flush_metrics()
        self.write_resume(resume)
        pg = self.f["checkpoints/params"]
        n = self.f["checkpoints/steps"].shape[0]
        for name in self.saved:
            ds = pg[name]
            ds.resize((n + 1, *ds.shape[1:]))
            ds[n] = series[name]
            ds.flush()
        steps = self.f["checkpoints/steps"]
        steps.resize((n + 1,))
        steps[n] = step
        steps.flush()

    def write_resume(self, state: ResumeState) -> None:
        slot = self.f[f"resume/slot{self._next_slot}"]
        self._next_slot = 1 - self._next_slot
        slot["step"][0] = -1
        slot["step"].flush()
        for name, arr in state.params.items():
            slot["params"][name][...] = arr
        for key, arr in state.optim.items():
            slot["optim"][key][...] = arr
        for key, arr in state.rng.items():
            ds = slot["rng"][key]
            ds[...] = np.zeros(ds.shape, np.uint8)
            ds[: arr.shape[0]] = arr
        slot["schedule"][...] = state.schedule
        slot["has_optim"][0] = int(state.has_optim)
        for group in ("params", "optim", "rng"):
            for _, ds in _walk(slot[group]):
                ds.flush()
        slot["schedule"].flush()
        slot["has_optim"].flush()
        slot["step"][0] = state.step
        slot["step"].flush()

    def close(self, finished: bool) -> None:
        """Flush and close; a run that reached its last step is marked ``finished``."""
        if self.f.id.valid:
            self.flush_metrics()
            self.f.close()
        with h5py.File(self.path, "r+", libver="latest") as f:
            f.attrs["finished"] = finished


class RunFile:
    """Read-only view of a run file. Opens in SWMR-read mode so a run can be read while written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            raise ProbeError(f"{path.parent} is not a probe run (no {path.name})" if path.parent.exists()
                             else f"run directory {path.parent} does not exist")
        # Plain read first: a damaged file then fails fast (an SWMR reader retries damaged metadata,
        # waiting for a writer). Only a file flagged as open for writing (a live or killed
        # writer) is opened in SWMR-read mode.
        try:
            self.f = h5py.File(path, "r")
        except OSError as exc:
            msg = str(exc)
            if "open for write" in msg or "unable to lock" in msg.lower():
                try:
                    self.f = h5py.File(path, "r", libver="latest", swmr=True)
                except OSError as exc2:
                    msg = str(exc2)
                else:
                    msg = ""
            if msg:
                raise _corrupt(path, msg) from None
        try:
            fmt = self.f.attrs.get("format")
            if fmt != FORMAT_NAME:
                raise ProbeError(f"{path} is an HDF5 file but not a probe run (format attribute {fmt!r})")
            version = int(self.f.attrs.get("schema_version", -1))
            if version > SCHEMA_VERSION:
                raise ProbeError(f"{path} was written with run schema version {version}; this probe "
                                 f"reads up to version {SCHEMA_VERSION} (upgrade probe)")
            for key in ("checkpoints/steps", "metrics/step", "split/train", "split/val"):
                if key not in self.f:
                    raise ProbeError(f"{path} is damaged: dataset {key!r} is missing")
            self.config: dict[str, Any] = json.loads(self.f.attrs["config"])
            self.task_spec: dict[str, Any] = json.loads(self.f.attrs["task"])
        except ProbeError:
            self.f.close()
            raise
        except (KeyError, ValueError, OSError, RuntimeError) as exc:
            self.f.close()
            raise _corrupt(path, str(exc)) from None

    def close(self) -> None:
        self.f.close()

    def refresh(self) -> None:
        """See rows appended by a concurrent writer since opening."""
        for ds in (self.f["checkpoints/steps"], self.f["metrics/step"]):
            ds.refresh()
        for ds in self.f["checkpoints/params"].values():
            ds.refresh()
        for ds in self.f["metrics"].values():
            ds.refresh()

    @property
    def steps(self) -> np.ndarray:
        return np.asarray(self.f["checkpoints/steps"][:], dtype=np.int64)

    def n_checkpoints_upto(self, step: int | None) -> int:
        steps = self.steps
        return len(steps) if step is None else int(np.searchsorted(steps, step, side="right"))

    @property
    def tensor_names(self) -> list[str]:
        return list(self.f["checkpoints/params"].keys())

    def tensor_series(self, name: str) -> h5py.Dataset:
        try:
            return self.f["checkpoints/params"][name]
        except KeyError:
            raise ProbeError(f"tensor {name!r} is not saved in this run{_names(self.tensor_names)}") from None

    def metric_steps(self) -> np.ndarray:
        return np.asarray(self.f["metrics/step"][:], dtype=np.int64)

    def metrics(self) -> dict[str, np.ndarray]:
        n = self.f["metrics/step"].shape[0]
        out = {"step": self.metric_steps()}
        for col in METRIC_COLUMNS:
            out[col] = np.asarray(self.f["metrics"][col][:n])
        return out

    def static(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v[...]) for k, v in self.f["static"].items()}

    def resume_state(self) -> ResumeState | None:
        """The resume slot matching the last committed checkpoint, or None if there is none."""
        steps = self.steps
        if len(steps) == 0:
            return None
        last = int(steps[-1])
        for s in range(2):
            slot = self.f[f"resume/slot{s}"]
            if int(slot["step"][0]) == last:
                return ResumeState(
                    step=last,
                    params={k: np.asarray(v[...]) for k, v in slot["params"].items()},
                    optim={k: np.asarray(v[...]) for k, v in _walk(slot["optim"])},
                    has_optim=bool(slot["has_optim"][0]),
                    rng={k: np.asarray(v[...]) for k, v in slot["rng"].items()},
                    schedule=np.asarray(slot["schedule"][...]),
                )
        raise ProbeError(f"{self.path} is damaged: no resume state for the last checkpoint (step {last})")


def _corrupt(path: Path, message: str) -> ProbeError:
    return ProbeError(f"cannot read run file {path}: corrupt or truncated HDF5 ({message.splitlines()[0][:120]})")


def _walk(group: h5py.Group, prefix: str = "") -> Iterator[tuple[str, h5py.Dataset]]:
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            yield from _walk(item, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", item


def _names(names: list[str]) -> str:
    return f" (saved: {', '.join(names)})"
