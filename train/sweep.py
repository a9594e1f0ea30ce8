"""Sweeps: a grid of ordinary runs from one YAML spec, trained locally or on Slurm through submitit.

A sweep spec::

    preset: liu-toy-add            # or  config: base.yaml  (a file, relative to the spec)
    set: {steps: 2000}             # fixed overrides for every run
    grid:                          # axes over any config key
      lr: {logspace: [1e-4, 1e-2, 11]}
      weight_decay: {linspace: [0, 10, 11]}
      model.d_embed: [1, 2]
    zip:                           # axes that move together (one grid axis)
      train_fraction: [0.3, 0.5]
      steps: [4000, 2000]
    seeds: [0, 1, 2]               # model seeds (an axis named seed)
    split_seeds: [0]               # split seeds (an axis named split_seed)

A spec may also start every run from a checkpoint of another run, as ``probe train --from`` does:
``from: RUN_DIR[:STEP]`` (relative to the spec file; the last checkpoint unless STEP is given), with
``from_optimizer: true`` to take its optimizer state too. The parent's config is then the base the
overrides apply to, and only the optimizer, data and training settings may differ from it. ``from``
may also be an axis of ``grid`` or ``zip`` (for example zipped with ``seed``, one parent per seed).
A sweep with a parent is a second stage: its parents must exist when it is expanded.

A sweep directory holds the spec (``sweep.yaml``), the resolved grid (``sweep.json``: each run's
name, swept values and full config), one ordinary run directory per grid point under ``runs/``, and
per-run status records under ``status/`` (``NAME.json``: done with the run's accuracy curves, or
failed with a one-line reason; ``NAME.lock``: held while a process trains the run), and the
vectorised ensembles its first launch planned (``ensembles.json``). Running the same spec into the
same directory again finishes what is missing: finished runs are skipped, interrupted ones resumed,
an interrupted ensemble as that ensemble, so that the runs end as if uninterrupted (docs/design.md,
"Sweeps").
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import logging
import math
import os
import re
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from probe.config import TrainConfig
from probe.errors import ProbeError, valid
from probe.plugins import load_plugins
from probe.runfile import RUN_FILENAME
from probe.sweep import (INDEX_FILE, RUNS_DIR, SPEC_FILE, STATES, STATUS_DIR, StatusRecord, read_index,
                         read_status, state_of, status_path)
from probe.yamlfile import load_yaml

SPEC_KEYS = ("preset", "config", "from", "from_optimizer", "set", "grid", "zip", "seeds", "split_seeds")
#: the spec key (top level, or an axis of ``grid``/``zip``) naming the run each run starts from
FROM = "from"
#: ``local``: worker processes on this machine; ``slurm``: array jobs through submitit; ``inline``: the
#: groups one after another in the calling process (no worker to start: debugging, profiling, tests)
EXECUTORS = ("local", "slurm", "inline")
MAX_RUNS = 100_000
LOCAL_TIMEOUT_MIN = 60 * 24 * 30  # local jobs: no practical time limit (--time sets one)


@dataclass(frozen=True)
class Axis:
    """One grid axis: one or more config keys that take their values together."""

    keys: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]  # one tuple (a value per key) per grid position
    log: bool = False  # values were log-spaced (figures use log axes)


@dataclass(frozen=True)
class SweepPoint:
    name: str
    values: dict[str, Any]  # swept key -> value
    config: TrainConfig = field(repr=False)
    parent: str | None = None  # RUN_DIR[:STEP] (absolute) this run starts from, if any
    parent_optimizer: bool = False


@dataclass(frozen=True)
class SweepSpec:
    preset: str | None
    config: Path | None
    fixed: dict[str, Any]
    axes: tuple[Axis, ...]
    text: str  # the spec as written
    parent: str | None = None  # ``from``: RUN_DIR[:STEP], relative to ``where``'s folder
    parent_optimizer: bool = False
    where: Path | None = None  # the spec file (relative paths resolve against its folder)

    @property
    def swept(self) -> list[str]:
        return [k for a in self.axes for k in a.keys]

    @property
    def log_keys(self) -> set[str]:
        return {k for a in self.axes if a.log for k in a.keys}


# --------------------------------------------------------------------------------------------------
# spec
# --------------------------------------------------------------------------------------------------
def _axis_values(key: str, raw: Any) -> tuple[list[Any], bool]:
    """An axis written as a list, ``{logspace: [a, b, n]}`` or ``{linspace: [a, b, n]}``."""
    if isinstance(raw, list):
        if not raw:
            raise ProbeError(f"grid axis {key!r} is empty")
        return list(raw), False
    if isinstance(raw, dict) and len(raw) == 1:
        (kind, args), = raw.items()
        if kind in ("logspace", "linspace"):
            if not (isinstance(args, list) and len(args) == 3):
                raise ProbeError(f"grid axis {key!r}: {kind} takes [start, stop, count], got {args!r}")
            try:
                a, b, n = float(args[0]), float(args[1]), int(args[2])
            except (TypeError, ValueError):
                raise ProbeError(f"grid axis {key!r}: {kind} takes numbers [start, stop, count], got {args!r}") from None
            if n < 1 or n > MAX_RUNS:
                raise ProbeError(f"grid axis {key!r}: count must be in 1..{MAX_RUNS}, got {n}")
            if kind == "logspace":
                if a <= 0 or b <= 0:
                    raise ProbeError(f"grid axis {key!r}: logspace needs positive ends, got {args!r}")
                vals = np.logspace(math.log10(a), math.log10(b), n)
            else:
                vals = np.linspace(a, b, n)
            return [float(f"{v:.6g}") for v in vals], kind == "logspace"
    raise ProbeError(f"grid axis {key!r}: expected a list of values, {{logspace: [a, b, n]}} or "
                     f"{{linspace: [a, b, n]}}, got {raw!r}")


def parse_spec(text: str, where: Path | None = None) -> SweepSpec:
    """Validate a sweep spec (YAML text); ``where`` resolves a relative ``config:`` path."""
    data = load_yaml(text, "the sweep spec")
    if not isinstance(data, dict):
        raise ProbeError("the sweep spec must be a mapping (preset/config, set, grid, zip, seeds, split_seeds)")
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise ProbeError(f"unknown sweep spec key {unknown[0]!r}{valid(SPEC_KEYS)}")
    preset = data.get("preset")
    cfg_path = None
    if data.get("config") is not None:
        cfg_path = Path(str(data["config"]))
        if not cfg_path.is_absolute() and where is not None:
            cfg_path = where.parent / cfg_path
        if not cfg_path.is_file():
            raise ProbeError(f"the spec's config file {cfg_path} does not exist")
    fixed = data.get("set") or {}
    if not isinstance(fixed, dict):
        raise ProbeError("'set' must map config keys to values")
    if FROM in fixed:
        raise ProbeError(f"{FROM!r} is a spec key (or a grid/zip axis), not a config key for 'set'")
    parent = data.get(FROM)
    if parent is not None and (not isinstance(parent, str) or not parent.strip()):
        raise ProbeError(f"'{FROM}' must name a run directory (RUN_DIR[:STEP]), got {parent!r}")
    parent_optimizer = data.get("from_optimizer", False)
    if not isinstance(parent_optimizer, bool):
        raise ProbeError(f"'from_optimizer' must be true or false, got {parent_optimizer!r}")
    axes: list[Axis] = []
    grid = data.get("grid") or {}
    if not isinstance(grid, dict):
        raise ProbeError("'grid' must map config keys to lists of values")
    for key, raw in grid.items():
        vals, log = _axis_values(str(key), raw)
        axes.append(Axis((str(key),), tuple((v,) for v in vals), log))
    zipped = data.get("zip") or {}
    if not isinstance(zipped, dict):
        raise ProbeError("'zip' must map config keys to lists of equal length")
    if zipped:
        cols = {str(k): _axis_values(str(k), v) for k, v in zipped.items()}
        lengths = {k: len(v[0]) for k, v in cols.items()}
        if len(set(lengths.values())) != 1:
            raise ProbeError(f"zip axes must have equal lengths, got {lengths}")
        n = next(iter(lengths.values()))
        axes.append(Axis(tuple(cols), tuple(tuple(cols[k][0][i] for k in cols) for i in range(n)),
                         any(v[1] for v in cols.values())))
    for name, key in (("seeds", "seed"), ("split_seeds", "split_seed")):
        if data.get(name) is not None:
            vals = data[name]
            if not isinstance(vals, list) or not vals or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                 for v in vals):
                raise ProbeError(f"'{name}' must be a non-empty list of integers, got {vals!r}")
            axes.append(Axis((key,), tuple((v,) for v in vals)))
    seen: set[str] = set()
    for a in axes:
        for k in a.keys:
            if k in seen:
                raise ProbeError(f"config key {k!r} is swept twice")
            if k in fixed:
                raise ProbeError(f"config key {k!r} is both swept and fixed in 'set'")
            seen.add(k)
    if not axes:
        raise ProbeError("the sweep has no axes: give grid, zip, seeds or split_seeds")
    if FROM in seen:
        if parent is not None:
            raise ProbeError(f"'{FROM}' is both a spec key and an axis")
        bad = [v for a in axes if FROM in a.keys for v in a.values if not isinstance(v[a.keys.index(FROM)], str)]
        if bad:
            raise ProbeError(f"the '{FROM}' axis takes run directories (RUN_DIR[:STEP]), got {bad[0]!r}")
    if parent_optimizer and parent is None and FROM not in seen:
        raise ProbeError("'from_optimizer' goes with 'from'")
    total = math.prod(len(a.values) for a in axes)
    if total > MAX_RUNS:
        raise ProbeError(f"the grid has {total:,} runs; at most {MAX_RUNS:,}")
    return SweepSpec(preset, cfg_path, dict(fixed), tuple(axes), text, parent, parent_optimizer, where)


def load_spec(path: str | os.PathLike[str]) -> SweepSpec:
    p = Path(path)
    if not p.is_file():
        raise ProbeError(f"sweep spec {p} does not exist")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProbeError(f"cannot read the sweep spec {p}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_spec(text, p)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


MAX_NAME_BYTES = 200  # run names are file names (NAME.json, .NAME.PID.tmp): well under the usual 255 bytes


def point_name(values: dict[str, Any]) -> str:
    """A readable directory name from the swept values: ``lr=0.001__weight_decay=1__seed=0``. A name
    longer than ``MAX_NAME_BYTES`` keeps its start and ends in a digest of the whole."""
    name = "__".join(f"{k}={_fmt(Path(v.split(':')[0]).name if k == FROM else v)}" for k, v in values.items())
    if len(name.encode()) > MAX_NAME_BYTES:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = f"{name.encode()[:MAX_NAME_BYTES - 18].decode(errors='ignore')}__{digest}"
    return name


def grid_size(spec: SweepSpec) -> int:
    """How many runs the spec's grid has (without building any)."""
    return math.prod(len(a.values) for a in spec.axes)


