"""The one loop over time: select checkpoints, stream them, call metrics, cache the results.

``compute(run, "rqi", delta=0.01)`` returns a pandas DataFrame with one row per checkpoint step and
one column per metric value; ``df.attrs["probe"]`` records every metric's parameters and notes.
Sources are a :class:`probe.Run` or plain arrays (:class:`ArraySource`), so the same metrics run on
checkpoints that were never written by probe.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from analyses.registry import Metric, get_metric
from probe.errors import ProbeError
from probe.run import Run
from probe.tasks import Split, Task

if TYPE_CHECKING:
    import pandas as pd
    import torch

CACHE_DIR = "analysis"
CACHE_VERSION = 1
CHUNK = 64


# --------------------------------------------------------------------------------------------------
# what a metric sees
# --------------------------------------------------------------------------------------------------
class Context:
    """Per-source state shared by all checkpoints: task, split, config and derived structures
    (the parallelogram set, the Alexander bound, Fourier planes), each computed once."""

    def __init__(self, task: Task, split: Split, config: Any = None, embed_lr: float | None = None,
                 device: str = "cpu") -> None:
        self.task = task
        #: torch device for forward passes; array maths runs there too when it is not the CPU
        self.device = device
        self.array_device: str | None = None if device == "cpu" else device
        self.split = split
        self.config = config
        self.embed_lr = embed_lr
        self.cache: dict[Any, Any] = {}
        self.notes: dict[str, list[str]] = {}
        self.current = ""  # the metric being computed (notes are filed under it)
        self.source: "Source | None" = None

    def embeddings_at(self, step: Any) -> np.ndarray:
        """Symbol embeddings at another checkpoint (``"first"``, ``"last"`` or a step), memoised."""
        src = self.source
        if src is None:
            raise ProbeError("no checkpoint series to read a reference checkpoint from")
        index = int(select_steps(src.steps, str(step))[0])
        emb = self.memo(("embeddings", index), lambda: src.embeddings(np.array([index])))
        if emb is None:
            raise ProbeError("this model has no symbol embeddings")
        return emb[0]

    @cached_property
    def p0(self) -> "Any":
        from analyses.parallelograms import Parallelograms

        return Parallelograms.from_labels(self.task.labels)

    def model_inputs(self, model: Any) -> "torch.Tensor":
        """The task's samples as ``model`` inputs on this context's device (built once)."""
        import torch

        return self.memo("model_inputs",
                         lambda: model.model_inputs(torch.as_tensor(self.task.inputs)).to(self.device))

    def memo(self, key: Any, make: Any) -> Any:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def memo_step(self, key: Any, index: int, make: Any) -> Any:
        """Like :meth:`memo`, but only the latest checkpoint's value is kept (memory stays flat)."""
        held = self.cache.get(("step", key))
        if held is None or held[0] != index:
            held = (index, make())
            self.cache[("step", key)] = held
        return held[1]

    def note(self, text: str) -> None:
        held = self.notes.setdefault(self.current, [])
        if text not in held:
            held.append(text)

    def notes_for(self, metric: str) -> list[str]:
        return list(self.notes.get(metric, []))


@dataclass
class CheckpointData:
    """One checkpoint as a metric sees it: its step, embeddings, and (lazily) the model."""

    step: int
    index: int
    embeddings: np.ndarray | None
    source: "Source"
    _model: Any = field(default=None, repr=False)

    def tensor(self, name: str) -> np.ndarray:
        """A saved parameter at this checkpoint (e.g. ``unembed.W_U``)."""
        return self.source.tensor(self.index, name)

    def model(self) -> "torch.nn.Module":
        if self._model is None:
            self._model = self.source.model(self.index)
        return self._model

    def require_embeddings(self) -> np.ndarray:
        if self.embeddings is None:
            raise ProbeError("this source has no symbol embeddings")
        return self.embeddings


