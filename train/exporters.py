"""A run's checkpoints written in other code's layouts (``probe export-checkpoints``; docs/design.md,
"Importing and exporting checkpoint series"), so others' tools read probe's runs.

An *export format* is one registration in :data:`EXPORT_FORMATS`: its name, one line saying what it
writes, a check that refuses a run the layout cannot hold (one line, before anything is written) and
the writer. Shipped formats:

- ``safetensors``: a directory of ``step_<N>.safetensors`` files (probe's parameter names, as stored,
  with the step in each file's metadata) and ``probe-export.json`` (config, task, split, steps and
  metric rows), which ``probe import`` reads back bit for bit;
- ``tl-demo``: one ``.pth`` as TransformerLens' grokking demo saves it: ``config`` (the
  ``HookedTransformerConfig`` keyword arguments, a plain dict), ``checkpoints`` (state dicts in
  TransformerLens' names, with the ``mask`` and ``IGNORE`` buffers ``HookedTransformer`` keeps),
  ``checkpoint_epochs`` (step - 1: the demo saves after epoch ``e``'s update), ``model`` (the last),
  ``train_losses``/``test_losses`` (per epoch as the demo records them, NaN where the run recorded no
  metric row) and ``train_indices``/``test_indices`` (order ``a * p + b``), plus ``probe`` (config,
  task and steps, so ``probe import`` restores the run exactly). Everything loads with
  ``torch.load(weights_only=True)``.

Output is written under a temporary name and renamed into place: a refused or failed export leaves
nothing behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from probe.errors import ProbeError
from probe.registry import Registry

if TYPE_CHECKING:
    from probe.run import Run

EXPORT_META = "probe-export.json"


@dataclass(frozen=True)
class ExportFormat:
    """One layout probe writes: ``refuse(run)`` says why a run cannot be written in it (None: it can),
    ``write(run, indices, tmp)`` writes the checkpoints ``indices`` to the path ``tmp`` (renamed to
    ``--out`` afterwards) and returns the files written."""

    name: str
    description: str
    refuse: Callable[["Run"], str | None]
    write: Callable[["Run", np.ndarray, Path], list[Path]]
    directory: bool


EXPORT_FORMATS: Registry[ExportFormat] = Registry("export format")


def export_format(name: str, description: str, refuse: Callable[["Run"], str | None],
                  directory: bool) -> Callable[[Callable[..., list[Path]]], Callable[..., list[Path]]]:
    def wrap(write: Callable[["Run", np.ndarray, Path], list[Path]]) -> Callable[..., list[Path]]:
        EXPORT_FORMATS.add(name, ExportFormat(name, description, refuse, write, directory))
        return write

    return wrap


@dataclass
class ExportResult:
    out: Path
    format: str
    steps: list[int]
    files: list[Path]


def export_checkpoints(run_dir: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str],
                       steps: Any = "all") -> ExportResult:
    """Write the checkpoints ``steps`` of the run at ``run_dir`` to ``out`` in format ``fmt``."""
    from probe.run import Run

    form = EXPORT_FORMATS.get(fmt)
    out = Path(out)
    if out.exists() and not (form.directory and out.is_dir() and not any(out.iterdir())):
        raise ProbeError(f"{out} already exists; choose a new path", param="out")
    if not out.resolve().parent.is_dir():
        raise ProbeError(f"cannot write {out}: directory {out.parent} does not exist", param="out")
    with Run(run_dir) as run:
        bad = form.refuse(run)
        if bad:
            raise ProbeError(f"{run.dir} cannot be exported as {fmt}: {bad}")
        missing = [n for n in run.parameters if n not in run.tensor_names]
        if missing:
            raise ProbeError(f"{run.dir} saved only some parameters (checkpoint.tensors); missing: "
                             f"{', '.join(missing[:6])}")
        idx = run.select(steps)
        tmp = out.resolve().parent / f".{out.name}.exporting-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        try:
            files = form.write(run, idx, tmp)
            if out.is_dir():
                out.rmdir()
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            raise
        return ExportResult(out=out, format=fmt, steps=[int(s) for s in run.steps[idx]],
                            files=[out / f.relative_to(tmp) if form.directory else out for f in files])


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(float(v)) else float(v) for v in values]


def run_record(run: "Run", idx: np.ndarray) -> dict[str, Any]:
    """What ``probe import`` needs besides the tensors to rebuild the run exactly: config, task (and a
    stored table), split (None for a run imported without one), steps and metric rows."""
    task = run.task
    no_split = (run.file.header.imported_from or {}).get("split_from") == "none"
    m = run.file.metrics()
    return {
        "format": "probe-export", "version": 1, "run": str(run.dir.resolve()),
        "config": run.config.to_dict(), "task": dict(run.file.task_spec),
        "symbols": list(task.symbols), "table": task.table.tolist() if "table" in run.file.f["task"] else None,
        "split": None if no_split else {"train": run.file.split.train.tolist(), "val": run.file.split.val.tolist()},
        "steps": [int(s) for s in run.steps[idx]],
        "metrics": {k: (m[k].astype(int).tolist() if k == "step" else _nan_to_none(m[k])) for k in m},
        "imported_from": run.file.header.imported_from,
    }


def _no_reason(run: "Run") -> str | None:
    return None


@export_format("safetensors", "a directory of step_<N>.safetensors files (probe's names) and probe-export.json",
               _no_reason, directory=True)
def write_safetensors(run: "Run", idx: np.ndarray, tmp: Path) -> list[Path]:
    from safetensors.numpy import save_file

    tmp.mkdir()
    width = max(8, len(str(int(run.steps[-1]))))
    files = []
    names = run.parameters
    static = run.static()
    if static:
        path = tmp / "static.safetensors"
        save_file({k: np.ascontiguousarray(v) for k, v in static.items()}, str(path), metadata={"format": "probe"})
        files.append(path)
    for i in idx.tolist():
        step = int(run.steps[i])
        ds = {n: run.file.series_dataset(n) for n in names}
        tensors = {n: np.ascontiguousarray(run.file.read(ds[n], i, step=step)) for n in names}
        path = tmp / f"step_{step:0{width}d}.safetensors"
        save_file(tensors, str(path), metadata={"format": "probe", "step": str(step)})
        files.append(path)
    meta = tmp / EXPORT_META
    meta.write_text(json.dumps(run_record(run, idx)))
    files.append(meta)
    return files


#: TransformerConfig keys that have no TransformerLens HookedTransformer equivalent, and the value it has
TL_EQUIVALENT = {"positional": "learned", "readout": "last", "block": "pre_ln", "attention_rate": 1.0,
                 "eq_token": True}


def _tl_refuse(run: "Run") -> str | None:
    model = run.config.model
    if model.kind != "transformer":
        return f"TransformerLens' demo holds a transformer; this run's model is {model.kind}"
    for key, want in TL_EQUIVALENT.items():
        if getattr(model, key) != want:
            return f"model.{key}={getattr(model, key)} has no equivalent in TransformerLens' HookedTransformer"
    if model.layernorm and not model.ln_final:
        return "model.ln_final=false has no equivalent in TransformerLens' HookedTransformer"
    if run.task.inputs.ndim != 2 or run.task.inputs.dtype.kind not in "iu":
        return "the demo's samples are operand pairs"
    return None


def tl_config(run: "Run") -> dict[str, Any]:
    """``HookedTransformerConfig`` keyword arguments for the run's transformer."""
    m = run.config.model
    d_vocab = run.task.n_symbols + int(m.eq_token) + int(m.op_token)
    return {"n_layers": m.n_layers, "d_model": m.d_model, "d_head": m.head_dim, "n_heads": m.n_heads,
            "d_mlp": m.d_mlp, "d_vocab": d_vocab, "d_vocab_out": run.task.n_classes, "n_ctx": m.n_ctx,
            "act_fn": m.act, "normalization_type": "LN" if m.layernorm else None,
            "attention_dir": "causal" if m.causal else "bidirectional", "positional_embedding_type": "standard"}


