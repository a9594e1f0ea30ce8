"""Models rebuilt from a run's config: every one a TransformerLens ``HookedRootModule``.

Which class builds a model kind is declared where the kind's config is registered
(``probe.config.model_kind``); this module only looks it up and imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from probe.config import ModelConfig
    from probe.models.base import ProbeModel
    from probe.tasks import Task


def build_model(cfg: "ModelConfig", task: "Task") -> "ProbeModel":
    """Construct (and randomly initialise, from torch's global RNG) the model for ``task``."""
    module, _, name = type(cfg).builder.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls.for_task(cfg, task)
