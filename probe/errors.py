"""The one user-facing error type.

Everything a user can get wrong (a missing run, an unknown preset, an ill-typed config value, a
metric that does not apply) raises :class:`ProbeError`. The CLI turns it into one line on stderr
and exit code 2; library callers can catch it like any exception.
"""

from __future__ import annotations


class ProbeError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


def did_you_mean(name: str, valid: list[str] | tuple[str, ...]) -> str:
    """Return ' (valid: a, b, c)' listing the valid choices, sorted."""
    return f" (valid: {', '.join(sorted(valid))})"
