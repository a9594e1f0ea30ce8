"""Extensions that live outside the package: the modules named in ``PROBE_PLUGINS``.

A module that registers a task, a model kind, a metric, a figure or a trainer option (an
intervention with its config section) works in Python as soon as it is imported. For the command
line and for the workers a sweep starts, ``PROBE_PLUGINS`` names such modules (comma-separated,
importable from ``sys.path`` or ``PYTHONPATH``); every ``probe`` command and every sweep worker
imports them before it reads a config or a run (docs/design.md, "Adding a trainer option"). Workers
inherit the variable from the ``probe sweep`` that starts them (locally, and through Slurm, which
exports the submitting environment).

Only the modules the variable names are imported: nothing of probe's own layers, and nothing found
by searching.
"""

from __future__ import annotations

import importlib
import os
import sys

from probe.errors import ProbeError

ENV = "PROBE_PLUGINS"


def plugin_names(value: str | None = None) -> list[str]:
    """The module names ``PROBE_PLUGINS`` (or ``value``) holds, in order, without repeats."""
    raw = os.environ.get(ENV, "") if value is None else value
    names: list[str] = []
    for part in raw.split(","):
        name = part.strip()
        if not name:
            continue
        if not all(piece.isidentifier() for piece in name.split(".")):
            raise ProbeError(f"{ENV}: {name!r} is not a module name (modules are separated by commas)")
        if name not in names:
            names.append(name)
    return names


def load_plugins(value: str | None = None) -> list[str]:
    """Import the modules ``PROBE_PLUGINS`` names (a module imported before is not imported again, so
    its registrations happen once per process). A module that cannot be imported is one
    :class:`ProbeError` naming it and why."""
    names = plugin_names(value)
    for name in names:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except ProbeError:
            raise
        except Exception as exc:  # the plugin's own failure, reported in one line
            raise ProbeError(f"{ENV}: cannot import {name!r}: {type(exc).__name__}: {exc}") from None
    return names