def iter_grid(spec: SweepSpec) -> Iterator[SweepPoint]:
    """Every grid point in grid order with its resolved, validated config, built as it is reached (a
    dry run prints the first before the last is made). An invalid value names its grid point; so do
    a task that cannot be built (a group table that is not there) and a split the task cannot give."""
    from probe.train.config import check_data, load_config
    from probe.train.loop import check_same_model

    try:  # the preset and config file resolved once; each point applies its overrides to them
        base: TrainConfig | None = load_config(spec.preset, spec.config)
    except ProbeError:
        base = None  # the file alone is incomplete (the grid completes it): resolve it per point
    names: dict[str, int] = {}
    tasks: dict[Any, Any] = {}
    parents: dict[str, TrainConfig] = {}
    for combo in itertools.product(*(a.values for a in spec.axes)):
        values: dict[str, Any] = {}
        for axis, vals in zip(spec.axes, combo):
            values.update(dict(zip(axis.keys, vals)))
        overrides = {**spec.fixed, **{k: v for k, v in values.items() if k != FROM}}
        parent = values.get(FROM, spec.parent)
        try:
            if parent is not None:
                parent = resolve_parent(parent, spec.where)
                if parent not in parents:
                    parents[parent] = _parent_config(parent)
                cfg = load_config(spec.preset, spec.config, overrides, base=parents[parent])
                check_same_model(parents[parent], cfg, parent)
            elif base is None:
                cfg = load_config(spec.preset, spec.config, overrides)
            else:
                cfg = load_config(overrides=overrides, base=base)
            check_data(cfg, tasks)
        except ProbeError as exc:
            where = ", ".join(f"{k}={v!r}" for k, v in values.items())
            raise ProbeError(f"grid point {where[:300]}: {exc.for_cli()}") from None
        name = point_name(values)
        if name in names:  # two values that print alike
            names[name] += 1
            name = f"{name}__{names[name]}"
        else:
            names[name] = 0
        yield SweepPoint(name, values, cfg, parent, spec.parent_optimizer if parent is not None else False)