# --------------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------------
class Source:
    task: Task
    split: Split
    steps: np.ndarray
    has_model: bool = False

    def context(self, device: str = "cpu") -> Context:
        raise NotImplementedError

    def embeddings(self, indices: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def model(self, index: int) -> Any:
        raise ProbeError("this metric needs a model forward pass; analyse a probe run (or pass a model)")

    def tensor(self, index: int, name: str) -> np.ndarray:
        raise ProbeError(f"this metric needs the parameter {name}; plain embedding arrays do not have it")

    def signature(self) -> str | None:
        return None

    @property
    def cache_dir(self) -> Path | None:
        return None


class RunSource(Source):
    """Checkpoints of a probe run, streamed from its HDF5 file."""

    has_model = True

    def __init__(self, run: Run) -> None:
        self.run = run
        self.task = run.task
        self.split = run.split
        self.steps = np.asarray(run.steps)
        self._model_obj: Any = None
        self.device = "cpu"

    def context(self, device: str = "cpu") -> Context:
        cfg = self.run.config
        eta = cfg.embed_lr if cfg.embed_lr is not None else cfg.lr
        self.device = device
        return Context(self.task, self.split, cfg, embed_lr=eta, device=device)

    def embeddings(self, indices: np.ndarray) -> np.ndarray | None:
        if self.run.config.model.kind == "digits" or "embed.W_E" not in self.run.tensor_names:
            return None
        return self.run.series("embed.W_E", indices).astype(np.float64)[:, : self.task.n_symbols]

    def model(self, index: int) -> Any:
        from probe.models import build_model

        if self._model_obj is None:  # one model for the whole series; each checkpoint loads into it
            self._model_obj = build_model(self.run.config.model, self.task).eval().to(self.device)
        return self.run.load_weights(self._model_obj, int(self.steps[index]))

    def tensor(self, index: int, name: str) -> np.ndarray:
        return self.run.series(name, np.array([index]))[0].astype(np.float64)

    def signature(self) -> str:
        st = self.run.path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}:{len(self.steps)}"

    @property
    def cache_dir(self) -> Path:
        return self.run.dir / CACHE_DIR


class ArraySource(Source):
    """Embeddings ``[T, n_symbols, ...]`` (or one checkpoint ``[n_symbols, ...]``) with a task and split."""

    def __init__(self, embeddings: Any, task: Task, split: Split | None = None,
                 steps: Sequence[int] | None = None, embed_lr: float | None = None) -> None:
        e = np.asarray(embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings, dtype=np.float64)
        n = task.n_symbols
        if e.ndim == 2 or (e.ndim == 3 and e.shape[0] == n and e.shape[1] != n):
            e = e[None]  # one checkpoint: [n, d] or matrices [n, d, d]
        if e.ndim not in (3, 4) or e.shape[1] != n:
            raise ProbeError(f"embeddings must be [T, {n}, d], [{n}, d] or matrices [T, {n}, d, d] for task "
                             f"{task.describe()}, got shape {tuple(np.shape(embeddings))}")
        self.e = e
        self.task = task
        self.split = split if split is not None else Split(train=np.arange(task.n_samples), val=np.arange(0))
        self.steps = np.asarray(steps if steps is not None else np.arange(e.shape[0]), dtype=np.int64)
        if self.steps.shape[0] != e.shape[0]:
            raise ProbeError(f"got {self.steps.shape[0]} steps for {e.shape[0]} checkpoints")
        self.embed_lr = embed_lr

    def context(self, device: str = "cpu") -> Context:
        return Context(self.task, self.split, None, embed_lr=self.embed_lr, device=device)

    def embeddings(self, indices: np.ndarray) -> np.ndarray:
        return self.e[np.asarray(indices)]


def as_source(source: Any, task: Task | None = None, split: Split | None = None, **kw: Any) -> Source:
    if isinstance(source, Source):
        return source
    if isinstance(source, Run):
        return RunSource(source)
    if isinstance(source, (str, os.PathLike)):
        return RunSource(Run(source))
    if task is None:
        raise ProbeError("analysing plain arrays needs task= (and split= for split-dependent metrics)")
    return ArraySource(source, task, split, **kw)


def resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ProbeError(f"device {device!r} requested but CUDA is not available")
    elif device != "cpu":
        raise ProbeError(f"unknown device {device!r} (valid: auto, cpu, cuda, cuda:N)")
    return device