def tl_state_dict(run: "Run", index: int) -> dict[str, Any]:
    """Checkpoint ``index`` as ``HookedTransformer.state_dict()`` names it: probe's names (they are
    TransformerLens'), the biases a run without them lacks as zeros, and the attention buffers."""
    import torch

    m = run.config.model
    step = int(run.steps[index])
    out: dict[str, Any] = {n: torch.from_numpy(np.ascontiguousarray(run.file.read(run.file.series_dataset(n), index,
                                                                                  step=step)))
                           for n in run.parameters}
    dtype = out["embed.W_E"].dtype
    for layer in range(m.n_layers):
        pre = f"blocks.{layer}.attn"
        for name, shape in (("b_Q", (m.n_heads, m.head_dim)), ("b_K", (m.n_heads, m.head_dim)),
                            ("b_V", (m.n_heads, m.head_dim)), ("b_O", (m.d_model,))):
            out.setdefault(f"{pre}.{name}", torch.zeros(shape, dtype=dtype))
        out[f"{pre}.mask"] = torch.tril(torch.ones((m.n_ctx, m.n_ctx))).bool()
        out[f"{pre}.IGNORE"] = torch.tensor(-torch.inf)
    out.setdefault("unembed.b_U", torch.zeros(run.task.n_classes, dtype=dtype))
    return out


def grid_indices(run: "Run", which: str) -> np.ndarray:
    """The split's samples numbered as TransformerLens' demo numbers them: ``a * n + b``."""
    idx = getattr(run.file.split, which)
    pairs = run.task.inputs[idx]
    return (pairs[:, 0] * run.task.n_symbols + pairs[:, 1]).astype(np.int64)


@export_format("tl-demo", "one .pth as TransformerLens' grokking demo saves it (config, checkpoints, "
               "checkpoint_epochs, losses, train/test indices)", _tl_refuse, directory=False)
def write_tl_demo(run: "Run", idx: np.ndarray, tmp: Path) -> list[Path]:
    import torch

    steps = [int(s) for s in run.steps[idx]]
    m = run.file.metrics()
    last = steps[-1]
    train = np.full(last, np.nan)  # the demo's train_losses[e]: before epoch e's update (step e), e < its epochs
    test = np.full(last, np.nan)  # test_losses[e]: after it (step e + 1)
    for s, tr, va in zip(m["step"].tolist(), m["train_loss"], m["val_loss"]):
        if s < last:
            train[s] = tr
        if 1 <= s <= last:
            test[s - 1] = va
    checkpoints = [tl_state_dict(run, i) for i in idx.tolist()]
    data: dict[str, Any] = {
        "model": checkpoints[-1], "config": tl_config(run), "checkpoints": checkpoints,
        "checkpoint_epochs": [s - 1 for s in steps], "train_losses": train.tolist(), "test_losses": test.tolist(),
        "probe": {"config": run.config.to_dict(), "task": dict(run.file.task_spec), "steps": steps,
                  "symbols": list(run.task.symbols),
                  "table": run.task.table.tolist() if "table" in run.file.f["task"] else None},
    }
    if (run.file.header.imported_from or {}).get("split_from") != "none":
        data["train_indices"] = torch.from_numpy(grid_indices(run, "train"))
        data["test_indices"] = torch.from_numpy(grid_indices(run, "val"))
    try:
        torch.save(data, tmp)
    except OSError as exc:
        raise ProbeError(f"cannot write {tmp}: {exc.strerror or exc}") from None
    return [tmp]
