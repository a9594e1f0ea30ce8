"""probe's trainer (installed as ``probe.train``): presets, config loading and the training loop.

Checkpoint schedules live in :mod:`probe.schedules` (configs validate against them); this package
builds on probe's core and never imports the analyses.
"""

from probe.train.config import PRESETS, load_config
from probe.train.loop import resume, train

__all__ = ["PRESETS", "load_config", "resume", "train"]
