"""The Run loading API: ``run = probe.load_run(RUN_DIR)``.

A :class:`Run` is a read-only view of one run file: its config, task, split, checkpoint steps,
per-step training metrics, and the checkpointed tensors, read lazily (one checkpoint, or one tensor
across time in chunks) so a long series never has to fit in memory. ``Run`` is the one owner of
step selection (:func:`select_steps`) and of reads from the run file; a :class:`Checkpoint` is one
saved step of any checkpoint series (a run, or arrays handed to the analyses).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol, runtime_checkable

import numpy as np

from probe.config import TrainConfig, UnknownSectionError
from probe.errors import ProbeError, valid
from probe.runfile import RunFile, run_file_path
from probe.tasks import Split, Task, task_from_spec

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from probe.models.base import ProbeModel


# --------------------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------------------
def select_steps(steps: np.ndarray, spec: Any = "all") -> np.ndarray:
    """Checkpoint indices, increasing and without repeats, for ``all``, ``first``, ``last``,
    ``START:STOP[:STRIDE]`` (steps, inclusive; every STRIDE-th checkpoint in that range), a comma
    list of steps and ``first``/``last`` (in any order; sorted and de-duplicated), or a list of ints.
    Errors name the parameter ``steps``."""
    steps = np.asarray(steps)
    if len(steps) == 0:
        raise ProbeError("the run has no checkpoints yet")
    if spec is None or (isinstance(spec, str) and spec.strip() == "all"):
        return np.arange(len(steps))
    if isinstance(spec, str):
        spec = spec.strip()
        if not spec:
            raise ProbeError("empty selection (use all, first, last, START:STOP[:STRIDE] or a list of steps)",
                             param="steps")
    if isinstance(spec, str) and ":" in spec:
        parts = spec.split(":")
        if len(parts) > 3:
            raise ProbeError(f"{spec!r}: expected START:STOP[:STRIDE]", param="steps")
        try:
            lo = int(parts[0]) if parts[0] else int(steps[0])
            hi = int(parts[1]) if parts[1] else int(steps[-1])
            stride = int(parts[2]) if len(parts) == 3 and parts[2] else 1
        except ValueError:
            raise ProbeError(f"{spec!r}: START, STOP and STRIDE must be integers", param="steps") from None
        if stride < 1:
            raise ProbeError(f"{spec!r}: STRIDE must be >= 1", param="steps")
        idx = np.flatnonzero((steps >= lo) & (steps <= hi))[::stride]
        if idx.size == 0:
            raise ProbeError(f"{spec!r} selects no checkpoint (checkpoints {steps[0]}..{steps[-1]})", param="steps")
        return idx
    wanted = spec.split(",") if isinstance(spec, str) else list(np.atleast_1d(spec))
    if not wanted:
        raise ProbeError("empty list of steps", param="steps")
    out = []
    for w in wanted:
        w = w.strip() if isinstance(w, str) else w
        if w in ("first", "last"):
            out.append(0 if w == "first" else len(steps) - 1)
            continue
        try:
            if isinstance(w, (float, np.floating)) and not float(w).is_integer():
                raise ValueError(w)  # a step is a whole number; int() would truncate it
            s = int(w)
        except (TypeError, ValueError, OverflowError):
            raise ProbeError(f"{str(w)[:40]!r} is not a step (use all, first, last, START:STOP:STRIDE or a list)",
                             param="steps") from None
        i = int(np.searchsorted(steps, s))
        if i >= len(steps) or steps[i] != s:
            near = sorted({int(steps[max(i - 1, 0)]), int(steps[min(i, len(steps) - 1)])})
            raise ProbeError(f"step {s} is not a checkpoint (checkpoints {steps[0]}..{steps[-1]}, {len(steps)} in all; "
                             f"nearest: {', '.join(map(str, near))})", param="steps")
        out.append(i)
    return np.unique(np.asarray(out, dtype=np.int64))


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------
@runtime_checkable
class CheckpointSource(Protocol):
    """A series of saved checkpoints: what a :class:`Checkpoint` and the analyses read
    (docs/design.md, "One way to do each thing").

    Implemented by :class:`Run` and by ``probe.analyses.sources.ArraySource`` (plain embedding
    arrays: no config, model, tensors or cache). ``indices`` are checkpoint indices into ``steps``;
    arrays come back as float64 unless a ``dtype`` is asked for.
    """

    @property
    def task(self) -> Task: ...

    @property
    def split(self) -> Split: ...

    @property
    def steps(self) -> np.ndarray: ...

    @property
    def config(self) -> TrainConfig | None:
        """The training config (None: the series was not trained by probe)."""

    @property
    def embed_lr(self) -> float | None:
        """The learning rate of the symbol embeddings, if known (Liu et al.'s effective theory)."""

    @property
    def has_model(self) -> bool:
        """Whether :meth:`load_model` can build a model (forward passes)."""

    @property
    def tensor_names(self) -> list[str]:
        """The parameters saved at every checkpoint."""

    @property
    def parameters(self) -> list[str]:
        """Every parameter of the model, saved or not."""

    @property
    def cache_dir(self) -> Path | None:
        """Where results computed from the series may be kept (None: nowhere)."""

    def read_embeddings(self, indices: np.ndarray) -> np.ndarray | None:
        """Symbol embeddings ``[len(indices), n_symbols, ...]`` (None: the model has none)."""

    def read_tensor(self, index: int, name: str, dtype: Any = np.float64) -> np.ndarray:
        """One saved parameter at one checkpoint."""

    def read_series(self, indices: np.ndarray, name: str) -> np.ndarray:
        """One saved parameter at several checkpoints, ``[len(indices), *shape]``."""

    def load_model(self, index: int, device: str = "cpu") -> "ProbeModel":
        """A model with the weights of checkpoint ``index``."""

    def content_key(self, indices: np.ndarray) -> str | None:
        """A hash of everything an analysis of ``indices`` reads (None: do not cache)."""


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """One saved step of a checkpoint series (any :class:`CheckpointSource`); tensors are read when
    asked for.

    ``embeddings()`` are the symbol embeddings as float64 ``[n_symbols, d]`` (``[n, d, d]`` for
    matrix embeddings); ``tensor(name)`` one saved parameter as float64; ``params()`` every saved
    parameter as float32 torch tensors; ``model()`` a ``HookedRootModule`` with this step's weights
    on ``device``. A runner that has read a chunk of embeddings hands them in as ``preloaded`` so
    each checkpoint is read once.
    """

    source: CheckpointSource = field(repr=False)
    step: int
    index: int
    preloaded: np.ndarray | None = field(default=None, repr=False)
    device: str = "cpu"
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    def embeddings(self) -> np.ndarray:
        if self.preloaded is not None:
            return self.preloaded
        if "embeddings" not in self._memo:
            e = self.source.read_embeddings(np.array([self.index]))
            if e is None:
                raise ProbeError("this model has no symbol embeddings")
            self._memo["embeddings"] = e[0]
        return self._memo["embeddings"]

    def tensor(self, name: str) -> np.ndarray:
        return self.source.read_tensor(self.index, name)

    def model(self) -> "ProbeModel":
        if "model" not in self._memo:
            self._memo["model"] = self.source.load_model(self.index, self.device)
        return self._memo["model"]

    def params(self) -> dict[str, "torch.Tensor"]:
        """Every saved parameter at this checkpoint, by name (float32 tensors on the CPU)."""
        import torch

        names = self.source.tensor_names
        if not names:
            raise ProbeError("this checkpoint series saved no parameters (plain embedding arrays have none)")
        return {name: torch.from_numpy(self.source.read_tensor(self.index, name, np.float32)) for name in names}


# --------------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------------
def stored_task(f: RunFile) -> Task:
    """The task a run file stores: rebuilt from its spec (and stored table), checked against the
    stored labels. Never reads a file outside the run."""
    table = symbols = None
    if "table" in f.f["task"]:
        table = f.read(f.f["task/table"])
        symbols = tuple(str(s) for s in f.symbols)
    task = task_from_spec(f.task_spec, table=table, symbols=symbols)
    if task.n_samples != f.n_samples:
        raise ProbeError(f"the stored task has {f.n_samples} samples but {task.describe()} has {task.n_samples}")
    if not np.array_equal(f.read(f.f["task/labels"]), task.labels):
        raise ProbeError(f"the stored labels disagree with task {task.describe()}")
    return task


#: beside the run file: what is computed from a run (the analysis cache, the verification record)
ANALYSIS_DIR = "analysis"


class MissingSplit(Split):
    """The split of a run imported without one (``probe import`` with no split in the source and no
    ``--train-indices``): reading its indices is a :class:`ProbeError` saying why, so a metric that
    needs a split refuses with the reason while every other metric runs."""

    def __init__(self, reason: str) -> None:  # noqa: D107 - the indices do not exist
        object.__setattr__(self, "_reason", reason)

    def __getattribute__(self, name: str) -> Any:
        if name in ("train", "val", "sizes"):
            raise ProbeError(object.__getattribute__(self, "_reason"))
        return object.__getattribute__(self, name)

    def __repr__(self) -> str:
        return "MissingSplit()"


class Run:
    """A training run on disk. Use :func:`load_run` to open one. A :class:`CheckpointSource`: the
    analyses read runs through the same interface as plain arrays."""

    #: a run rebuilds its model from its config
    has_model = True

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = run_file_path(run_dir)
        self.dir = self.path.parent
        self._file = RunFile(self.path)
        try:
            self.config = TrainConfig.from_dict(self._file.config)
            self.task = stored_task(self._file)
            self._check_static()
        except UnknownSectionError as exc:  # not damage: this process lacks the extension that wrote it
            self._file.close()
            raise ProbeError(f"{self.path}: {exc}") from None
        except ProbeError as exc:
            self._file.close()
            raise ProbeError(f"{self.path} is damaged: {exc}") from None
        self._model: "ProbeModel | None" = None
        self._content_keys: dict[tuple[Any, ...], str] = {}

    def _check_static(self) -> None:
        expected = self.config.model.buffer_shapes(self.task.n_classes)
        stored = {k: tuple(v.shape) for k, v in self._file.f["static"].items()}
        if stored != expected:
            raise ProbeError(f"static tensors {stored} differ from what the model keeps {expected} (targets)")

    # lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def refresh(self) -> None:
        """Pick up checkpoints and metrics committed since opening (the run may still be training)."""
        self._file.refresh()

    def __repr__(self) -> str:
        steps = self.steps
        span = f"steps {steps[0]}..{steps[-1]}" if len(steps) else "no checkpoints"
        return f"Run({str(self.dir)!r}, task={self.task.describe()}, model={self.config.model.kind}, " \
               f"{len(steps)} checkpoints, {span})"

    # description -------------------------------------------------------------------------------
    @property
    def file(self) -> RunFile:
        """The underlying :class:`RunFile` (h5py access via ``run.file.f``)."""
        return self._file

    @property
    def split(self) -> Split:
        """Training and validation indices (a :class:`MissingSplit` for a run imported without one)."""
        if (self.imported_from or {}).get("split_from") == "none":
            return MissingSplit(f"{self.dir} was imported from {self.imported_from.get('source')} without a split, so "
                                "nothing that needs one (training or validation samples) can be computed; import "
                                "it again with --train-indices FILE")
        return self._file.split

    @property
    def imported_from(self) -> dict[str, Any] | None:
        """Where an imported run came from (``probe import``): kind, source, file hashes, mapping, fidelity."""
        return self._file.header.imported_from

    @property
    def steps(self) -> np.ndarray:
        """Steps of the committed checkpoints, increasing."""
        return self._file.steps

    @property
    def finished(self) -> bool:
        return self._file.finished

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._file.f.attrs)

    @property
    def metrics(self) -> "pd.DataFrame":
        """Per-step training metrics (committed rows): step, train_loss, train_acc, val_loss, val_acc, lr."""
        import pandas as pd

        return pd.DataFrame(self._file.metrics())

    @property
    def tensor_names(self) -> list[str]:
        return self._file.tensor_names

    @property
    def parameters(self) -> list[str]:
        """Every parameter of the run's model, saved or not."""
        return list(self._file.parameters)

    @property
    def embed_lr(self) -> float:
        return self.config.resolved_embed_lr

    @property
    def cache_dir(self) -> Path:
        """``RUN_DIR/analysis``: results computed from the run, never inside the run file."""
        return self.dir / ANALYSIS_DIR

    @property
    def checkpoints(self) -> list[Checkpoint]:
        return [Checkpoint(self, int(s), i) for i, s in enumerate(self.steps)]

    def select(self, spec: Any = "all") -> np.ndarray:
        """Checkpoint indices for a step selection (see :func:`select_steps`)."""
        return select_steps(self.steps, spec)

    def checkpoint(self, step: int | str) -> Checkpoint:
        """The checkpoint at ``step`` (an int, or ``"first"`` / ``"last"``)."""
        i = self._index(step)
        return Checkpoint(self, int(self.steps[i]), i)

    def _index(self, step: int | str) -> int:
        if isinstance(step, (int, np.integer)) and not isinstance(step, bool):
            step = str(int(step))
        if not isinstance(step, str) or "," in step or ":" in step or step.strip() == "all":
            raise ProbeError(f"step must be an integer, 'first' or 'last', got {step!r}")
        return int(select_steps(self.steps, step)[0])

    # reads ---------------------------------------------------------------------------------------------
    def params(self, step: int | str) -> dict[str, "torch.Tensor"]:
        """All saved tensors at ``step``, by parameter name (float32 tensors on CPU)."""
        return self.checkpoint(step).params()

    def read_tensor(self, index: int, name: str, dtype: Any = np.float64) -> np.ndarray:
        """One saved tensor at checkpoint ``index`` (checksums verified)."""
        if not 0 <= index < len(self.steps):
            raise ProbeError(f"checkpoint index {index} is outside 0..{len(self.steps) - 1}")
        ds = self._file.series_dataset(name)
        return self._file.read(ds, index, step=int(self.steps[index])).astype(dtype)

    def series(self, name: str, steps: slice | np.ndarray | list[int] | None = None) -> np.ndarray:
        """One tensor across committed checkpoints, ``[T, *shape]``; ``steps`` selects checkpoint
        indices (a slice or an index array). Rows a writer has not committed are never returned."""
        n = len(self.steps)
        idx = np.arange(n) if steps is None else (np.arange(n)[steps] if isinstance(steps, slice)
                                                  else np.asarray(steps, dtype=np.int64))
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ProbeError(f"checkpoint indices must be in 0..{n - 1}")
        ds = self._file.series_dataset(name)
        if idx.size == 0:
            return np.zeros((0, *ds.shape[1:]), dtype=ds.dtype)
        lo, hi = int(idx.min()), int(idx.max()) + 1
        contiguous = np.array_equal(idx, np.arange(lo, hi))
        where = f"steps {int(self.steps[lo])}..{int(self.steps[hi - 1])}"
        what = f"{ds.name.lstrip('/')} at {where}"
        if contiguous:
            return self._file.read_rows(ds, lo, hi, what)
        with self._file._reading(what):
            order = np.argsort(idx, kind="stable")
            uniq, inverse = np.unique(idx[order], return_inverse=True)
            block = np.asarray(ds[uniq])
        out = np.empty((len(idx), *block.shape[1:]), dtype=block.dtype)
        out[order] = block[inverse]
        return out

    def read_series(self, indices: np.ndarray, name: str) -> np.ndarray:
        """One tensor at checkpoints ``indices`` as float64 ``[len(indices), *shape]``."""
        return self.series(name, np.asarray(indices, dtype=np.int64)).astype(np.float64)

    def read_stack(self, indices: np.ndarray, names: list[str], dtype: Any = np.float32) -> dict[str, np.ndarray]:
        """Several tensors at checkpoints ``indices``, each stacked ``[len(indices), *shape]`` in ``dtype``
        (float32 by default, as checkpoints are stored): one read per tensor and run of consecutive
        checkpoints, checksums verified as by :meth:`series`, the verification record saved once (the
        parameters of a chunk of checkpoints for the analyses' batched passes)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self.steps)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ProbeError(f"checkpoint indices must be in 0..{n - 1}")
        uniq, inverse = np.unique(idx, return_inverse=True)
        runs = np.split(uniq, np.flatnonzero(np.diff(uniq) != 1) + 1) if uniq.size else []
        out = {}
        for name in names:
            ds = self._file.series_dataset(name)
            parts = []
            for run in runs:
                lo, hi = int(run[0]), int(run[-1]) + 1
                what = f"{ds.name.lstrip('/')} at steps {int(self.steps[lo])}..{int(self.steps[hi - 1])}"
                parts.append(self._file._rows(ds, lo, hi, what))
            block = np.concatenate(parts) if parts else np.zeros((0, *ds.shape[1:]), dtype=ds.dtype)
            out[name] = block[inverse].astype(dtype, copy=False) if not np.array_equal(uniq, idx) \
                else block.astype(dtype, copy=False)
        self._file._verified().save()
        return out

    def iter_tensor(self, name: str, chunk: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream one tensor across all checkpoints: yields ``(steps[c], values[c, *shape])``.

        Memory stays at one chunk, whatever the length of the series.
        """
        if chunk < 1:
            raise ProbeError(f"must be >= 1, got {chunk}", param="chunk")
        steps = self.steps
        for lo in range(0, len(steps), chunk):
            hi = min(lo + chunk, len(steps))
            yield steps[lo:hi], self.series(name, slice(lo, hi))

    def static(self) -> dict[str, np.ndarray]:
        """Fixed tensors that are not trained (e.g. the toy model's regression targets)."""
        return self._static

    @cached_property
    def _static(self) -> dict[str, np.ndarray]:  # read once: every checkpoint's model reuses them
        return self._file.static()

    def content_key(self, indices: np.ndarray) -> str:
        """A hash of what an analysis of checkpoints ``indices`` reads: config, task, split, steps and
        the checkpoints' contents (their stored digests, or the tensors themselves for files that
        have none). A copied, replaced or edited run gets a different key. Memoised per selection
        while the file is unchanged (its inode, size, modification and change times)."""
        idx = np.asarray(indices, dtype=np.int64)
        st = os.stat(self.path)
        memo = (idx.tobytes(), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if memo not in self._content_keys:
            self._content_keys = {memo: self._content_key(idx)}  # one selection held: memory stays flat
        return self._content_keys[memo]

    def _content_key(self, idx: np.ndarray) -> str:
        h = hashlib.blake2b(digest_size=16)
        f = self._file
        for key in ("config", "task", "parameters"):
            h.update(str(f.f.attrs[key]).encode())
        for arr in (self.task.labels, f.split.train, f.split.val, self.steps[idx]):
            h.update(np.ascontiguousarray(arr).tobytes())
        for arr in self.static().values():
            h.update(np.ascontiguousarray(arr).tobytes())
        digests = f.digests(idx)
        if digests is not None:
            h.update(digests.tobytes())
        else:
            for name in self.tensor_names:
                for lo in range(0, len(idx), 256):
                    h.update(np.ascontiguousarray(self.series(name, idx[lo: lo + 256])).tobytes())
        return h.hexdigest()

    # models -----------------------------------------------------------------------------------------
    def model(self, step: int | str, device: str = "cpu") -> "ProbeModel":
        """A ``HookedRootModule`` with the weights of ``step`` (``run_with_cache`` / ``run_with_hooks`` work)."""
        model = self._build_model()
        self.load_weights(model, self._index(step))
        return model.to(device).eval()

    def load_model(self, index: int, device: str = "cpu") -> "ProbeModel":
        """The weights of checkpoint ``index`` in one model per run (a series reuses it)."""
        if self._model is None or str(next(self._model.parameters()).device) != str(device):
            self._model = self._build_model().eval().to(device)
        return self.load_weights(self._model, index)

    def _build_model(self) -> "ProbeModel":
        """A fresh model of this run's config, with the run's loss (softmax or StableMax, precision)."""
        from probe.models import build_model

        return build_model(self.config.model, self.task).set_loss(self.config.softmax, self.config.softmax_dtype)

    def load_weights(self, model: "ProbeModel", index: int) -> "ProbeModel":
        """Copy the weights of checkpoint ``index`` (and the run's fixed buffers) into ``model``, built
        from this run's config, in place."""
        import torch

        names = self.tensor_names
        expected = dict(model.named_parameters())
        missing = [n for n in expected if n not in names]
        if missing:
            raise ProbeError(f"the run saved only {', '.join(names)}; a model needs every parameter "
                             f"(missing: {', '.join(missing)}); train with checkpoint.tensors='*'")
        static = self.static()
        with torch.no_grad():
            for name, param in expected.items():
                row = self.read_tensor(index, name, np.float32)
                if tuple(row.shape) != tuple(param.shape):
                    raise ProbeError(f"{self.path} is damaged: tensor {name} has shape {row.shape}, the model "
                                     f"needs {tuple(param.shape)}")
                param.copy_(torch.from_numpy(row).to(param.device))
            for name, buf in model.named_buffers():
                if name in static:  # shapes were checked against the model's declaration at opening
                    buf.copy_(torch.from_numpy(static[name]).to(buf.device))
        return model

    def read_embeddings(self, indices: np.ndarray) -> np.ndarray | None:
        """Symbol embeddings at checkpoints ``indices``: float64 ``[len, n_symbols, ...]`` (None when
        the model declares no embedding parameter or the run did not save it)."""
        name = self.config.model.embed_param
        if name is None or name not in self.tensor_names:
            return None
        return self.series(name, indices).astype(np.float64)[:, : self.task.n_symbols]

    def embeddings(self, step: int | str) -> "torch.Tensor":
        """The symbol embeddings at ``step``: ``[n_symbols, d]`` (``[n, d, d]`` for matrix embeddings).

        For the transformer these are the rows of ``embed.W_E`` for the task's symbols (the ``=``
        and op tokens are excluded).
        """
        import torch

        name = self.config.model.embed_param
        if name is None:
            raise ProbeError(f"the {self.config.model.kind} model has no symbol embeddings")
        if name not in self.tensor_names:
            raise ProbeError(f"the run did not save {name} (saved: {', '.join(self.tensor_names)})")
        emb = self.read_embeddings(np.array([self._index(step)]))
        assert emb is not None
        return torch.from_numpy(emb[0].astype(np.float32))

    def hook_names(self) -> list[str]:
        from probe.models import build_model

        return list(build_model(self.config.model, self.task).hook_dict)

    def dataset(self, which: str = "all", device: str = "cpu") -> tuple["torch.Tensor", "torch.Tensor"]:
        """Model inputs and labels for ``which`` in {all, train, val}, ready for ``run.model(step)``."""
        import torch

        from probe.models import build_model

        idx = {"all": np.arange(self.task.n_samples), "train": self.split.train, "val": self.split.val}
        if which not in idx:
            raise ProbeError(f"unknown sample set {which!r}{valid(idx)}")
        model = build_model(self.config.model, self.task)
        x = model.model_inputs(torch.as_tensor(self.task.inputs[idx[which]]))
        return x.to(device), torch.as_tensor(self.task.labels[idx[which]]).to(device)


def load_run(run_dir: str | os.PathLike[str]) -> Run:
    """Open a run directory (or its ``run.h5``) read-only."""
    return Run(run_dir)


def run_labels(paths: list[Path]) -> list[str]:
    """Short names that tell runs apart: each run directory's name, extended by parent folders
    until every label is unique (``A/run`` and ``B/run`` rather than ``run`` twice)."""
    resolved = [Path(p).resolve() for p in paths]
    depth = 1
    while True:
        labels = ["/".join(p.parts[-depth:]) for p in resolved]
        if len(set(labels)) == len(labels) or depth >= max(len(p.parts) for p in resolved):
            return labels
        depth += 1


def _early_stop(run: Run, last_step: Any) -> dict[str, Any] | None:
    """The run's early-stop rule, and the step it stopped at when it stopped before its budget."""
    stop = run.config.stop
    if stop.after_generalization is None:
        return None
    stopped = (int(last_step) if run.finished and last_step is not None and int(last_step) < run.config.steps
               else None)
    return {"after_generalization": stop.after_generalization, "threshold": stop.threshold, "stopped_at": stopped}


def _lineage(run: Run) -> dict[str, Any] | None:
    """The run this one started from: its path, step, whether the optimizer state came along, and the
    config keys that changed."""
    raw = run.attrs.get("parent")
    if raw is None:
        return None
    info = json.loads(str(raw))
    try:  # read the parent's config as the run's own is read: keys added since then take their defaults
        theirs = _flat(TrainConfig.from_dict(info.get("config", {})).to_dict())
    except ProbeError:
        theirs = _flat(info.get("config", {}))
    mine = _flat(run.config.to_dict())
    changed = [f"{k} {theirs.get(k)} -> {v}" for k, v in mine.items() if theirs.get(k) != v]
    return {"run": info["run"], "step": int(info["step"]), "optimizer": bool(info.get("optimizer")),
            "changed": ", ".join(changed)}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _imported(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``probe info`` says about an imported run's origin."""
    if record is None:
        return None
    fid = record.get("fidelity") or {}
    return {"kind": record.get("kind"), "source": record.get("source"), "files": len(record.get("files") or []),
            "sha256": [f.get("sha256") for f in (record.get("files") or [])[:1]],
            "mapping": (record.get("mapping") or {}).get("name"), "model_from": record.get("model_from"),
            "task_from": record.get("task_from"), "split_from": record.get("split_from"),
            "fidelity": fid, "duplicates": len(record.get("duplicates") or []), "imported": record.get("imported")}


def describe_run(run: Run) -> dict[str, Any]:
    """The facts ``probe info`` prints, as a JSON-able dict (works on a run with no metrics or
    checkpoints yet)."""
    cfg = run.config
    steps = run.steps
    metrics = run.metrics
    last = {k: (None if v != v else v) for k, v in metrics.iloc[-1].to_dict().items()} if len(metrics) else {}
    imported = run.imported_from
    no_split = (imported or {}).get("split_from") == "none"
    n_train, n_val = (None, None) if no_split else run.split.sizes
    packages = run.file.packages
    recorded = imported is None or imported.get("training_settings") == "recorded"
    return {
        "run": str(run.dir),
        "status": "finished" if run.finished else "in progress or interrupted",
        "task": run.task.describe(),
        "samples": run.task.n_samples,
        "n_symbols": run.task.n_symbols,
        "n_classes": run.task.n_classes,
        "model": cfg.to_dict()["model"],
        "optimizer": {"name": cfg.optimizer, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
                      "embed_lr": cfg.resolved_embed_lr, "embed_weight_decay": cfg.resolved_embed_weight_decay,
                      "betas": list(cfg.betas), "warmup_steps": cfg.warmup_steps,
                      "batch_size": cfg.batch_size if cfg.batch_size else "full"},
        "split": {"train": n_train, "val": n_val, "train_fraction": cfg.train_fraction, "n_train": cfg.n_train},
        "seeds": {"seed": cfg.seed, "split_seed": cfg.split_seed},
        "steps": cfg.steps,
        "early_stop": _early_stop(run, last.get("step")),
        "training": "; ".join(cfg.interventions()),
        "parent": _lineage(run),
        "imported": _imported(imported),
        "training_recorded": recorded,
        "checkpoints": {"count": int(len(steps)), "first": int(steps[0]) if len(steps) else None,
                        "last": int(steps[-1]) if len(steps) else None,
                        "schedule": cfg.to_dict()["checkpoint"], "tensors": run.tensor_names},
        "metrics_rows": int(len(metrics)),
        "final": {k: last.get(k) for k in ("step", "train_loss", "train_acc", "val_loss", "val_acc")},
        "file": {"path": str(run.path), "bytes": os.path.getsize(run.path),
                 "schema_version": run.file.version, "created": run.attrs.get("created"),
                 "packages": packages},
    }
