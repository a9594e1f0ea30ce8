"""probe's trainer: presets, config loading, checkpoint schedules and the training loop."""

from train.config import PRESETS, load_config
from train.loop import resume, train

__all__ = ["PRESETS", "load_config", "resume", "train"]
