"""The one loop over time: select checkpoints, stream them, call metrics, cache the results.

``compute(run, "rqi", delta=0.01)`` returns a pandas DataFrame with one row per checkpoint step and
one column per metric value; ``df.attrs["probe"]`` records every metric's parameters and notes.
Sources are any :class:`probe.run.CheckpointSource`: a :class:`probe.run.Run` or plain arrays
(:class:`~probe.analyses.sources.ArraySource`), so the same metrics run on checkpoints that were
never written by probe.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from probe.analyses import cache as result_cache
from probe.analyses.context import Context
from probe.analyses.registry import Metric, get_metric
from probe.analyses.sources import as_source
from probe.devices import one_thread_pool, resolve_device
from probe.errors import ProbeError, valid
from probe.run import Checkpoint, CheckpointSource, Run, select_steps
from probe.tasks import Split, Task

if TYPE_CHECKING:
    import pandas as pd

CHUNK = 64


def compute(source: Any, metrics: str | Sequence[str], steps: Any = "all", *, task: Task | None = None,
            split: Split | None = None, cache: bool = True, force: bool = False, progress: bool = False,
            chunk: int = CHUNK, device: str = "auto", **params: Any) -> "pd.DataFrame":
    """Compute metrics over a checkpoint series: one row per step, one column per value.

    ``source``: a :class:`probe.run.Run` (or any :class:`~probe.run.CheckpointSource`), a run
    directory (opened and closed here), or embeddings ``[T, n, d]`` / ``[n, d]`` with
    ``task`` (and ``split``). ``params`` are metric parameters (``delta=0.01``, ``hook=...``); each
    must belong to at least one of the requested metrics. Results for runs are cached beside the run
    in ``RUN_DIR/analysis/`` per metric, parameters and checkpoint content; ``force=True``
    recomputes. ``device``: ``auto`` (CUDA when present), ``cpu`` or a torch device; forward passes
    and the parallelogram distances run there (threshold decisions are rechecked exactly on the CPU).
    """
    src = as_source(source, task=task, split=split)
    try:
        with one_thread_pool():
            return _compute(src, metrics, steps, cache=cache, force=force, progress=progress, chunk=chunk,
                            device=device, **params)
    finally:
        if src is not source and isinstance(src, Run):
            src.close()


def _compute(src: CheckpointSource, metrics: str | Sequence[str], steps: Any, *, cache: bool, force: bool,
             progress: bool, chunk: int, device: str, **params: Any) -> "pd.DataFrame":
    import pandas as pd

    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise ProbeError("no metric given (see 'probe metrics')", param="metric")
    chosen = [get_metric(n) for n in dict.fromkeys(names)]
    known = {p.name for m in chosen for p in m.params}
    extra = sorted(k for k, v in params.items() if k not in known and v is not None)
    if extra:
        raise ProbeError(f"does not belong to {', '.join(m.name for m in chosen)} (their parameters: "
                         f"{', '.join(sorted(known)) or 'none'})", param=extra[0])
    resolved = {m.name: m.resolve(params) for m in chosen}
    for m in chosen:
        m.check_task(src.task, src.config)
        if "forward" in m.requirements(resolved[m.name]) and not src.has_model:
            raise ProbeError(f"metric {m.name} needs a model forward pass; plain arrays have no model")
        if "weights" in m.requirements(resolved[m.name]) and not src.has_model:
            raise ProbeError(f"metric {m.name} needs the run's weights; plain arrays have none")
    _check_hooks(src, {r["hook"] for r in resolved.values() if r.get("hook") is not None})
    idx = select_steps(src.steps, steps)
    results: dict[str, tuple["pd.DataFrame", dict[str, Any]]] = {}
    pending: list[tuple[Metric, Path | None]] = []
    for m in chosen:
        path = result_cache.cache_path(src, m, resolved[m.name], idx) if cache else None
        hit = result_cache.read(path) if path is not None and path.exists() and not force else None
        if hit is not None:
            results[m.name] = hit
        else:
            pending.append((m, path))
    if pending:
        ctx = Context(src, resolve_device(device))  # cached results need no torch
        rows = _loop(src, ctx, [m for m, _ in pending], resolved, idx, progress=progress, chunk=chunk)
        for m, path in pending:
            df = pd.DataFrame(rows[m.name])
            df.insert(0, "step", src.steps[idx].astype(np.int64))
            params_m = resolved[m.name]
            info = {"params": params_m, "notes": ctx.notes_for(m.name), "scope": m.scope,
                    "needs": sorted(m.requirements(params_m))}
            if path is not None:
                result_cache.write(path, df, info)
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


def _check_hooks(src: CheckpointSource, hooks: set[str]) -> None:
    """Hook names the source's model does not have are refused before any checkpoint is read or any
    metric computed (the names come from the model its config builds, as ``probe info --hooks``)."""
    from probe.analyses.passes import LOGITS

    names = getattr(src, "hook_names", None)
    if not hooks - {LOGITS} or not src.has_model or names is None:
        return
    known = names()
    for hook in sorted(hooks):
        if hook != LOGITS and hook not in known:
            raise ProbeError(f"unknown hook {hook!r}{valid([LOGITS, *known])}", param="hook")


def _loop(src: CheckpointSource, ctx: Context, metrics: list[Metric], params: dict[str, dict[str, Any]], idx: np.ndarray,
          *, progress: bool, chunk: int) -> dict[str, list[dict[str, Any]]]:
    """Checkpoints outside, metrics inside, so that one checkpoint's model and forward passes are
    loaded once and shared by every metric that needs them. Split-scope metrics run once. Metrics
    that declare a batched form (``batch_fn``) see a whole chunk of checkpoints at once, and the
    shared forward passes (:mod:`probe.analyses.passes`) stack the chunk's parameters."""
    rows: dict[str, list[dict[str, Any]]] = {m.name: [] for m in metrics}
    for m in metrics:
        if m.scope == "split":
            ctx.current = m.name
            values = m.fn(None, ctx, **params[m.name])
            rows[m.name] = [dict(values) for _ in idx]
    per_ckpt = [m for m in metrics if m.scope == "checkpoint"]
    if not per_ckpt:
        return rows
    need_emb = any("embeddings" in m.requirements(params[m.name]) for m in per_ckpt)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(idx), desc=",".join(m.name for m in per_ckpt)[:40], unit="ckpt", leave=False)
    try:
        for lo in range(0, len(idx), chunk):
            part = idx[lo: lo + chunk]
            emb = src.read_embeddings(part) if need_emb else None
            if need_emb and emb is None:
                names = [m.name for m in per_ckpt if "embeddings" in m.requirements(params[m.name])]
                raise ProbeError(f"metric {names[0]} needs symbol embeddings; this model has none")
            ckpts = [Checkpoint(src, int(src.steps[i]), int(i), None if emb is None else emb[j], ctx.device)
                     for j, i in enumerate(part)]
            ctx.begin_chunk(part)  # the batched passes stack this chunk's parameters
            batched = {}
            for m in per_ckpt:
                if m.batch_fn is not None and m.batch_fn_applies(params[m.name]):
                    ctx.current = m.name
                    batched[m.name] = m.batch_fn(ckpts, ctx, **params[m.name])
            for j, ck in enumerate(ckpts):
                for m in per_ckpt:
                    if m.name in batched:
                        rows[m.name].append(batched[m.name][j])
                        continue
                    ctx.current = m.name
                    rows[m.name].append(m.fn(ck, ctx, **params[m.name]))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return rows
