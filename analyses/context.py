"""What a metric sees besides its checkpoint: the task, split and config of the series, the device,
memoised structures shared across checkpoints, and the notes a metric files with its result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from probe.analyses.passes import mode_from_env
from probe.errors import ProbeError
from probe.run import Checkpoint, CheckpointSource, select_steps
from probe.tasks import Split, Task

if TYPE_CHECKING:
    import torch

    from probe.config import TrainConfig


class Context:
    """Per-series state: task, split, config (None for plain arrays), the embedding learning rate,
    the torch device, a memo for structures computed once (a metric family's own, e.g. the
    parallelogram set), the notes each metric records, and the chunk of checkpoints being worked
    through with the form of the shared passes (``passes``: ``batched``, the default, or
    ``checkpoint``; default from ``PROBE_PASSES``)."""

    def __init__(self, source: CheckpointSource, device: str = "cpu", passes: str | None = None) -> None:
        self.source = source
        self.task: Task = source.task
        self.split: Split = source.split
        self.config: "TrainConfig | None" = source.config
        self.embed_lr: float | None = source.embed_lr
        #: torch device for forward passes; array maths runs there too when it is not the CPU
        self.device = device
        self.array_device: str | None = None if device == "cpu" else device
        self.cache: dict[Any, Any] = {}
        self.notes: dict[str, list[str]] = {}
        self.current = ""  # the metric being computed (notes are filed under it)
        #: the form of the forward passes, ``batched`` or ``checkpoint`` (:mod:`probe.analyses.passes`)
        self.passes = passes if passes is not None else mode_from_env()
        #: the checkpoint indices the runner is working through (the batched passes stack them)
        self.chunk: tuple[int, ...] = ()

    def embeddings_at(self, step: Any) -> np.ndarray:
        """Symbol embeddings at another checkpoint (``"first"``, ``"last"`` or a step), memoised."""
        index = int(select_steps(self.source.steps, str(step))[0])

        def read() -> np.ndarray:
            emb = self.source.read_embeddings(np.array([index]))
            if emb is None:
                raise ProbeError("this model has no symbol embeddings")
            return emb[0]

        return self.memo(("embeddings", index), read)

    def checkpoint_at(self, step: Any) -> "Checkpoint":
        """Another checkpoint of the series (``"first"``, ``"last"`` or a step), on this context's device."""
        index = int(select_steps(self.source.steps, str(step))[0])
        return Checkpoint(self.source, int(self.source.steps[index]), index, device=self.device)

    def model_inputs(self, model: Any) -> "torch.Tensor":
        """The task's samples as ``model`` inputs on this context's device (built once)."""
        import torch

        return self.memo("model_inputs",
                         lambda: model.model_inputs(torch.as_tensor(self.task.inputs)).to(self.device))

    def memo(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def memo_step(self, key: Any, index: int, make: Callable[[], Any]) -> Any:
        """Like :meth:`memo`, but only the latest checkpoint's value is kept (memory stays flat)."""
        held = self.cache.get(("step", key))
        if held is None or held[0] != index:
            held = (index, make())
            self.cache[("step", key)] = held
        return held[1]

    def begin_chunk(self, indices: Any) -> None:
        """The runner starts a chunk of checkpoints: what the previous chunk's passes held is dropped."""
        self.chunk = tuple(int(i) for i in indices)
        for key in [k for k in self.cache if isinstance(k, tuple) and k and str(k[0]).startswith("pass_")
                    and k[0] not in ("pass_model", "pass_width")]:
            del self.cache[key]

    def note(self, text: str) -> None:
        held = self.notes.setdefault(self.current, [])
        if text not in held:
            held.append(text)

    def notes_for(self, metric: str) -> list[str]:
        return list(self.notes.get(metric, []))