def resolve_parent(parent: str, where: Path | None) -> str:
    """``RUN_DIR[:STEP]`` with RUN_DIR made absolute (relative to the spec file's folder)."""
    from probe.train.loop import parse_from

    run_dir, step = parse_from(parent)
    path = Path(run_dir)
    if not path.is_absolute():
        path = (where.parent if where is not None else Path.cwd()) / path
    text = str(path.resolve())
    return f"{text}:{step}" if step and step != "last" else text


def _parent_config(parent: str) -> TrainConfig:
    """The config of the run a sweep's runs start from (it must exist when the sweep is expanded)."""
    from probe.run import load_run
    from probe.train.loop import parse_from

    run_dir = parse_from(parent)[0]
    if not Path(run_dir).exists():
        raise ProbeError(f"the run to start from, {run_dir}, does not exist (train it first)")
    with load_run(run_dir) as run:
        return run.config


def expand(spec: SweepSpec) -> list[SweepPoint]:
    """Every grid point with its resolved, validated config (see :func:`iter_grid`)."""
    return list(iter_grid(spec))


# --------------------------------------------------------------------------------------------------
# the sweep directory
# --------------------------------------------------------------------------------------------------
def _relative_parent(parent: str, root: Path) -> str:
    """A parent ``RUN_DIR[:STEP]`` as the index keeps it: relative to the sweep directory, so that a
    sweep moved or copied together with the runs it starts from still matches its spec."""
    from probe.train.loop import parse_from

    run_dir, step = parse_from(parent)
    rel = os.path.relpath(run_dir, Path(root).resolve())
    return f"{rel}:{step}" if step != "last" else rel


