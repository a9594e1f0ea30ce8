"""Fault injection: kill -9 at random instants of training and resuming, corrupted and crafted run
files, readers during training, a full disk, Ctrl-C. Every outcome is a run that resumes and ends
bit-identical on CPU, or one line on stderr with exit code 2 and nothing on disk changed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import probe
from probe.cli import main
from probe.runfile import run_file_path

TOY = ["--preset", "liu-toy-add", "--set", "steps=300", "--set", "model.decoder=32,32", "--set",
       "checkpoint.schedule=every", "--set", "checkpoint.every=10", "--set", "checkpoint.metrics_every=5"]
TRANSFORMER = ["--preset", "nanda-modadd", "--set", "p=11", "--set", "steps=150", "--set", "model.d_model=16",
               "--set", "model.n_heads=2", "--set", "model.d_mlp=32", "--set", "checkpoint.every=10",
               "--set", "checkpoint.metrics_every=5"]
CLI = [sys.executable, "-m", "probe.cli"]


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, **kw)


def _contents(run_dir: Path) -> dict[str, np.ndarray]:
    """Every committed array of a run (checkpoints and metrics), for bit-identical comparison."""
    out = {}
    with h5py.File(run_file_path(run_dir), "r", locking=False) as f:
        n = len(f["checkpoints/steps"])
        m = len(f["metrics/step"])
        out["steps"] = f["checkpoints/steps"][:]
        out["digest"] = f["checkpoints/digest"][:n]
        for name, ds in f["checkpoints/params"].items():
            out[f"param/{name}"] = ds[:n]
        for name, ds in f["metrics"].items():
            out[f"metric/{name}"] = ds[:m]
        out["finished"] = f["status/finished"][:]
    return out


def _assert_identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].shape == b[key].shape, key
        assert np.array_equal(a[key], b[key], equal_nan=True), key


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, tuple[Path, float]]:
    """Uninterrupted runs of both configurations, with their wall time."""
    out = {}
    for name, args in (("toy", TOY), ("transformer", TRANSFORMER)):
        d = tmp_path_factory.mktemp("ref") / name
        t0 = time.monotonic()
        res = _cli("train", *args, "--no-progress", "--out", str(d))
        assert res.returncode == 0, res.stderr
        out[name] = (d, time.monotonic() - t0)
    return out


def _continue(run_dir: Path, args: list[str]) -> list[str]:
    """The command a user runs after a kill: resume if anything was written, else train again."""
    if run_file_path(run_dir).exists() or (run_dir / "config.yaml").exists():
        return [*CLI, "train", "--resume", str(run_dir), "--no-progress"]
    return [*CLI, "train", *args, "--no-progress", "--out", str(run_dir)]


@pytest.mark.slow
@pytest.mark.parametrize("name,seed", [("toy", 0), ("transformer", 3)])
def test_random_kills_then_resume_is_bit_identical(tmp_path, references, name, seed):
    """Two or three kill -9 in a row at random instants (training, then resuming), then a resume
    that runs to the end: the run equals the uninterrupted one bit for bit."""
    ref_dir, wall = references[name]
    args = TOY if name == "toy" else TRANSFORMER
    rng = np.random.default_rng(seed)
    run_dir = tmp_path / "run"
    for _ in range(int(rng.integers(2, 4))):
        proc = subprocess.Popen(_continue(run_dir, args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(float(rng.uniform(0.3, 1.0)) * wall)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if run_file_path(run_dir).exists():  # what a kill leaves is always a readable run
            with probe.load_run(run_dir) as run:
                assert np.all(np.diff(run.steps) > 0)
    final = subprocess.run(_continue(run_dir, args), capture_output=True, text=True)
    if final.returncode == 2 and "already finished" in final.stderr:
        pass  # the last kill came after the run had finished
    else:
        assert final.returncode == 0, final.stderr
    _assert_identical(_contents(ref_dir), _contents(run_dir))


def test_kill_right_after_resume_renamed_its_copy(tmp_path, references, monkeypatch):
    """The window the old resume had: its copy replaced run.h5 before it held the resume state."""
    from probe.train.loop import resume

    ref_dir, _ = references["toy"]
    run_dir = tmp_path / "run"
    res = _cli("train", *TOY, "--set", "steps=120", "--no-progress", "--out", str(run_dir))
    assert res.returncode == 0, res.stderr
    import probe.runfile as rf_module

    real_replace = os.replace

    def replace_then_die(src, dst):
        real_replace(src, dst)
        raise KeyboardInterrupt  # stands for a kill just after the rename

    monkeypatch.setattr(rf_module.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        resume(run_dir, steps=300, progress=False)
    monkeypatch.setattr(rf_module.os, "replace", real_replace)
    res = _cli("train", "--resume", str(run_dir), "--no-progress")
    assert res.returncode == 0, res.stderr
    _assert_identical(_contents(ref_dir), _contents(run_dir))


def test_file_flagged_open_for_writing_by_a_dead_writer_opens_and_resumes(tmp_path, references):
    ref_dir, _ = references["toy"]
    run_dir = tmp_path / "run"
    res = _cli("train", *TOY, "--set", "steps=120", "--no-progress", "--out", str(run_dir))
    assert res.returncode == 0, res.stderr
    # a writer that opened the file (not in SWMR mode) and was killed: the superblock keeps its flag
    code = f"import h5py, os, signal; f = h5py.File({str(run_file_path(run_dir))!r}, 'r+', libver='latest'); " \
           "os.kill(os.getpid(), signal.SIGKILL)"
    subprocess.run([sys.executable, "-c", code])
    with pytest.raises(OSError):
        h5py.File(run_file_path(run_dir), "r", swmr=True, locking=False)
    with pytest.warns(UserWarning, match="left marked open for writing"):
        run = probe.load_run(run_dir)
    with run:
        assert run.steps[-1] == 120
    res = _cli("train", "--resume", str(run_dir), "--steps", "300", "--no-progress")
    assert res.returncode == 0, res.stderr
    _assert_identical(_contents(ref_dir), _contents(run_dir))


def test_training_finishes_while_readers_hold_the_run(tmp_path, waits):
    run_dir = tmp_path / "live"
    proc = subprocess.Popen([*CLI, "train", *TOY, "--set", "steps=400", "--no-progress", "--out", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    held, seen = [], []
    other = subprocess.Popen([sys.executable, "-c", "pass"])

    def hold_another() -> bool:
        """Open one more reader of the live run (kept open); done once training has ended."""
        nonlocal other
        if proc.poll() is not None:
            return True
        if run_file_path(run_dir).exists():
            try:
                run = probe.load_run(run_dir)
            except probe.ProbeError:
                return False
            held.append(run)  # never closed until training has ended
            seen.append(len(run.steps))
            if len(held) == 3:  # a plain h5py reader too, in its own process, with HDF5's default locking
                code = (f"import h5py, time; f = h5py.File({str(run_file_path(run_dir))!r}, 'r', libver='latest', "
                        "swmr=True); print('open', flush=True); time.sleep(600)")
                other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
                assert other.stdout is not None and other.stdout.readline().strip() == "open"
        return False

    # as long as checkpoints keep coming (a reader every 0.1 s)
    waits.until(hold_another, "training to end with readers open", progress=lambda: seen[-1:], poll=0.1)
    _, err = proc.communicate()
    other.kill()
    other.wait()
    assert proc.returncode == 0, err
    assert len(held) >= 3 and seen == sorted(seen)
    for r in held:
        r.close()
    with probe.load_run(run_dir) as run:
        assert run.finished and run.steps[-1] == 400


def test_ctrl_c_exits_130_and_the_run_resumes(tmp_path, waits):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([*CLI, "train", *TOY, "--set", "steps=100000", "--no-progress", "--out", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    waits.checkpoints(proc, run_dir, 2)
    t0 = time.monotonic()
    waits.checkpoints(proc, run_dir, 4)
    # a step boundary comes within a checkpoint interval: wait many of them, as measured here and now
    patience = max(20.0, 20 * (time.monotonic() - t0) / 2)
    err = ""
    try:
        for _ in range(5):  # Ctrl-C, again if the first landed where Python could not raise it
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=patience)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "probe train --resume" in err and "Traceback" not in err
    with probe.load_run(run_dir) as run:
        assert len(run.steps) >= 1 and not run.finished


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_disk_full_is_one_line_and_resumes_on_a_bigger_disk(tmp_path):
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "600k"):  # room for some tens of checkpoints (1.2 MB hold all 101)
        pytest.skip("cannot mount a small tmpfs here (needs root and mount)")
    # 101 checkpoints, as 1,000 steps checkpointed every 10 would be, in fewer steps
    longer = [*TOY, "--set", "steps=400", "--set", "checkpoint.every=4", "--set", "checkpoint.metrics_every=2"]
    try:
        res = _cli("train", *longer, "--no-progress", "--out", str(small / "run"))
        assert res.returncode == 2, res.stderr
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
        assert "no space left" in res.stderr and "--resume" in res.stderr
        big = tmp_path / "big"
        shutil.copytree(small / "run", big)
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
    with probe.load_run(big) as run:
        assert len(run.steps) >= 10 and run.steps[-1] < 400
    res = _cli("train", "--resume", str(big), "--no-progress")
    assert res.returncode == 0, res.stderr
    reference = tmp_path / "reference"
    assert _cli("train", *longer, "--no-progress", "--out", str(reference)).returncode == 0
    _assert_identical(_contents(reference), _contents(big))


# --------------------------------------------------------------------------------------------------
# corrupted and crafted files: one line, exit 2, nothing on disk changed
# --------------------------------------------------------------------------------------------------
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("probe: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, references) -> Path:
    return references["toy"][0]


def _copy(small_run: Path, tmp_path: Path) -> Path:
    d = tmp_path / "copy"
    d.mkdir()
    shutil.copy(run_file_path(small_run), d / "run.h5")
    return d


def _chunk_offset(path: Path, dataset: str, row: int) -> tuple[int, int]:
    with h5py.File(path, "r", locking=False) as f:
        ds = f[dataset]
        info = ds.id.get_chunk_info_by_coord((row,) + (0,) * (ds.ndim - 1))
        return info.byte_offset, info.size


def test_flipped_bytes_in_a_checkpoint_chunk_are_a_checksum_error(capsys, small_run, tmp_path):
    d = _copy(small_run, tmp_path)
    offset, size = _chunk_offset(d / "run.h5", "checkpoints/params/embed.W_E", 0)
    data = bytearray((d / "run.h5").read_bytes())
    for k in range(4):
        data[offset + k] ^= 0xFF
    (d / "run.h5").write_bytes(bytes(data))
    before = _sha(d / "run.h5")
    err = _one_line_error(capsys, ["analyze", str(d), "--metric", "rqi", "--no-progress", "--force"])
    assert "checksum" in err and "checkpoints/params/embed.W_E" in err and "step" in err
    assert _sha(d / "run.h5") == before and not (d / "analysis").exists()


def test_checksums_are_verified_once_per_file_state(capsys, small_run, tmp_path, monkeypatch):
    """A series read through the filter is recorded; the next read of the unchanged file takes the raw
    chunks (same values); a copy, or any write to the file, voids the record, so flipped bytes are
    still caught after a verified read."""
    import probe.runfile as runfile

    d = _copy(small_run, tmp_path)
    raw_reads = []
    real = runfile._raw_rows
    monkeypatch.setattr(runfile, "_raw_rows", lambda *a: raw_reads.append(a[1:]) or real(*a))
    with probe.load_run(d) as run:
        first = run.series("embed.W_E")
    assert raw_reads == [] and (d / "analysis" / "verified.json").exists()
    with probe.load_run(d) as run:
        again = run.series("embed.W_E")
        part = run.series("embed.W_E", slice(1, 3))
    assert raw_reads == [(0, len(first)), (1, 3)]
    assert np.array_equal(first, again) and np.array_equal(first[1:3], part)
    copied = tmp_path / "copied"
    shutil.copytree(d, copied)
    with probe.load_run(copied) as run:
        run.series("embed.W_E")
    assert len(raw_reads) == 2  # a copy is a new file state: verified again
    offset, _ = _chunk_offset(d / "run.h5", "checkpoints/params/embed.W_E", 0)
    with open(d / "run.h5", "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))
    err = _one_line_error(capsys, ["analyze", str(d), "--metric", "rqi", "--no-progress", "--force"])
    assert "checksum" in err and "embed.W_E" in err
    assert len(raw_reads) == 2


@pytest.mark.parametrize("seed", range(12))
def test_fuzzed_files_never_end_in_a_traceback(capsys, small_run, tmp_path, seed):
    """Truncations and random byte flips anywhere: exit 0 (the flip missed what is read) or one line
    and exit 2; never a traceback, never a change to the file."""
    d = _copy(small_run, tmp_path)
    path = d / "run.h5"
    rng = np.random.default_rng(seed)
    data = bytearray(path.read_bytes())
    if seed % 3 == 0:
        data = data[: int(rng.integers(0, len(data)))]
    else:
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 64))):
            data[pos] ^= int(rng.integers(1, 256))
    path.write_bytes(bytes(data))
    before = _sha(path)
    for argv in (["info", str(d)], ["analyze", str(d), "--metric", "rqi", "--no-progress", "--force"]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code in (0, 2) and "Traceback" not in err
        if code == 2:
            assert err.count("\n") == 1 and err.startswith("probe: error: ")
    assert _sha(path) == before


def _edit(path: Path, how) -> None:
    with h5py.File(path, "r+") as f:
        how(f)


EDITS = {
    "missing val_acc": (lambda f: f["metrics"].__delitem__("val_acc"), "metrics/val_acc"),
    "missing resume": (lambda f: f.__delitem__("resume"), "resume"),
    "config not an object": (lambda f: f.attrs.__setitem__("config", "[1, 2]"), "config"),
    "packages not JSON": (lambda f: f.attrs.__setitem__("packages", "{oops"), "packages"),
    "schema not int": (lambda f: f.attrs.__setitem__("schema_version", "two"), "schema_version"),
    "split out of range": (lambda f: f["split/train"].__setitem__(0, 10**6), "split/train"),
    "targets wrong shape": (lambda f: (f["static"].__delitem__("targets"),
                                       f["static"].create_dataset("targets", data=np.zeros((3, 3), np.float32))),
                            "targets"),
    "steps not numeric": (lambda f: (f["checkpoints"].__delitem__("steps"),
                                     f["checkpoints"].create_dataset("steps", data=np.array([b"a", b"b"]))),
                          "checkpoints/steps"),
    "steps not increasing": (lambda f: f["checkpoints/steps"].__setitem__(1, 0), "do not increase"),
    "labels retyped": (lambda f: (f["task"].__delitem__("labels"),
                                  f["task"].create_dataset("labels", data=np.zeros(55, np.float64))), "task/labels"),
    "task names a CSV path": (lambda f: f.attrs.__setitem__(
        "task", json.dumps({"name": "group", "group": "../../../etc/passwd.csv"})), "does not store it"),
    "huge p": (lambda f: f.attrs.__setitem__("config", f.attrs["config"].replace('"p": 10', '"p": 100000')), "p="),
    "huge model": (lambda f: f.attrs.__setitem__(
        "config", f.attrs["config"].replace('"decoder": [32, 32]', '"decoder": [60000, 60000, 60000]')), "weights"),
}


@pytest.mark.parametrize("name", list(EDITS))
def test_damaged_or_retyped_run_files_are_one_line_errors(capsys, small_run, tmp_path, name):
    d = _copy(small_run, tmp_path)
    how, needle = EDITS[name]
    _edit(d / "run.h5", how)
    before = _sha(d / "run.h5")
    for argv in (["info", str(d)], ["analyze", str(d), "--metric", "rqi", "--steps", "last", "--no-progress"],
                 ["train", "--resume", str(d), "--steps", "400", "--no-progress"]):
        err = _one_line_error(capsys, argv)
        assert needle in err, (argv, err)
        assert "root:" not in err  # nothing of a foreign file is echoed
    assert _sha(d / "run.h5") == before


CRAFTED = {
    "external link": lambda f, tmp: f["checkpoints/params"].__setitem__(
        "extra", h5py.ExternalLink(str(tmp / "other.h5"), "/data")),
    "soft link": lambda f, tmp: f.__setitem__("alias", h5py.SoftLink("/checkpoints")),
    "virtual dataset": lambda f, tmp: f["checkpoints/params"].create_virtual_dataset(
        "virtual", _layout(tmp)),
    "external storage": lambda f, tmp: f["static"].create_dataset(
        "ext", shape=(4,), dtype="f4", external=[(str(tmp / "raw.bin"), 0, 16)]),
    "huge shape": lambda f, tmp: f["checkpoints/params"].create_dataset(
        "huge", shape=(1000, 1 << 20, 1 << 20), dtype="f4", chunks=(1, 1, 1024)),
}


def _layout(tmp: Path) -> h5py.VirtualLayout:
    with h5py.File(tmp / "other.h5", "w") as g:
        g["data"] = np.arange(10, dtype=np.float32)
    layout = h5py.VirtualLayout(shape=(10,), dtype="f4")
    layout[:] = h5py.VirtualSource(str(tmp / "other.h5"), "data", shape=(10,))
    return layout


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_files_that_read_outside_the_run_are_refused(capsys, small_run, tmp_path, name):
    d = _copy(small_run, tmp_path)
    with h5py.File(tmp_path / "other.h5", "w") as g:
        g["data"] = np.arange(10, dtype=np.float32)
    (tmp_path / "raw.bin").write_bytes(b"secretsecretsecr")
    with h5py.File(d / "run.h5", "r+") as f:
        CRAFTED[name](f, tmp_path)
    before = _sha(d / "run.h5")
    err = _one_line_error(capsys, ["info", str(d)])
    assert ("refused" in err or "implausible" in err) and "secret" not in err
    assert _sha(d / "run.h5") == before


def test_series_never_returns_uncommitted_rows(small_run, tmp_path):
    d = _copy(small_run, tmp_path)
    with h5py.File(d / "run.h5", "r+") as f:  # a writer died after rows were written, before commit
        ds = f["checkpoints/params/embed.W_E"]
        n = ds.shape[0]
        ds.resize((n + 3, *ds.shape[1:]))
        ds[n:] = 99.0
        m = f["metrics/val_acc"]
        m.resize((m.shape[0] + 2,))
        m[-2:] = 99.0
    with probe.load_run(d) as run:
        t = len(run.steps)
        assert run.series("embed.W_E", slice(None)).shape[0] == t
        assert run.series("embed.W_E", slice(0, None, 2)).shape[0] == len(range(0, t, 2))
        assert not (run.series("embed.W_E", slice(-5, None)) == 99.0).any()
        assert len(run.metrics) == len(run.file.metric_steps()) and (run.metrics["val_acc"] < 2).all()


# --------------------------------------------------------------------------------------------------
# crafted sizes: refused before anything is read
# --------------------------------------------------------------------------------------------------
SHIPPED = Path(__file__).resolve().parents[2] / "data" / "runs"


def _shipped_copy(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    shutil.copytree(SHIPPED / "toy-add", d, ignore=shutil.ignore_patterns("analysis"))
    return d


def _replace(f: h5py.File, key: str, **kw) -> None:
    """Put a dataset declaring ``kw["shape"]`` at ``key`` without writing its data (chunks unallocated)."""
    del f[key]
    f.create_dataset(key, fletcher32=True, **kw)


SIZES = {
    "steps 2^29 rows": (lambda f: f["checkpoints/steps"].resize((1 << 29,)), "checkpoints/steps"),
    "metrics 2^28 rows": (lambda f: [ds.resize((1 << 28,)) for ds in f["metrics"].values()], "metrics/step"),
    "split/train 2^30 rows": (lambda f: _replace(f, "split/train", shape=(1 << 30,), maxshape=(None,), dtype="i8",
                                                 chunks=(1 << 16,)), "split/train"),
    "split larger than the task": (lambda f: (f["split"].__delitem__("train"),
                                              f["split"].create_dataset("train", data=np.arange(100) % 55)),
                                   "100 + 10 indices for a task of 55 samples"),
    "resume slot 4 GiB": (lambda f: _replace(f, "resume/slot1/params/decoder.1.W", shape=(1 << 15, 1 << 15),
                                             dtype="f4", chunks=(512, 512)), "resume/slot1/params/decoder.1.W"),
    "resume slot misshapen": (lambda f: (f["resume/slot1/params"].__delitem__("decoder.1.W"),
                                         f["resume/slot1/params"].create_dataset("decoder.1.W",
                                                                                 data=np.zeros((3, 3), "f4"))),
                              "resume/slot1: parameter 'decoder.1.W' has shape (3, 3)"),
    "series 10 GiB of committed rows": (lambda f: _replace(f, "checkpoints/params/decoder.1.W",
                                                           shape=(39, 8192, 8192), maxshape=(None, 8192, 8192),
                                                           dtype="f4", chunks=(1, 1024, 1024)),
                                        "checkpoints/params/decoder.1.W"),
    "static 1 GiB": (lambda f: _replace(f, "static/targets", shape=(1 << 28, 1), dtype="f4", chunks=(1 << 16, 1)),
                     "static/targets"),
    "task/inputs 30 GiB": (lambda f: _replace(f, "task/inputs", shape=(55, 1 << 26), dtype="i8", chunks=(1, 1 << 16)),
                           "task/inputs"),
}


def _open_with_memory_cap(run_dir: Path, cap: int = 1 << 30) -> subprocess.CompletedProcess:
    """Open the run in a child whose address space is capped, so reading what a crafted file declares
    would end in MemoryError there instead of swamping the machine."""
    import resource

    code = ("import sys, probe\n"
            "try:\n    probe.load_run(sys.argv[1]).close()\n"
            "except probe.ProbeError as exc:\n    print(exc)\n    sys.exit(2)\n")
    return subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))


@pytest.mark.parametrize("name", list(SIZES))
def test_crafted_sizes_are_refused_before_anything_is_read(capsys, tmp_path, name):
    """A small file declaring huge datasets (unwritten chunks read as zeros) is one error at opening,
    in a process that could not even allocate what the file declares."""
    d = _shipped_copy(tmp_path)
    how, needle = SIZES[name]
    with h5py.File(d / "run.h5", "r+") as f:
        how(f)
    assert (d / "run.h5").stat().st_size < 20 << 20
    before = _sha(d / "run.h5")
    res = _open_with_memory_cap(d)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert needle in res.stdout and "damaged" in res.stdout, res.stdout
    if "misshapen" in name or "larger" in name:  # small enough to try in-process: every command refuses it
        for argv in (["info", str(d)], ["train", "--resume", str(d), "--steps", "7000", "--no-progress"]):
            assert needle in _one_line_error(capsys, argv)
    assert _sha(d / "run.h5") == before


def _npz_declaring(path: Path, member: str, shape: tuple[int, ...]) -> None:
    """An uncompressed .npz whose member's npy header declares ``shape`` float64 over 80 bytes."""
    import io
    import zipfile

    from numpy.lib import format as npy

    buf = io.BytesIO()
    npy.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    buf.write(bytes(80))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(member, buf.getvalue())
        z.writestr("lineage.npy", _npy(np.array(json.dumps({"run": "/x", "step": 0, "optimizer": False}))))


