"""The Run loading API: ``run = probe.load_run(RUN_DIR)``.

A :class:`Run` is a read-only view of one run file: its config, task, split, checkpoint steps,
per-step training metrics, and the checkpointed tensors, which are read lazily (one checkpoint, or
one tensor across time in chunks) so a long series never has to fit in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from probe.config import TrainConfig
from probe.errors import ProbeError
from probe.runfile import RunFile, run_file_path
from probe.tasks import Split, Task, task_from_spec

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from probe.models.base import ProbeModel


@dataclass(frozen=True)
class Checkpoint:
    """One saved step of a run; tensors are read when asked for."""

    run: "Run"
    step: int
    index: int

    def params(self) -> dict[str, "torch.Tensor"]:
        return self.run.params(self.step)

    def model(self, device: str = "cpu") -> "ProbeModel":
        return self.run.model(self.step, device=device)

    def embeddings(self) -> "torch.Tensor":
        return self.run.embeddings(self.step)


class Run:
    """A training run on disk. Use :func:`load_run` to open one."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = run_file_path(run_dir)
        self.dir = self.path.parent
        self._file = RunFile(self.path)
        try:
            self.config = TrainConfig.from_dict(self._file.config)
        except ProbeError as exc:
            self._file.close()
            raise ProbeError(f"{self.path} holds an invalid config: {exc}") from None

    # lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def refresh(self) -> None:
        """Pick up checkpoints and metrics written since opening (the run may still be training)."""
        self._file.refresh()
        self.__dict__.pop("steps", None)

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

    @cached_property
    def task(self) -> Task:
        return task_from_spec(self._file.task_spec)

    @cached_property
    def split(self) -> Split:
        return Split(train=np.asarray(self._file.f["split/train"][:]), val=np.asarray(self._file.f["split/val"][:]))

    @cached_property
    def steps(self) -> np.ndarray:
        """Steps of the committed checkpoints, increasing."""
        return self._file.steps

    @property
    def finished(self) -> bool:
        return bool(self._file.f.attrs.get("finished", False))

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._file.f.attrs)

    @property
    def metrics(self) -> "pd.DataFrame":
        """Per-step training metrics: step, train_loss, train_acc, val_loss, val_acc, lr."""
        import pandas as pd

        return pd.DataFrame(self._file.metrics())

    @property
    def tensor_names(self) -> list[str]:
        return self._file.tensor_names

    @property
    def checkpoints(self) -> list[Checkpoint]:
        return [Checkpoint(self, int(s), i) for i, s in enumerate(self.steps)]

    def checkpoint(self, step: int | str) -> Checkpoint:
        """The checkpoint at ``step`` (an int, or ``"first"`` / ``"last"``)."""
        return Checkpoint(self, *self._locate(step)[::-1])

    def _locate(self, step: int | str) -> tuple[int, int]:
        steps = self.steps
        if len(steps) == 0:
            raise ProbeError(f"run {self.dir} has no checkpoints yet")
        if step == "last":
            return len(steps) - 1, int(steps[-1])
        if step == "first":
            return 0, int(steps[0])
        try:
            step = int(step)
        except (TypeError, ValueError):
            raise ProbeError(f"step must be an integer, 'first' or 'last', got {step!r}") from None
        i = int(np.searchsorted(steps, step))
        if i < len(steps) and steps[i] == step:
            return i, step
        near = sorted({int(steps[max(i - 1, 0)]), int(steps[min(i, len(steps) - 1)])})
        raise ProbeError(f"step {step} is not a checkpoint of {self.dir} (checkpoints {steps[0]}..{steps[-1]}; "
                         f"nearest: {', '.join(map(str, near))})")

    # tensors -------------------------------------------------------------------------------------
    def params(self, step: int | str) -> dict[str, "torch.Tensor"]:
        """All saved tensors at ``step``, by parameter name (float32 tensors on CPU)."""
        import torch

        i, _ = self._locate(step)
        return {name: torch.from_numpy(np.asarray(self._file.tensor_series(name)[i], dtype=np.float32))
                for name in self.tensor_names}

    def series(self, name: str, steps: slice | np.ndarray | None = None) -> np.ndarray:
        """One tensor across checkpoints: ``[T, *shape]`` (``steps`` selects checkpoint indices)."""
        ds = self._file.tensor_series(name)
        n = len(self.steps)
        if steps is None:
            return np.asarray(ds[:n])
        if isinstance(steps, slice):
            return np.asarray(ds[:n][steps]) if steps.step not in (None, 1) else np.asarray(ds[steps][: n])
        return np.asarray(ds[np.asarray(steps)])

    def iter_tensor(self, name: str, chunk: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream one tensor across all checkpoints: yields ``(steps[c], values[c, *shape])``.

        Memory stays at one chunk, whatever the length of the series.
        """
        if chunk < 1:
            raise ProbeError(f"chunk must be >= 1, got {chunk}")
        ds = self._file.tensor_series(name)
        steps = self.steps
        for lo in range(0, len(steps), chunk):
            hi = min(lo + chunk, len(steps))
            yield steps[lo:hi], np.asarray(ds[lo:hi])

    def static(self) -> dict[str, np.ndarray]:
        """Fixed tensors that are not trained (e.g. the toy model's regression targets)."""
        return self._file.static()

    def model(self, step: int | str, device: str = "cpu") -> "ProbeModel":
        """A ``HookedRootModule`` with the weights of ``step`` (``run_with_cache`` / ``run_with_hooks`` work)."""
        from probe.models import build_model

        model = build_model(self.config.model, self.task)
        self.load_weights(model, step)
        return model.to(device).eval()

    def load_weights(self, model: "ProbeModel", step: int | str) -> "ProbeModel":
        """Copy the weights of ``step`` (and the run's fixed buffers) into ``model``, built from this
        run's config, in place: a series of checkpoints can reuse one model."""
        import torch

        i, _ = self._locate(step)
        names = self.tensor_names
        missing = [n for n in self._param_names if n not in names]
        if missing:
            raise ProbeError(f"step {step}: the run saved only {', '.join(names)}; a model needs "
                             f"every parameter (missing: {', '.join(missing)}); train with checkpoint.tensors='*'")
        static = self.static()
        with torch.no_grad():
            for name, param in model.named_parameters():
                row = np.asarray(self._file.tensor_series(name)[i], dtype=np.float32)
                param.copy_(torch.from_numpy(row).to(param.device))
            for name, buf in model.named_buffers():
                if name in static:
                    buf.copy_(torch.from_numpy(static[name]).to(buf.device))
        return model

    @cached_property
    def _param_names(self) -> list[str]:
        import json

        return list(json.loads(self._file.f.attrs["parameters"]))

    def embeddings(self, step: int | str) -> "torch.Tensor":
        """The symbol embeddings at ``step``: ``[n_symbols, d]`` (``[n, d, d]`` for matrix embeddings).

        For the transformer these are the rows of ``embed.W_E`` for the task's symbols (the ``=``
        and op tokens are excluded).
        """
        name = "embed.W_E"
        if self.config.model.kind == "digits":
            raise ProbeError("the digits model has no symbol embeddings")
        if name not in self.tensor_names:
            raise ProbeError(f"the run did not save {name} (saved: {', '.join(self.tensor_names)})")
        import torch

        i, _ = self._locate(step)
        w = np.asarray(self._file.tensor_series(name)[i], dtype=np.float32)
        return torch.from_numpy(w[: self.task.n_symbols])

    def hook_names(self) -> list[str]:
        from probe.models import build_model

        return list(build_model(self.config.model, self.task).hook_dict)

    def dataset(self, which: str = "all", device: str = "cpu") -> tuple["torch.Tensor", "torch.Tensor"]:
        """Model inputs and labels for ``which`` in {all, train, val}, ready for ``run.model(step)``."""
        import torch

        from probe.models import build_model

        idx = {"all": np.arange(self.task.n_samples), "train": self.split.train, "val": self.split.val}
        if which not in idx:
            raise ProbeError(f"unknown sample set {which!r} (valid: all, train, val)")
        model = build_model(self.config.model, self.task)
        x = model.model_inputs(torch.as_tensor(self.task.inputs[idx[which]]))
        return x.to(device), torch.as_tensor(self.task.labels[idx[which]]).to(device)


def load_run(run_dir: str | os.PathLike[str]) -> Run:
    """Open a run directory (or its ``run.h5``) read-only."""
    return Run(run_dir)


def _run_dir(path: str | os.PathLike[str]) -> Path:
    return run_file_path(path).parent
