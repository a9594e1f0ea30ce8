"""Checkpoint series the analyses read: a probe run, or plain arrays of embeddings.

A source knows its task, split and steps and reads embeddings, tensors and models for
:class:`probe.run.Checkpoint`; a run source reads everything through :class:`probe.Run`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from probe.errors import ProbeError
from probe.run import Run
from probe.tasks import Split, Task

if TYPE_CHECKING:
    from probe.config import TrainConfig
    from probe.models.base import ProbeModel

CACHE_DIR = "analysis"


class Source:
    task: Task
    split: Split
    steps: np.ndarray
    config: "TrainConfig | None" = None
    embed_lr: float | None = None
    has_model: bool = False
    device: str = "cpu"

    def read_embeddings(self, indices: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def load_model(self, index: int) -> "ProbeModel":
        raise ProbeError("this metric needs a model forward pass; analyse a probe run")

    def read_tensor(self, index: int, name: str) -> np.ndarray:
        raise ProbeError(f"this metric needs the parameter {name}; plain embedding arrays do not have it")

    def read_series(self, indices: np.ndarray, name: str) -> np.ndarray:
        """One saved tensor at several checkpoints, float64 ``[len(indices), *shape]``."""
        raise ProbeError(f"this metric needs the parameter {name}; plain embedding arrays do not have it")

    @property
    def tensor_names(self) -> list[str]:
        """Names of the parameters the series saved (none for plain arrays)."""
        return []

    @property
    def parameters(self) -> list[str]:
        """Names of all the model's parameters (saved or not)."""
        return []

    def content_key(self, indices: np.ndarray) -> str | None:
        """A hash of the data an analysis of ``indices`` reads (None: do not cache)."""
        return None

    @property
    def cache_dir(self) -> Path | None:
        return None


class RunSource(Source):
    """Checkpoints of a probe run, read through :class:`probe.Run`."""

    has_model = True

    def __init__(self, run: Run) -> None:
        self.run = run
        self.task = run.task
        self.split = run.split
        self.steps = np.asarray(run.steps)
        self.config = run.config
        self.embed_lr = run.config.resolved_embed_lr
        self._content_keys: dict[bytes, str] = {}

    def read_embeddings(self, indices: np.ndarray) -> np.ndarray | None:
        return self.run.read_embeddings(indices)

    def load_model(self, index: int) -> "ProbeModel":
        return self.run.load_model(index, self.device)

    def read_tensor(self, index: int, name: str) -> np.ndarray:
        return self.run.read_tensor(index, name)

    def read_series(self, indices: np.ndarray, name: str) -> np.ndarray:
        return self.run.series(name, np.asarray(indices, dtype=np.int64)).astype(np.float64)

    @property
    def tensor_names(self) -> list[str]:
        return self.run.tensor_names

    @property
    def parameters(self) -> list[str]:
        return list(self.run.file.parameters)

    def content_key(self, indices: np.ndarray) -> str:
        """Computed once per selection: every metric of one ``compute`` call keys its cache with it."""
        key = np.asarray(indices, dtype=np.int64).tobytes()
        if key not in self._content_keys:
            self._content_keys[key] = self.run.content_key(indices)
        return self._content_keys[key]

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
        if np.any(np.diff(self.steps) <= 0):
            raise ProbeError("steps must increase", param="steps")
        self.embed_lr = embed_lr

    def read_embeddings(self, indices: np.ndarray) -> np.ndarray:
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