# --------------------------------------------------------------------------------------------------
# step selection
# --------------------------------------------------------------------------------------------------
def select_steps(steps: np.ndarray, spec: Any = "all") -> np.ndarray:
    """Checkpoint indices for ``all``, ``first``, ``last``, ``START:STOP[:STRIDE]`` (steps, inclusive;
    every STRIDE-th checkpoint in that range), a comma list of steps, or a list of ints."""
    steps = np.asarray(steps)
    if len(steps) == 0:
        raise ProbeError("the run has no checkpoints")
    if spec is None or spec == "all":
        return np.arange(len(steps))
    if spec == "last":
        return np.array([len(steps) - 1])
    if spec == "first":
        return np.array([0])
    if isinstance(spec, str) and ":" in spec:
        parts = spec.split(":")
        if len(parts) > 3:
            raise ProbeError(f"--steps {spec!r}: expected START:STOP[:STRIDE]")
        try:
            lo = int(parts[0]) if parts[0] else int(steps[0])
            hi = int(parts[1]) if parts[1] else int(steps[-1])
            stride = int(parts[2]) if len(parts) == 3 and parts[2] else 1
        except ValueError:
            raise ProbeError(f"--steps {spec!r}: START, STOP and STRIDE must be integers") from None
        if stride < 1:
            raise ProbeError(f"--steps {spec!r}: STRIDE must be >= 1")
        idx = np.flatnonzero((steps >= lo) & (steps <= hi))[::stride]
        if idx.size == 0:
            raise ProbeError(f"--steps {spec!r} selects no checkpoint (checkpoints {steps[0]}..{steps[-1]})")
        return idx
    wanted = spec.split(",") if isinstance(spec, str) else list(np.atleast_1d(spec))
    out = []
    for w in wanted:
        if w in ("first", "last"):
            out.append(0 if w == "first" else len(steps) - 1)
            continue
        try:
            s = int(w)
        except (TypeError, ValueError):
            raise ProbeError(f"--steps: {w!r} is not a step (use all, first, last, START:STOP:STRIDE or a list)") from None
        i = int(np.searchsorted(steps, s))
        if i >= len(steps) or steps[i] != s:
            raise ProbeError(f"step {s} is not a checkpoint (checkpoints {steps[0]}..{steps[-1]}, {len(steps)} in all)")
        out.append(i)
    return np.array(out, dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# compute
# --------------------------------------------------------------------------------------------------
def compute(source: Any, metrics: str | Sequence[str], steps: Any = "all", *, task: Task | None = None,
            split: Split | None = None, cache: bool = True, force: bool = False, progress: bool = False,
            chunk: int = CHUNK, device: str = "auto", **params: Any) -> "pd.DataFrame":
    """Compute metrics over a checkpoint series: one row per step, one column per value.

    ``source``: a :class:`probe.Run`, a run directory, or embeddings ``[T, n, d]`` / ``[n, d]`` with
    ``task`` (and ``split``). ``params`` are metric parameters (``delta=0.01``, ``hook=...``); each
    must belong to at least one of the requested metrics. Results for runs are cached beside the run
    in ``RUN_DIR/analysis/`` per metric and parameters; ``force=True`` recomputes. ``device``:
    ``auto`` (CUDA when present), ``cpu`` or a torch device; forward passes and the parallelogram
    distances run there (results equal the CPU's within float64 rounding; threshold decisions are
    rechecked exactly on the CPU).
    """
    import pandas as pd

    src = as_source(source, task=task, split=split)
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise ProbeError("no metric given (see 'probe metrics')")
    chosen = [get_metric(n) for n in dict.fromkeys(names)]
    known = {p.name for m in chosen for p in m.params}
    extra = sorted(k for k, v in params.items() if k not in known and v is not None)
    if extra:
        raise ProbeError(f"parameter {extra[0]!r} does not belong to {', '.join(m.name for m in chosen)} "
                         f"(their parameters: {', '.join(sorted(known)) or 'none'})")
    resolved = {m.name: m.resolve(params) for m in chosen}
    for m in chosen:
        m.check_task(src.task)
        needs = m.requirements(resolved[m.name])
        if "forward" in needs and not src.has_model:
            raise ProbeError(f"metric {m.name} needs a model forward pass; plain arrays have no model")
    idx = select_steps(src.steps, steps)
    results: dict[str, tuple["pd.DataFrame", dict[str, Any]]] = {}
    pending: list[tuple[Metric, Path | None]] = []
    for m in chosen:
        path = _cache_path(src, m, resolved[m.name], idx) if cache else None
        hit = _read_cache(path) if path is not None and path.exists() and not force else None
        if hit is not None:
            results[m.name] = hit
        else:
            pending.append((m, path))
    rows: dict[str, list[dict[str, Any]]] = {m.name: [] for m, _ in pending}
    ctx = src.context(resolve_device(device) if pending else "cpu")  # cached results need no torch
    ctx.source = src
    for m, _ in pending:
        if m.scope == "split":
            ctx.current = m.name
            values = m.fn(None, ctx, **resolved[m.name])
            rows[m.name] = [dict(values) for _ in idx]
    per_ckpt = [m for m, _ in pending if m.scope == "checkpoint"]
    if per_ckpt:
        _loop(src, ctx, per_ckpt, resolved, idx, rows, progress=progress, chunk=chunk)
    for m, path in pending:
        df = pd.DataFrame(rows[m.name])
        df.insert(0, "step", src.steps[idx].astype(np.int64))
        params_m = resolved[m.name]
        info = {"params": params_m, "notes": ctx.notes_for(m.name), "scope": m.scope,
                "needs": sorted(m.requirements(params_m))}
        if path is not None:
            _write_cache(path, df, info)
        results[m.name] = (df, info)
    frames = []
    meta: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for m in chosen:
        df, info = results[m.name]
        f = df.set_index("step")
        for col in list(f.columns):
            if col in seen:  # two metrics report a value under one name: keep both, qualified
                f = f.rename(columns={col: f"{m.name}.{col}"})
            else:
                seen[col] = m.name
        frames.append(f)
        meta[m.name] = info
    out = pd.concat(frames, axis=1).reset_index()
    out.attrs["probe"] = meta
    return out


def _loop(src: Source, ctx: Context, metrics: list[Metric], params: dict[str, dict[str, Any]], idx: np.ndarray,
          rows: dict[str, list[dict[str, Any]]], *, progress: bool, chunk: int) -> None:
    """The one loop over time: checkpoints outside, metrics inside, so that one checkpoint's model
    and forward passes are loaded once and shared by every metric that needs them."""
    need_emb = any("embeddings" in m.requirements(params[m.name]) for m in metrics)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(idx), desc=",".join(m.name for m in metrics)[:40], unit="ckpt", leave=False)
    try:
        for lo in range(0, len(idx), chunk):
            part = idx[lo: lo + chunk]
            emb = src.embeddings(part) if need_emb else None
            if need_emb and emb is None:
                names = [m.name for m in metrics if "embeddings" in m.requirements(params[m.name])]
                raise ProbeError(f"metric {names[0]} needs symbol embeddings; this model has none")
            for j, i in enumerate(part):
                data = CheckpointData(step=int(src.steps[i]), index=int(i),
                                      embeddings=None if emb is None else emb[j], source=src)
                for m in metrics:
                    ctx.current = m.name
                    rows[m.name].append(m.fn(data, ctx, **params[m.name]))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()


