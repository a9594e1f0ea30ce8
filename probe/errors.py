"""The one user-facing error type, and the one way to list valid choices.

Everything a user can get wrong (a missing run, an unknown preset, an ill-typed config value, a
metric that does not apply) raises :class:`ProbeError`. The CLI turns it into one line on stderr
and exit code 2; library callers can catch it like any exception.

Library errors about a parameter name the parameter (``param="delta"``); the command line shows
the same message with the flag (``--delta``) instead.
"""

from __future__ import annotations

from typing import Iterable


class ProbeError(Exception):
    """A problem with the user's input, reported as one line without a traceback.

    ``param``: the library parameter the message is about, if any. ``str(exc)`` reads
    ``"delta: must be a positive number"``; :meth:`for_cli` reads ``"--delta: ..."``.
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        self.message = message
        self.param = param
        super().__init__(f"{param}: {message}" if param else message)

    def for_cli(self) -> str:
        """The message as the command line shows it (parameter names become ``--flags``)."""
        if self.param:
            return f"--{self.param.replace('_', '-')}: {self.message}"
        return self.message


def valid(choices: Iterable[object]) -> str:
    """``' (valid: a, b, c)'``: the one way every error lists the accepted choices."""
    return f" (valid: {', '.join(str(c) for c in choices)})"


class RunWriteError(ProbeError):
    """Writing a run file failed (disk full, I/O error). What was committed is intact, but the HDF5
    library's state for that file is not: the command line exits at once, as a kill would, rather
    than let the library tear the file down."""
