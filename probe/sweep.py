"""Reading a sweep directory (made by ``probe sweep``, layout in :mod:`probe.train.sweep`): its runs,
their swept values, their states and their learning phases. Reading never touches the runs'
checkpoint series: states come from lock and status files, phases from the accuracy curves each
finished run's status record keeps (docs/design.md, "Sweeps and phases")."""

from __future__ import annotations

import fcntl
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from probe.errors import ProbeError
from probe.phases import PhaseRule, classify, majority
from probe.runfile import RUN_FILENAME

if TYPE_CHECKING:
    import pandas as pd

    from probe.run import Run

SPEC_FILE, INDEX_FILE, RUNS_DIR, STATUS_DIR = "sweep.yaml", "sweep.json", "runs", "status"
STATES = ("done", "running", "failed", "interrupted", "pending")


def read_index(root: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(root) / INDEX_FILE
    if not path.is_file():
        raise ProbeError(f"{root} is not a probe sweep (no {INDEX_FILE})")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ProbeError(f"{path} is unreadable or not JSON") from None
    if not isinstance(data, dict) or data.get("format") != "probe-sweep" or not isinstance(data.get("runs"), list):
        raise ProbeError(f"{path} is not a probe sweep index")
    names: set[str] = set()
    for i, entry in enumerate(data["runs"]):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not _RUN_NAME.fullmatch(name) or len(name.encode()) > 255:
            raise ProbeError(f"{path}: run {i} has no valid name (letters, digits and ._+=- , not starting with a dot)")
        if name in names:
            raise ProbeError(f"{path}: run name {name[:80]!r} appears twice")
        if not isinstance(entry.get("values"), dict) or not isinstance(entry.get("config"), dict):
            raise ProbeError(f"{path}: run {name[:80]!r} lacks its swept values or its config")
        names.add(name)
    for key in ("swept", "log_keys"):
        if not isinstance(data.get(key, []), list) or not all(isinstance(k, str) for k in data.get(key, [])):
            raise ProbeError(f"{path}: {key!r} must be a list of config keys")
    return data


_RUN_NAME = re.compile(r"[A-Za-z0-9_+=-][A-Za-z0-9._+=-]*")  # what point names are made of: safe file names


# --------------------------------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------------------------------
STATES = ("done", "running", "failed", "interrupted", "pending")


def _lock_held(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


RECORD_STATES = ("done", "failed")  # the states a status record holds; the others come from locks and run files


@dataclass(frozen=True)
class StatusRecord:
    """One run's status record, ``status/NAME.json``: written by :mod:`probe.train.sweep` when the run
    ends, read by ``probe sweep status`` and ``probe phases`` (docs/design.md, "Sweeps and phases").

    ``done`` records carry the run's accuracy curves (``step``, ``train_acc``, ``val_acc``,
    ``val_loss``), whether it finished, its number of checkpoints, its wall time, and for a member
    of a vectorised ensemble the ensemble's size; ``failed`` records a one-line ``reason``. Every
    field is type-checked both when a record is made and when one is read: ``finished`` is a JSON
    boolean, ``step`` a list of increasing integers, the curves lists of numbers of its length."""

    state: str
    reason: str = ""
    seconds: float | None = None
    ensemble: int | None = None
    step: tuple[int, ...] = ()
    train_acc: tuple[float, ...] = ()
    val_acc: tuple[float, ...] = ()
    val_loss: tuple[float, ...] = ()
    finished: bool = False
    checkpoints: int = 0

    def __post_init__(self) -> None:
        bad = self._problem()
        if bad:
            raise ValueError(bad)
        for name in ("step", "train_acc", "val_acc", "val_loss"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def _problem(self) -> str | None:
        def integer(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if self.state not in RECORD_STATES:
            return f"'state' must be one of {', '.join(RECORD_STATES)}, not {str(self.state)[:40]!r}"
        if not isinstance(self.reason, str):
            return "'reason' must be a string"
        if self.seconds is not None and not (number(self.seconds) and 0 <= self.seconds < float("inf")):
            return "'seconds' must be a number of seconds"
        if self.ensemble is not None and not (integer(self.ensemble) and self.ensemble >= 2):
            return "'ensemble' must be an integer >= 2"
        if not isinstance(self.finished, bool):
            return "'finished' must be true or false"
        if not (integer(self.checkpoints) and self.checkpoints >= 0):
            return "'checkpoints' must be a non-negative integer"
        if not isinstance(self.step, (list, tuple)) or not all(integer(v) and v >= 0 for v in self.step):
            return "'step' must be a list of non-negative integers"
        if any(b <= a for a, b in zip(self.step, self.step[1:])):
            return "'step' must increase"
        for name in ("train_acc", "val_acc", "val_loss"):
            curve = getattr(self, name)
            if not isinstance(curve, (list, tuple)) or not all(number(v) for v in curve):
                return f"{name!r} must be a list of numbers"
            if len(curve) != len(self.step):
                return f"{name!r} has {len(curve)} values for {len(self.step)} steps"
        return None

    def to_json(self) -> str:
        return json.dumps({f: (list(v) if isinstance(v, tuple) else v) for f, v in self.__dict__.items()
                           if v is not None})

    @classmethod
    def from_json(cls, text: str) -> "StatusRecord":
        """Parse and check a record; ValueError naming what is wrong. Keys this version does not
        know are ignored (a newer probe may add some)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "state" not in known:
            raise ValueError("'state' is missing")
        return cls(**known)


def status_path(root: Path, name: str) -> Path:
    return root / STATUS_DIR / f"{name}.json"


def load_status(root: Path, name: str) -> tuple[StatusRecord | None, str]:
    """``(record, problem)``: the run's status record (None when it has none or it is unusable) and,
    for an unusable one, why."""
    path = status_path(root, name)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, ""
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"status record {path.name} is unreadable ({getattr(exc, 'strerror', None) or exc})"
    try:
        return StatusRecord.from_json(text), ""
    except (ValueError, TypeError, RecursionError) as exc:
        why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        return None, f"status record {path.name} is damaged ({why}); running the sweep again checks the run anew"


def read_status(root: Path, name: str) -> StatusRecord | None:
    """The run's status record, or None when it has none or it is unusable."""
    return load_status(root, name)[0]


def state_of(root: Path, name: str) -> tuple[str, str]:
    """``(state, reason)`` of one run of the sweep."""
    if _lock_held(root / STATUS_DIR / f"{name}.lock"):
        return "running", ""
    rec, problem = load_status(root, name)
    if rec is not None:
        return rec.state, rec.reason
    if (root / RUNS_DIR / name / RUN_FILENAME).exists():
        return "interrupted", problem
    return "pending", problem


def sweep_status(root: str | os.PathLike[str]) -> list[tuple[str, str, str]]:
    """``(name, state, reason)`` per run, in grid order."""
    base = Path(root)
    return [(r["name"], *state_of(base, r["name"])) for r in read_index(base)["runs"]]




@dataclass(frozen=True)
class Sweep:
    """A sweep directory: ``names`` in grid order, ``values`` (one row per run, one column per swept
    key), the swept keys and which of them were log-spaced."""

    root: Path
    names: list[str]
    swept: list[str]
    log_keys: set[str]
    index: dict[str, Any]

    @property
    def values(self) -> "pd.DataFrame":
        import pandas as pd

        return pd.DataFrame([{"run": r["name"], **r["values"]} for r in self.index["runs"]])

    def run_dir(self, name: str) -> Path:
        return self.root / RUNS_DIR / name

    def run(self, name: str) -> "Run":
        from probe.run import load_run

        return load_run(self.run_dir(name))

    def done_runs(self) -> Iterator[tuple[str, "Run"]]:
        """``(name, run)`` of every finished run in grid order, each open while the caller reads it.
        A finished run whose file cannot be opened (removed or damaged since) is left out; what the
        caller raises while reading an open run (a metric that refuses it) is not caught here."""
        from probe.run import load_run

        for name in self.names:
            if state_of(self.root, name)[0] != "done":
                continue
            try:
                run = load_run(self.run_dir(name))
            except (OSError, ProbeError):
                continue
            with run:
                yield name, run

    def status(self) -> "pd.DataFrame":
        """One row per run: name, state (done, running, failed, interrupted, pending), reason."""
        import pandas as pd

        return pd.DataFrame(sweep_status(self.root), columns=["run", "state", "reason"])

    def phases(self, rule: PhaseRule = PhaseRule()) -> "pd.DataFrame":
        """Liu App. A Table 1 per run (from the status records' curves): the swept values, the first
        steps where train and validation accuracy pass the threshold, the delay, the phase, and with
        several seeds per grid point the majority phase and its share. The rule's three numbers are
        in ``df.attrs["probe"]``."""
        import pandas as pd

        rows = []
        for r in self.index["runs"]:
            rec = read_status(self.root, r["name"])
            row: dict[str, Any] = {"run": r["name"], **r["values"]}
            if rec is not None and rec.state == "done" and rec.step:
                res = classify(np.asarray(rec.step), np.asarray(rec.train_acc), np.asarray(rec.val_acc), rule)
                row.update(train_step=res.train_step, val_step=res.val_step, delay=res.delay, phase=res.phase)
            else:
                state = state_of(self.root, r["name"])[0]
                row.update(train_step=float("nan"), val_step=float("nan"), delay=float("nan"), phase=f"n/a ({state})")
            rows.append(row)
        df = pd.DataFrame(rows)
        point_keys = [k for k in self.swept if k not in ("seed", "split_seed")]
        if len(point_keys) < len(self.swept) and len(df):
            groups = df.groupby(point_keys, dropna=False, sort=False) if point_keys else [((), df)]
            for _, g in groups:
                best, share = majority([p for p in g["phase"] if not str(p).startswith("n/a")])
                df.loc[g.index, "majority_phase"] = best
                df.loc[g.index, "majority_share"] = share
        df.attrs["probe"] = {"phases": {"threshold": rule.threshold, "budget": rule.budget, "delay": rule.delay}}
        return df


def load_sweep(root: str | os.PathLike[str]) -> Sweep:
    """Open a sweep directory made by ``probe sweep``."""
    base = Path(root)
    index = read_index(base)
    return Sweep(base, [r["name"] for r in index["runs"]], list(index.get("swept", [])),
                 set(index.get("log_keys", [])), index)