def _index(spec: SweepSpec, points: Sequence[SweepPoint], root: Path) -> dict[str, Any]:
    runs = [{"name": p.name, "values": p.values, "config": p.config.to_dict(),
             **({FROM: _relative_parent(p.parent, root), "from_optimizer": p.parent_optimizer}
                if p.parent is not None else {})}
            for p in points]
    digest = hashlib.sha256(json.dumps(runs, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"format": "probe-sweep", "version": 1, "grid": digest, "swept": spec.swept,
            "log_keys": sorted(spec.log_keys), "runs": runs}


def _check_grid(root: Path, index: dict[str, Any]) -> None:
    """Refuse a sweep directory whose index is unreadable or was made from another grid."""
    try:
        old = json.loads((root / INDEX_FILE).read_text())
    except (OSError, ValueError):
        raise ProbeError(f"{root} holds an unreadable {INDEX_FILE}; not a probe sweep") from None
    if not isinstance(old, dict):
        raise ProbeError(f"{root} holds a {INDEX_FILE} that is not a probe sweep index; use another --out")
    if old.get("grid") != index["grid"]:
        raise ProbeError(f"{root} was made from a different sweep spec (grid {old.get('grid')}, this spec "
                         f"{index['grid']}); use another --out")


def _being_prepared(entry: Path) -> bool:
    """What :func:`prepare` writes before the index (empty ``runs/`` and ``status/``, the index's
    temporary copy): a directory holding only these is a sweep that another driver is preparing at
    this moment (or died preparing)."""
    if entry.name in (RUNS_DIR, STATUS_DIR):
        return entry.is_dir() and not any(entry.iterdir())
    return entry.name.startswith(f".{INDEX_FILE}.") and entry.name.endswith(".tmp")


def prepare(spec: SweepSpec, out: str | os.PathLike[str],
            points: list[SweepPoint] | None = None) -> tuple[Path, list[SweepPoint]]:
    """Create (or check) the sweep directory for ``spec`` (``points``: its expansion, if already made).
    A directory made from a different grid is refused before anything is written. Of two drivers
    preparing one directory at once, one writes the index and the other checks it."""
    points = expand(spec) if points is None else points
    root = Path(out)
    index = _index(spec, points, root)
    if root.exists() and not root.is_dir():
        raise ProbeError(f"{root} exists and is not a directory; give --out a new or sweep directory")
    existing = root / INDEX_FILE
    if existing.exists():
        _check_grid(root, index)
        return root, points
    try:
        if root.exists() and not all(_being_prepared(p) for p in root.iterdir()):
            raise ProbeError(f"{root} exists and is not a probe sweep directory; use another --out")
        (root / RUNS_DIR).mkdir(parents=True, exist_ok=True)
        (root / STATUS_DIR).mkdir(exist_ok=True)
        tmp = root / f".{INDEX_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(index, indent=1, default=str))
        try:
            os.link(tmp, existing)  # atomic and exclusive: never replaces an index another driver wrote
        except FileExistsError:
            _check_grid(root, index)
            return root, points
        except OSError:  # a file system without hard links: atomic, not exclusive
            os.replace(tmp, existing)
        finally:
            tmp.unlink(missing_ok=True)
        (root / SPEC_FILE).write_text(spec.text)
    except OSError as exc:
        raise ProbeError(f"cannot write the sweep directory {root}: {exc.strerror or exc}") from None
    return root, points


# --------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------
def _write_status(root: Path, name: str, record: StatusRecord | Mapping[str, Any]) -> bool:
    """Write the run's status record (:class:`probe.sweep.StatusRecord`, or its fields, checked as a
    reader checks them) atomically. Best effort: when the disk refuses it, the run reads as
    interrupted and the next run of the sweep checks it again and records it; returns False then."""
    rec = record if isinstance(record, StatusRecord) else StatusRecord(**record)
    path = status_path(root, name)
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(rec.to_json())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        warnings.warn(f"cannot record the state of run {name} in {path.parent}: {exc.strerror or exc}; running the "
                      "sweep again records it", stacklevel=2)
        return False
    return True


def _curves(run_dir: Path) -> dict[str, Any]:
    """The fields of a ``done`` status record that come from the run: its accuracy curves, whether it
    finished, its number of checkpoints."""
    from probe.run import load_run

    with load_run(run_dir) as run:
        m = run.metrics
        return {"step": [int(v) for v in m["step"]], "train_acc": [float(v) for v in m["train_acc"]],
                "val_acc": [float(v) for v in m["val_acc"]], "val_loss": [float(v) for v in m["val_loss"]],
                "finished": bool(run.finished), "checkpoints": int(len(run.steps))}


def _failure(exc: BaseException) -> str:
    """A run's failure in one line, for its status record."""
    if isinstance(exc, ProbeError):
        return exc.for_cli()
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


def _finished(run_dir: Path) -> bool:
    from probe.run import load_run

    try:
        with load_run(run_dir) as run:
            return run.finished
    except ProbeError:
        return False


def run_point(root: str | os.PathLike[str], name: str, progress: bool = False) -> str:
    """Train (or resume, or skip) one run of the sweep; never raises for the run's own failure:
    the reason goes to ``status/NAME.json``. Returns the run's final state."""
    from probe.train.loop import resume, train

    base = Path(root)
    index = read_index(base)
    entry = next((r for r in index["runs"] if r["name"] == name), None)
    if entry is None:
        raise ProbeError(f"run {name!r} is not part of the sweep {base}")
    lock_path = base / STATUS_DIR / f"{name}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "running"  # another process has it
        rec = read_status(base, name)
        if rec is not None and rec.state == "done":
            return "done"
        run_dir = base / RUNS_DIR / name
        t0 = time.time()
        try:
            if (run_dir / RUN_FILENAME).exists() and _finished(run_dir):
                pass  # finished before its status was recorded
            elif (run_dir / RUN_FILENAME).exists() or (run_dir / "config.yaml").exists():
                resume(run_dir, progress=progress)
            else:
                cfg = TrainConfig.from_dict(entry["config"])
                parent = None
                if entry.get(FROM):
                    from probe.train.loop import parent_checkpoint, parse_from

                    rel, step = parse_from(str(entry[FROM]))
                    at = f"{base / rel}:{step}" if step != "last" else str(base / rel)
                    parent = parent_checkpoint(at, cfg, optimizer=bool(entry.get("from_optimizer")))
                train(cfg, run_dir, progress=progress, parent=parent)
            _write_status(base, name, {"state": "done", "seconds": time.time() - t0, **_curves(run_dir)})
            return "done"
        except Exception as exc:  # noqa: BLE001 - a run's own crash must not stop the others
            _write_status(base, name, {"state": "failed", "reason": _failure(exc)})
            return "failed"
    finally:
        os.close(fd)


def run_ensemble(root: str | os.PathLike[str], names: list[str], progress: bool = False) -> list[str]:
    """Train one planned group of the sweep as a vectorised ensemble (:mod:`probe.train.ensemble`),
    whatever its runs' states: fresh runs start, interrupted ones resume from their resume slots and
    finished ones stay finished, all in the one ensemble, so that a sweep killed and run again ends
    with the runs of an uninterrupted one (docs/design.md, "Sweeps"). The group's locks are taken
    together: while another process holds any of them the group is its, and is left alone here.
    Never raises for the runs' own failure: the reason goes to each unfinished run's status record."""
    from probe.train.ensemble import train_ensemble

    base = Path(root)
    index = {r["name"]: r for r in read_index(base)["runs"]}
    fds: dict[str, int] = {}
    states: dict[str, str] = {}
    try:
        for name in names:
            fd = os.open(base / STATUS_DIR / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return ["running"] * len(names)  # the finally frees the locks taken so far
            fds[name] = fd
        recorded = {n for n in names if (rec := read_status(base, n)) is not None and rec.state == "done"}
        if len(recorded) == len(names):
            return ["done"] * len(names)
        t0 = time.time()

        def finished(i: int) -> None:  # a member is done (budget or early stop): record it, free its lock
            n = names[i]
            if n not in recorded:
                _write_status(base, n, {"state": "done", "seconds": time.time() - t0, "ensemble": len(names),
                                        **_curves(base / RUNS_DIR / n)})
            states[n] = "done"
            os.close(fds.pop(n))

        try:
            train_ensemble([TrainConfig.from_dict(index[n]["config"]) for n in names],
                           [base / RUNS_DIR / n for n in names], progress=progress, on_finish=finished, resume=True)
        except Exception as exc:  # noqa: BLE001 - recorded per member
            for n in names:
                if n not in states:
                    _write_status(base, n, {"state": "failed", "reason": f"ensemble: {_failure(exc)}"})
                    states[n] = "failed"
    finally:
        for fd in fds.values():
            os.close(fd)
    return [states.get(n, "failed") for n in names]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` is running (a zombie, killed and not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc: existence is all we can tell


POLL_SECONDS = 0.25  # how often a local worker checks that its driver is alive
GRACE_SECONDS = 5.0  # how long a worker whose driver is gone may take to stop at a step boundary, twice
#: the longest a local worker outlives its driver once it follows it (a worker still starting when
#: the driver dies stops as soon as it has started: its imports, about a second)
DRIVER_BOUND_SECONDS = POLL_SECONDS + 2 * GRACE_SECONDS


def follow_driver(pid: int, poll: float = POLL_SECONDS) -> threading.Thread:
    """Stop this worker, as Ctrl-C would (at a step boundary, its run left resumable), once the
    sweep driver ``pid`` is gone: a driver killed with kill -9 leaves no orphans training on.

    The bound holds on a loaded machine: when the driver is seen gone, an interval timer is armed
    first, whose ``SIGALRM`` (default action: the kernel ends the process) comes ``2 *
    GRACE_SECONDS`` later whatever the worker is doing, a long library call or the interpreter's own
    shutdown included (no Python code has to run for it). Then Ctrl-C, and once more after
    ``GRACE_SECONDS`` in case the first was swallowed. Run files survive a kill at any instant and
    the next sweep resumes them; the locks go with the process."""

    def loop() -> None:
        while _alive(pid):
            time.sleep(poll)
        signal.setitimer(signal.ITIMER_REAL, 2 * GRACE_SECONDS)
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(GRACE_SECONDS)
        os.kill(os.getpid(), signal.SIGKILL)  # only if SIGALRM was caught or ignored after all

    t = threading.Thread(target=loop, name="follow-sweep-driver", daemon=True)
    t.start()
    return t


def run_groups(root: str, groups: list[list[str]], threads: int | None = None,
               driver: int | None = None, then: list[list[str]] | None = None) -> list[str]:
    """One worker's share of a sweep: groups of two or more are vectorised ensembles. ``threads``:
    torch threads for this worker (local workers share the machine's cores; more threads than cores
    make OpenMP spin and every worker slow down many times over). ``driver``: the pid of the local
    sweep driver this worker stops with (:func:`follow_driver`). ``then``: the other workers' groups,
    taken once this worker's own are through, so that no worker idles while runs wait: a group whose
    runs all have a status record (done, or failed in this sweep) is passed over, and one another
    worker is training is left to it (its locks)."""
    if driver is not None:
        if not _alive(driver):  # started (or restarted by submitit) after the driver was gone
            return []
        if threading.current_thread() is threading.main_thread():
            # a driver started in the background (nohup, `cmd &`) passes SIGINT on as ignored; the
            # worker needs it, to stop at a step boundary when the driver is gone, and SIGALRM's
            # default action, which ends it if that takes too long
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
        follow_driver(driver)
    load_plugins()  # the driver's PROBE_PLUGINS: the extensions its runs' configs use
    if threads is None and os.environ.get("SLURM_CPUS_ON_NODE", "").isdigit():
        threads = int(os.environ["SLURM_CPUS_ON_NODE"])  # the CPUs of this job's allocation
    if threads:
        import torch

        torch.set_num_threads(threads)
    out: list[str] = []
    try:
        # the others' groups are checked as they are reached (lazily): by then some are recorded
        left = (g for g in then or [] if not all(read_status(Path(root), n) is not None for n in g))
        for g in itertools.chain(groups, left):
            out += run_ensemble(root, g) if len(g) > 1 else [run_point(root, g[0])]
    except KeyboardInterrupt:
        if driver is not None and not _alive(driver):
            # stopped because the driver is gone: its run files and locks are closed by now, and
            # nobody waits for a result; leave at once rather than through the interpreter's shutdown
            import sys

            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        raise
    return out


#: ``ENSEMBLES_FILE`` in a sweep directory: the ensembles its first launch planned (lists of run names)
ENSEMBLES_FILE = "ensembles.json"


def _recorded_ensembles(root: Path, names: set[str]) -> list[list[str]]:
    """The ensembles recorded in ``root`` (checked: runs of this grid, each in one ensemble)."""
    from probe.train.ensemble import MAX_MEMBERS

    path = root / ENSEMBLES_FILE
    if not path.exists():
        return []
    fix = "; delete it to plan the ensembles again (their interrupted runs then finish in other groups)"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ProbeError(f"{path} is unreadable ({exc.__class__.__name__}){fix}") from None
    groups = data.get("ensembles") if isinstance(data, dict) else None
    if not isinstance(groups, list) or not all(isinstance(g, list) and 2 <= len(g) <= MAX_MEMBERS
                                               and all(isinstance(n, str) for n in g) for g in groups):
        raise ProbeError(f"{path} is not a list of ensembles (lists of 2 to {MAX_MEMBERS} run names){fix}")
    seen: set[str] = set()
    for g in groups:
        for n in g:
            if n not in names or n in seen:
                raise ProbeError(f"{path} names run {n!r} {'twice' if n in seen else 'that is not in the grid'}{fix}")
            seen.add(n)
    return groups


def plan_sweep(root: Path, points: Sequence[SweepPoint], todo: list[str], vectorize: str,
               jobs: int) -> list[list[str]]:
    """The groups to launch for the runs in ``todo``. An ensemble planned by an earlier launch of the
    sweep (``ensembles.json``) is launched whole whenever one of its runs is to do, so that its runs
    finish together as one ensemble, as they would have uninterrupted (docs/design.md, "Sweeps");
    with ``vectorize="off"`` only those that have started. The other runs are planned by
    :func:`plan` and the new ensembles recorded before anything is launched."""
    recorded = _recorded_ensembles(root, {p.name for p in points})
    wanted = set(todo)
    keep = [g for g in recorded if vectorize != "off" or any((root / RUNS_DIR / n).exists() for n in g)]
    groups = [g for g in keep if wanted & set(g)]
    planned = {n for g in keep for n in g}
    new = plan(points, [n for n in todo if n not in planned], vectorize, jobs)
    record = keep + [g for g in new if len(g) > 1]
    if record != recorded:
        path = root / ENSEMBLES_FILE
        tmp = path.with_name(f".{ENSEMBLES_FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps({"ensembles": record}, indent=1))
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ProbeError(f"cannot write {path}: {exc.strerror or exc}") from None
    return groups + new


def plan(points: Sequence[SweepPoint], names: list[str], vectorize: str, jobs: int) -> list[list[str]]:
    """Groups of runs to train together: runs whose configs differ only in keys that vectorise form
    one ensemble (at most 256 members, split so that every job gets work); ``vectorize="off"`` trains
    one by one, ``"force"`` requires one ensemble for the whole grid."""
    from probe.train.ensemble import MAX_MEMBERS, group_key, why_not

    by_name = {p.name: p for p in points}
    if vectorize == "off":
        return [[n] for n in names]
    if vectorize == "force":
        reason = why_not([p.config for p in points])
        if reason:
            raise ProbeError(f"--vectorize: {reason}")
    groups: dict[str, list[str]] = {}
    singles: list[list[str]] = []
    for n in names:
        key = group_key(by_name[n].config) if by_name[n].parent is None else None  # ensembles start fresh
        if key is None:
            singles.append([n])
        else:
            groups.setdefault(key, []).append(n)
    out = list(singles)
    for members in groups.values():
        parts = max(1, math.ceil(len(members) / MAX_MEMBERS), min(jobs, len(members) // 2 or 1))
        size = math.ceil(len(members) / parts)
        out += [members[i: i + size] for i in range(0, len(members), size)]
    return out


VECTORIZE = ("auto", "force", "off")


@dataclass(frozen=True)
class ExecutorOptions:
    kind: str = "local"
    jobs: int = 1
    partition: str | None = None
    time_min: int | None = None
    mem: str | None = None
    vectorize: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ProbeError(f"unknown executor {self.kind!r}{valid(EXECUTORS)}", param="executor")
        if self.jobs < 1:
            raise ProbeError(f"must be >= 1, got {self.jobs}", param="jobs")
        if self.vectorize not in VECTORIZE:
            raise ProbeError(f"unknown mode {self.vectorize!r}{valid(VECTORIZE)}", param="vectorize")
        if self.kind == "inline" and self.jobs != 1:
            raise ProbeError(f"--executor inline trains in this process, one group at a time: --jobs must be 1, "
                             f"got {self.jobs}", param="jobs")


def _slurm_reachable() -> str | None:
    import shutil
    import subprocess

    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        return "no Slurm here (sbatch and squeue are not on PATH)"
    res = subprocess.run(["squeue", "--noheader", "-u", str(os.getuid())], capture_output=True, text=True, timeout=20)
    if res.returncode != 0:
        return f"Slurm does not answer: {(res.stderr or res.stdout).strip().splitlines()[0][:160] if (res.stderr or res.stdout).strip() else 'squeue failed'}"
    return None


class _QuietAccounting(logging.Filter):
    """Clusters without accounting storage answer every ``sacct`` with an error that submitit logs
    as a warning on each poll; job states still come from ``squeue``, so those lines are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "sacct" not in record.getMessage()


#: Python code a worker starts with: what ``python -u -m submitit.core._submit FOLDER`` (submitit's
#: command) does, but with the current directory taken off the front of ``sys.path`` first (``-m``
#: and ``-c`` put it there), so that a folder holding a ``probe/`` directory (a checkout's parent, a
#: scratch copy) cannot stand in for the installed package when the job is unpickled.
WORKER_BOOT = ("import sys; sys.path[:1] == [''] and sys.path.pop(0); import runpy; "
               "sys.argv = sys.argv[sys.argv.index('-m') + 1:]; "
               "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")


def worker_python() -> str:
    """The command submitit starts a worker's Python with (it appends ``-u -m MODULE FOLDER``)."""
    import shlex
    import sys

    return f"{shlex.quote(sys.executable)} -u -c {shlex.quote(WORKER_BOOT)}"


def _executor(root: Path, opts: ExecutorOptions) -> Any:
    import submitit

    folder = root / ".submitit"
    if opts.kind == "slurm":  # (reachability is checked by run_sweep before anything is written)
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_python=worker_python())
        log = logging.getLogger("submitit")
        if not any(isinstance(f, _QuietAccounting) for f in log.filters):  # once per process
            log.addFilter(_QuietAccounting())
        params: dict[str, Any] = {"slurm_array_parallelism": opts.jobs, "timeout_min": opts.time_min or 60}
        if opts.partition:
            params["slurm_partition"] = opts.partition
        if opts.mem:
            params["slurm_mem"] = opts.mem
        ex.update_parameters(**params)
        return ex
    ex = submitit.AutoExecutor(folder=folder, cluster="local", local_python=worker_python())
    # submitit's local jobs time out after a default limit and are then killed as "not checkpointable"
    ex.update_parameters(timeout_min=opts.time_min or LOCAL_TIMEOUT_MIN)
    return ex


def _cores() -> int:
    """The cores this process may run on (its affinity mask: taskset, cgroups, a Slurm allocation),
    not every core of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # platforms without affinity masks
        return os.cpu_count() or 1


def launch(root: Path, groups: list[list[str]], opts: ExecutorOptions) -> list[Any]:
    """Submit the groups: on Slurm one array task per group; locally ``jobs`` worker processes that
    share them (submitit's local executor starts every job it is given at once), each with the cores
    divided among them as torch threads, at most ``OMP_NUM_THREADS`` where that is set. A local
    worker trains its share (every ``jobs``-th group), then takes what is left of the others' from
    their ends (:func:`run_groups`): a queue, without a process to hand the groups out."""
    if not groups:
        return []
    if opts.kind == "inline":  # the worker's own function, here; its runs' outcomes are in their status files
        run_groups(str(root), groups)
        return []
    ex = _executor(root, opts)
    if opts.kind == "slurm":
        chunks = [[g] for g in groups]
        threads: int | None = None
    else:
        chunks = [groups[i:: opts.jobs] for i in range(min(opts.jobs, len(groups)))]
        threads = max(1, _cores() // len(chunks))
        cap = os.environ.get("OMP_NUM_THREADS", "")
        if cap.isdigit() and int(cap) >= 1:  # the caller's own limit on threads per process
            threads = min(threads, int(cap))
    driver = None if opts.kind == "slurm" else os.getpid()  # cluster jobs outlive a logout; local ones do not
    n = len(chunks)
    rest: list[list[list[str]] | None] = [None] * n
    if opts.kind != "slurm":
        rest = [[g for j, g in enumerate(groups) if j % n != i][::-1] for i in range(n)]
    return ex.map_array(run_groups, [str(root)] * n, chunks, [threads] * n, [driver] * n, rest)


LOW_SPACE = 1 << 20  # bytes: with less free, a worker's writes (a checkpoint, a status record, its log) fail


def _space_note(root: Path) -> str:
    """``"; no space left on the device holding ROOT (...)"`` when that disk is (nearly) full: a worker
    that died there could not record why, in its runs' status records or in its own log."""
    import shutil

    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return ""
    return f"; no space left on the device holding {root} ({free // 1024} KiB free)" if free < LOW_SPACE else ""


def watch(root: Path, names: list[str], jobs: list[Any], progress: bool = True, poll: float = 0.5) -> dict[str, int]:
    """Wait for the jobs with one progress bar (runs done, failed, ETA); returns the final counts."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(names), desc="sweep", unit="run", disable=not progress, dynamic_ncols=True)
    counted: set[str] = set()
    failed = 0
    try:
        while True:
            for n in names:
                if n in counted:
                    continue
                state, _ = state_of(root, n)
                if state in ("done", "failed"):
                    counted.add(n)
                    failed += state == "failed"
                    bar.update(1)
                    bar.set_postfix(failed=failed, refresh=False)
            if len(counted) == len(names) or all(j.done() for j in jobs):
                break
            time.sleep(poll)
        for j in jobs:  # surface a worker that died outside any run (reported, not raised: the status
            try:        # files carry the per-run reasons, and its runs stay pending for the next sweep)
                j.result()
            except Exception as exc:  # noqa: BLE001
                lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
                errors = [ln for ln in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", ln)]
                log = getattr(getattr(j, "paths", None), "stderr", None)
                why = (errors[-1] if errors else lines[0] if lines else type(exc).__name__)[:200]
                warnings.warn(f"a sweep worker failed outside its runs: {why}{_space_note(root)}"
                              + (f" (log: {log})" if log else ""), stacklevel=2)
    except KeyboardInterrupt:
        for j in jobs:
            try:
                j.cancel(check=False)
            except Exception:  # noqa: BLE001
                pass
        raise
    finally:
        bar.close()
    counts = {s: 0 for s in STATES}
    for n in names:
        counts[state_of(root, n)[0]] += 1
    return counts


def run_sweep(spec: SweepSpec, out: str | os.PathLike[str], opts: ExecutorOptions = ExecutorOptions(),
              progress: bool = True) -> dict[str, int]:
    """Train every missing run of the sweep (finished runs skipped, interrupted ones resumed)."""
    if opts.kind == "slurm":  # before anything is written
        reason = _slurm_reachable()
        if reason:
            raise ProbeError(f"--executor slurm: {reason}")
    points = expand(spec)
    if opts.vectorize == "force":  # refused before anything is written
        plan(points, [], "force", opts.jobs)
    root, points = prepare(spec, out, points)
    states = {p.name: state_of(root, p.name)[0] for p in points}
    todo = [n for n, st in states.items() if st in ("pending", "interrupted", "failed")]
    for name in todo:  # a failed run is retried from its own state
        if states[name] == "failed":
            (root / STATUS_DIR / f"{name}.json").unlink(missing_ok=True)
    jobs = launch(root, plan_sweep(root, points, todo, opts.vectorize, opts.jobs), opts)
    watch(root, todo, jobs, progress=progress)
    total = {s: 0 for s in STATES}
    for p in points:
        total[state_of(root, p.name)[0]] += 1
    return total
