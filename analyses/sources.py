"""Checkpoint series the analyses read: a probe run, or plain arrays of embeddings.

Both are a :class:`probe.run.CheckpointSource`, the one interface in the core (docs/design.md, "One
way to do each thing"): a :class:`probe.run.Run` is one as it is, and :class:`ArraySource` wraps
embeddings ``[T, n_symbols, ...]`` with a task and split. A :class:`probe.run.Checkpoint` of either
reads through that interface alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from probe.errors import ProbeError
from probe.run import CheckpointSource, Run
from probe.tasks import Split, Task

if TYPE_CHECKING:
    from probe.config import TrainConfig
    from probe.models.base import ProbeModel

class ArraySource:
    """Embeddings ``[T, n_symbols, ...]`` (or one checkpoint ``[n_symbols, ...]``) with a task and split:
    a :class:`~probe.run.CheckpointSource` without a config, model, saved tensors or cache."""

    config: "TrainConfig | None" = None
    has_model = False
    cache_dir: Path | None = None

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
        if np.any(np.diff(self.steps) <= 0):
            raise ProbeError("steps must increase", param="steps")
        self.embed_lr = embed_lr

    @property
    def tensor_names(self) -> list[str]:
        return []

    @property
    def parameters(self) -> list[str]:
        return []

    def read_embeddings(self, indices: np.ndarray) -> np.ndarray:
        return self.e[np.asarray(indices)]

    def read_tensor(self, index: int, name: str, dtype: Any = np.float64) -> np.ndarray:
        raise ProbeError(f"this metric needs the parameter {name}; plain embedding arrays do not have it")

    def read_series(self, indices: np.ndarray, name: str) -> np.ndarray:
        raise ProbeError(f"this metric needs the parameter {name}; plain embedding arrays do not have it")

    def load_model(self, index: int, device: str = "cpu") -> "ProbeModel":
        raise ProbeError("this metric needs a model forward pass; analyse a probe run")

    def content_key(self, indices: np.ndarray) -> str | None:
        return None  # arrays in memory are not cached


def as_source(source: Any, task: Task | None = None, split: Split | None = None, **kw: Any) -> CheckpointSource:
    """A run, a run directory (opened read-only), any :class:`~probe.run.CheckpointSource`, or
    embeddings with ``task`` (and ``split``)."""
    if isinstance(source, (str, os.PathLike)):
        return Run(source)
    if isinstance(source, (Run, ArraySource)) or (not isinstance(source, np.ndarray) and
                                                   isinstance(source, CheckpointSource)):
        return source
    if task is None:
        raise ProbeError("analysing plain arrays needs task= (and split= for split-dependent metrics)")
    return ArraySource(source, task, split, **kw)
