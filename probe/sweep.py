"""Reading a sweep directory (made by ``probe sweep``, layout in :mod:`probe.train.sweep`): its runs,
their swept values, their states and their learning phases. Reading never touches the runs'
checkpoint series: states come from lock and status files, phases from the accuracy curves each
finished run's status record keeps (docs/design.md, "Sweeps and phases")."""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    return data


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


def read_status(root: Path, name: str) -> dict[str, Any] | None:
    path = root / STATUS_DIR / f"{name}.json"
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def state_of(root: Path, name: str) -> tuple[str, str]:
    """``(state, reason)`` of one run of the sweep."""
    if _lock_held(root / STATUS_DIR / f"{name}.lock"):
        return "running", ""
    rec = read_status(root, name)
    if rec is not None and rec.get("state") in ("done", "failed"):
        return rec["state"], str(rec.get("reason", ""))
    if (root / RUNS_DIR / name / RUN_FILENAME).exists():
        return "interrupted", ""
    return "pending", ""


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
            if rec is not None and rec.get("state") == "done" and rec.get("step"):
                res = classify(rec["step"], rec["train_acc"], rec["val_acc"], rule)
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
