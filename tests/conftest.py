"""Shared fixtures: tiny configs that train in a second, and waits that end on what they wait for
(as long as the work makes progress), never on a wall-clock guess of this machine's speed."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from probe.config import TrainConfig
from probe.train.config import load_config

# On a machine whose cores are busy, torch's OpenMP threads spin waiting for each other: a 6-step
# transformer run took 36 s with 2 threads and 1.2 s with one, at a load of 7 on 2 cores. Tests use
# one thread, in this process and in the processes it starts (runs compared bit for bit across them
# need the same thread count). Sweep workers still size their own threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_TOY = {"steps": "60", "model.decoder": "16,16", "checkpoint.schedule": "every", "checkpoint.every": "5",
            "checkpoint.metrics_every": "5"}
TINY_TRANSFORMER = {"p": "11", "steps": "20", "model.d_model": "16", "model.n_heads": "2", "model.d_mlp": "32",
                    "checkpoint.every": "5", "checkpoint.metrics_every": "5"}


@pytest.fixture
def tiny_toy_config() -> TrainConfig:
    return load_config("liu-toy-add", overrides=TINY_TOY)


@pytest.fixture
def tiny_transformer_config() -> TrainConfig:
    return load_config("nanda-modadd", overrides=TINY_TRANSFORMER)


@pytest.fixture
def toy_run(tmp_path: Path, tiny_toy_config: TrainConfig) -> Path:
    from probe.train.loop import train

    train(tiny_toy_config, tmp_path / "toy", progress=False)
    return tmp_path / "toy"


@pytest.fixture
def transformer_run(tmp_path: Path, tiny_transformer_config: TrainConfig) -> Path:
    from probe.train.loop import train

    train(tiny_transformer_config, tmp_path / "tf", progress=False)
    return tmp_path / "tf"


def _train_interrupted(cfg: TrainConfig, run_dir: Path, at_call: int) -> None:
    """Train ``cfg`` into ``run_dir`` and stop it as Ctrl-C would, at the ``at_call``-th training step
    (the trainer asks for its learning-rate factor once per step)."""
    import probe.train.loop as loop

    original = loop.Trainer.lr_factor
    calls = {"n": 0}

    def boom(self: loop.Trainer, step: int) -> float:
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt
        return original(self, step)

    loop.Trainer.lr_factor = boom  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.train(cfg, run_dir, progress=False)
    finally:
        loop.Trainer.lr_factor = original  # type: ignore[method-assign]


#: how long a wait may see no progress at all before it fails (progress restarts the clock): waits end
#: on what they wait for, never on a wall-clock guess of how long the work takes on this machine
STALL_SECONDS = 300.0


def _describe_exit(proc: "subprocess.Popen[Any] | None") -> str:
    """How ``proc`` ended, with the tail of its stderr when it was captured."""
    if proc is None or proc.poll() is None:
        return ""
    err = proc.stderr.read() if proc.stderr is not None else None
    if isinstance(err, bytes):
        err = err.decode(errors="replace")
    tail = f": {err.strip()[-2000:]}" if err and err.strip() else ""
    return f"; the process ended with exit code {proc.returncode}{tail}"


def _stop(proc: "subprocess.Popen[Any] | None") -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def _wait_until(done: Callable[[], Any], what: str, *, progress: Callable[[], Any] | None = None,
                proc: "subprocess.Popen[Any] | None" = None, stall: float = STALL_SECONDS,
                poll: float = 0.05) -> Any:
    """Poll ``done()`` until it returns something truthy, and return that.

    The wait goes on as long as ``progress()`` keeps changing (e.g. the number of committed
    checkpoints): it fails only when nothing changed for ``stall`` seconds, or when ``proc`` ended
    before ``done()`` held. Giving up always fails the test with ``what``, the last progress seen and
    how ``proc`` ended (a process still running is killed first); it never returns silently.
    """
    last = progress() if progress is not None else None
    since = time.monotonic()
    while True:
        ended = proc is not None and proc.poll() is not None
        result = done()
        if result:
            return result
        if ended:
            pytest.fail(f"gave up waiting for {what}: the process ended first (progress: {last!r})"
                        f"{_describe_exit(proc)}")
        now = progress() if progress is not None else None
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > stall:
            _stop(proc)
            pytest.fail(f"gave up waiting for {what}: no progress for {stall:.0f} s (progress: {last!r})"
                        f"{_describe_exit(proc)}")
        time.sleep(poll)


def _committed_checkpoints(run_dir: Path) -> int:
    """Committed checkpoints of ``run_dir`` (0 while its run file does not exist or cannot be read yet)."""
    from probe.runfile import RunFile, run_file_path

    if not run_file_path(run_dir).exists():
        return 0
    try:
        rf = RunFile(run_file_path(run_dir))
    except Exception:  # noqa: BLE001 - a file being created or renamed: not readable yet
        return 0
    try:
        return len(rf.steps)
    finally:
        rf.close()


def _wait_for_checkpoints(proc: "subprocess.Popen[Any]", run_dir: Path, n: int,
                          timeout: float = STALL_SECONDS) -> int:
    """Wait until ``run_dir``'s run file has at least ``n`` committed checkpoints; returns how many.

    Waits as long as checkpoints keep coming (``timeout``: the longest time without a new one, or
    without the run file appearing); fails the test with the reason if ``proc`` ends first or training
    stalls."""
    count = {"n": 0}

    def reached() -> bool:
        count["n"] = _committed_checkpoints(run_dir)
        return count["n"] >= n

    def progress() -> tuple[bool, int]:
        return run_dir.exists() and any(run_dir.iterdir()), count["n"]

    _wait_until(reached, f"{n} committed checkpoints in {run_dir}", progress=progress, proc=proc, stall=timeout,
                poll=0.1)
    return count["n"]


def _tree_state(root: Path) -> frozenset[tuple[str, int, int]]:
    """Every file under ``root`` with its size and modification time: changes whenever work is written."""
    out = set()
    for p in root.rglob("*") if root.exists() else ():
        try:
            st = p.stat()
        except OSError:  # removed or renamed while listing
            continue
        if p.is_file():
            out.add((str(p), st.st_size, st.st_mtime_ns))
    return frozenset(out)


def _run_to_end(cmd: list[str], watch: Path, stall: float = STALL_SECONDS,
                **kw: Any) -> "subprocess.CompletedProcess[str]":
    """Run ``cmd`` to its end while it makes progress (a file under ``watch`` is written, e.g. a
    checkpoint committed, within every ``stall`` seconds); fails the test with the reason if it stalls.
    Returns the completed process with its text output."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, **kw)
        try:
            _wait_until(lambda: proc.poll() is not None, f"{' '.join(map(str, cmd[-6:]))} to finish",
                        progress=lambda: _tree_state(watch), stall=stall, poll=0.2)
        finally:
            _stop(proc)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())


@pytest.fixture(scope="session")
def train_interrupted() -> Any:
    """``train_interrupted(cfg, run_dir, at_call)``: a run stopped mid-way as Ctrl-C would stop it."""
    return _train_interrupted


@pytest.fixture(scope="session")
def wait_for_checkpoints() -> Any:
    """``wait_for_checkpoints(proc, run_dir, n)``: wait for a training process to commit ``n`` checkpoints
    (as long as checkpoints keep coming); fails with the reason if it ends or stalls first."""
    return _wait_for_checkpoints


@pytest.fixture(scope="session")
def waits() -> Any:
    """The waits tests share, each ending on what it waits for while the work makes progress:
    ``until(done, what, progress=..., proc=..., stall=...)``, ``checkpoints(proc, run_dir, n)``,
    ``run_to_end(cmd, watch)``, and the progress measures ``committed(run_dir)`` (committed
    checkpoints) and ``files(root)`` (every file under ``root`` with its size and time)."""
    from types import SimpleNamespace

    return SimpleNamespace(until=_wait_until, checkpoints=_wait_for_checkpoints, run_to_end=_run_to_end,
                           committed=_committed_checkpoints, files=_tree_state)