def _npy(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_parent_copy_declaring_2_to_the_40_floats_is_refused_unread(tmp_path):
    from probe.train.loop import PARENT_COPY, _read_parent_copy

    _npz_declaring(tmp_path / PARENT_COPY, "params/embed.W_E.npy", (1 << 40,))
    with pytest.raises(probe.ProbeError, match=r"damaged: member 'params/embed.W_E.npy' declares \(1099511627776,\)"):
        _read_parent_copy(tmp_path)
    _npz_declaring(tmp_path / PARENT_COPY, "params/embed.W_E.npy", (10,))  # the header fits its bytes: read
    parent = _read_parent_copy(tmp_path)
    assert parent is not None and parent.params["embed.W_E"].shape == (10,) and parent.lineage["step"] == 0


def test_parent_copy_of_other_shapes_is_one_line_on_resume(tmp_path, capsys):
    """A fine-tuned run killed before its run file existed restarts from parent.npz: weights of other
    shapes than the model's are refused by name before any training."""
    from probe.train.config import load_config
    from probe.train.loop import PARENT_COPY, Trainer, write_config_copy

    cfg = load_config("kitouni-mlp", overrides={"p": "11", "steps": "20", "model.d_embed": "8", "model.hidden": "8"})
    d = tmp_path / "run"
    d.mkdir()
    write_config_copy(d, cfg)
    shapes = {n: tuple(p.shape) for n, p in Trainer(cfg, d, progress=False).model.named_parameters()}
    arrays = {f"params/{n}": np.zeros(s, np.float32) for n, s in shapes.items()}
    arrays["params/embed.W_E"] = np.zeros((3, 3), np.float32)
    _npz_declaring(d / PARENT_COPY, "params/embed.W_E.npy", (1 << 40,))
    before = _sha(d / PARENT_COPY)
    err = _one_line_error(capsys, ["train", "--resume", str(d), "--no-progress"])
    assert "parent.npz" in err and "declares (1099511627776,)" in err
    assert _sha(d / PARENT_COPY) == before and not run_file_path(d).exists()
    np.savez(d / PARENT_COPY, **arrays, lineage=np.array(json.dumps({"run": "/x", "step": 0, "optimizer": False})))
    err = _one_line_error(capsys, ["train", "--resume", str(d), "--no-progress"])
    assert "the starting weights do not fit the model: parameter 'embed.W_E' has shape (3, 3)" in err
    assert not run_file_path(d).exists()
    assert (d / PARENT_COPY).is_file() and (d / "config.yaml").is_file()  # a refused resume loses nothing


# --------------------------------------------------------------------------------------------------
# the analysis cache and the verification record are bound to the data
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def local_key(tmp_path, monkeypatch) -> Path:
    from probe import integrity

    key = tmp_path / "keys" / "key"
    monkeypatch.setenv(integrity.KEY_ENV, str(key))
    return key


def test_a_cache_file_rewritten_with_a_recomputed_hash_is_recomputed(tmp_path, local_key):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from probe import analyses
    from probe.analyses import cache

    d = _shipped_copy(tmp_path)
    with probe.load_run(d) as run:
        first = analyses.compute(run, "rqi")
    path = next((d / "analysis").glob("rqi-*.parquet"))
    table = pq.read_table(path)
    forged = table.set_column(table.column_names.index("rqi"), "rqi", pa.array([0.4242] * len(table)))
    meta = json.loads(table.schema.metadata[b"probe"])
    meta["table_sha256"] = cache._table_hash(forged.to_pandas())  # the plain self-hash, recomputed
    pq.write_table(forged.replace_schema_metadata({**table.schema.metadata, b"probe": json.dumps(meta).encode()}),
                   path)
    with pytest.warns(UserWarning, match="seal does not verify"), probe.load_run(d) as run:
        again = analyses.compute(run, "rqi")
    assert again["rqi"].tolist() == first["rqi"].tolist() and (again["rqi"] != 0.4242).all()
    with probe.load_run(d) as run:  # recomputed and sealed again: served without a warning
        assert analyses.compute(run, "rqi").equals(again)
    local_key.write_bytes(os.urandom(32))  # another machine's key: its cache files are not trusted
    from probe import integrity

    integrity._keys.clear()
    with pytest.warns(UserWarning, match="seal does not verify"), probe.load_run(d) as run:
        assert analyses.compute(run, "rqi")["rqi"].tolist() == first["rqi"].tolist()


def test_tensors_edited_in_place_with_digests_kept_are_an_error_not_a_stale_result(tmp_path, local_key):
    from probe import analyses

    d = _shipped_copy(tmp_path)
    with probe.load_run(d) as run:
        analyses.compute(run, "rqi")  # cached, and the file state verified
        last = int(run.steps[-1])
    with h5py.File(d / "run.h5", "r+") as f:  # new values through the filter (checksums fine), digests kept
        ds = f["checkpoints/params/embed.W_E"]
        ds[-1] = ds[-1] * 10 + 1
    for force in (False, True):
        with probe.load_run(d) as run, pytest.raises(probe.ProbeError) as info:
            analyses.compute(run, "rqi", force=force)
        assert f"checkpoints/digest at step {last} does not match the tensors" in str(info.value)


def test_a_forged_verification_record_does_not_skip_the_checksums(tmp_path, local_key):
    d = _shipped_copy(tmp_path)
    record = d / "analysis" / "verified.json"
    with probe.load_run(d) as run:
        run.series("embed.W_E")
    genuine = json.loads(record.read_text())
    assert genuine["rows"]["checkpoints/params/embed.W_E"] == [[0, 39]] and len(genuine["seal"]) == 64
    offset, _ = _chunk_offset(d / "run.h5", "checkpoints/params/embed.W_E", 0)
    with open(d / "run.h5", "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))
    st = (d / "run.h5").stat()
    forged = {**genuine, "file": [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]}
    for seal in (genuine["seal"], "0" * 64, None):  # the old seal, a made-up one, none
        record.write_text(json.dumps({**forged, "seal": seal}))
        with probe.load_run(d) as run, pytest.raises(probe.ProbeError, match="checksum.*embed.W_E|embed.W_E.*checksum"):
            run.series("embed.W_E")


def test_without_a_local_key_nothing_recorded_is_trusted(tmp_path, monkeypatch):
    from probe import analyses, integrity

    monkeypatch.setenv(integrity.KEY_ENV, "/proc/no-such-dir/key")  # can be neither read nor created
    d = _shipped_copy(tmp_path)
    with probe.load_run(d) as run:
        a = analyses.compute(run, "rqi", steps="last")
    with probe.load_run(d) as run:
        b = analyses.compute(run, "rqi", steps="last")
    assert a.equals(b)
    assert not (d / "analysis").exists()  # no verification record, no cache file: nothing to trust them with


# --------------------------------------------------------------------------------------------------
# damaged sweep status records
# --------------------------------------------------------------------------------------------------
def _sweep_with_records(root: Path, records: dict[str, str]) -> None:
    """A sweep directory whose runs have the given status files (no training needed to read it)."""
    (root / "status").mkdir(parents=True)
    (root / "runs").mkdir()
    runs = [{"name": n, "values": {"lr": 0.001 * (i + 1)}, "config": {}} for i, n in enumerate(records)]
    (root / "sweep.json").write_text(json.dumps({"format": "probe-sweep", "runs": runs, "swept": ["lr"],
                                                 "log_keys": []}))
    for name, text in records.items():
        (root / "status" / f"{name}.json").write_text(text)


GOOD = {"state": "done", "step": [0, 10, 20], "train_acc": [0.1, 1.0, 1.0], "val_acc": [0.0, 0.2, 1.0],
        "val_loss": [3.0, 2.0, 0.1], "finished": True, "checkpoints": 3, "seconds": 1.5}


def test_damaged_status_records_read_as_unknown_never_as_done(tmp_path, capsys):
    from probe.sweep import load_status

    root = tmp_path / "sweep"
    _sweep_with_records(root, {
        "good": json.dumps(GOOD),
        "finished-seven": json.dumps({**GOOD, "finished": 7}),
        "string-step": json.dumps({**GOOD, "step": "0,10,20"}),
        "bad-state": json.dumps({**GOOD, "state": "won"}),
        "short-curve": json.dumps({**GOOD, "val_acc": [0.0]}),
        "not-json": "{oops",
        "binary": "",
    })
    (root / "status" / "binary.json").write_bytes(b"\xff\xfe\x00")
    rec, problem = load_status(root, "good")
    assert rec is not None and rec.finished is True and rec.step == (0, 10, 20) and problem == ""
    for name, needle in (("finished-seven", "'finished' must be true or false"),
                         ("string-step", "'step' must be a list"), ("bad-state", "'state' must be one of"),
                         ("short-curve", "'val_acc' has 1 values for 3 steps"), ("not-json", "damaged"),
                         ("binary", "status record binary.json")):
        rec, problem = load_status(root, name)
        assert rec is None and needle in problem, (name, problem)
    assert main(["sweep", "status", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("done: 1, running: 0, failed: 0, interrupted: 0, pending: 6 (of 7)"), out
    assert main(["phases", str(root), "--format", "csv"]) == 0
    import io

    import pandas as pd

    df = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("run")
    assert df.loc["good", "phase"] != "" and not str(df.loc["good", "phase"]).startswith("n/a")
    assert all(str(df.loc[n, "phase"]).startswith("n/a") for n in df.index if n != "good")


def test_status_records_are_checked_when_written_too(tmp_path):
    from probe.sweep import StatusRecord
    from probe.train.sweep import _write_status

    (tmp_path / "status").mkdir()
    with pytest.raises(ValueError, match="'finished' must be true or false"):
        _write_status(tmp_path, "a", {**GOOD, "finished": 7})
    with pytest.raises(ValueError, match="'step' must be a list"):
        StatusRecord(**{**GOOD, "step": "0,10,20"})
    assert _write_status(tmp_path, "a", StatusRecord(**GOOD))
    assert StatusRecord.from_json((tmp_path / "status" / "a.json").read_text()) == StatusRecord(**GOOD)