# --------------------------------------------------------------------------------------------------
# cache: RUN_DIR/analysis/<metric>-<key>.parquet, never inside the run file
# --------------------------------------------------------------------------------------------------
def _cache_path(src: Source, m: Metric, params: dict[str, Any], idx: np.ndarray) -> Path | None:
    sig = src.signature()
    if sig is None or src.cache_dir is None:
        return None
    key = json.dumps({"v": CACHE_VERSION, "metric": m.name, "params": params, "run": sig,
                      "steps": hashlib.sha1(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()},
                     sort_keys=True, default=str)
    return src.cache_dir / f"{m.name}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.parquet"


def _read_cache(path: Path) -> tuple["pd.DataFrame", dict[str, Any]] | None:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        info = json.loads(table.schema.metadata[b"probe"])
        return table.to_pandas(), info
    except Exception as exc:  # noqa: BLE001 - any unreadable cache is recomputed
        warnings.warn(f"cache file {path} is unreadable ({type(exc).__name__}); recomputing", stacklevel=3)
        return None


def _write_cache(path: Path, df: "pd.DataFrame", info: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        path.parent.mkdir(exist_ok=True)
        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[b"probe"] = json.dumps(info, default=str).encode()
        tmp = path.with_suffix(".tmp")
        pq.write_table(table.replace_schema_metadata(meta), tmp)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"could not write the analysis cache {path}: {exc}", stacklevel=3)
