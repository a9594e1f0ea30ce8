"""Models rebuilt from a run's config: every one a TransformerLens ``HookedRootModule``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from probe.config import ModelConfig
    from probe.models.base import ProbeModel
    from probe.tasks import Task


def build_model(cfg: "ModelConfig", task: "Task") -> "ProbeModel":
    """Construct (and randomly initialise, from torch's global RNG) the model for ``task``."""
    from probe.models.mlp import ConcatMLP, DigitsMLP, ToyModel
    from probe.models.transformer import Transformer

    if cfg.kind == "transformer":
        return Transformer(cfg, task.n_symbols, task.n_classes)
    if cfg.kind == "toy":
        return ToyModel(cfg, task.n_symbols, task.n_classes)
    if cfg.kind == "mlp":
        return ConcatMLP(cfg, task.n_symbols, task.n_classes)
    return DigitsMLP(cfg, task.inputs.shape[1], task.n_classes)
