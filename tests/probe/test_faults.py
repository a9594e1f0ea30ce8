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
@pytest.mark.parametrize("name,seed", [("toy", 0), ("toy", 1), ("transformer", 2), ("transformer", 3)])
def test_random_kills_then_resume_is_bit_identical(tmp_path, references, name, seed):
    """Two or three kill -9 in a row at random instants (training, then resuming), then a resume
    that runs to the end: the run equals the uninterrupted one bit for bit."""
    ref_dir, wall = references[name]
    args = TOY if name == "toy" else TRANSFORMER
    rng = np.random.default_rng(seed)
    run_dir = tmp_path / "run"
    for _ in range(int(rng.integers(2, 4))):
        proc = subprocess.Popen(_continue(run_dir, args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def test_training_finishes_while_readers_hold_the_run(tmp_path):
    run_dir = tmp_path / "live"
    proc = subprocess.Popen([*CLI, "train", *TOY, "--set", "steps=400", "--no-progress", "--out", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    held, seen = [], []
    other = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if run_file_path(run_dir).exists():
            try:
                run = probe.load_run(run_dir)
            except probe.ProbeError:
                time.sleep(0.05)
                continue
            held.append(run)  # never closed until training has ended
            seen.append(len(run.steps))
            if len(held) == 3:  # a plain h5py reader too, in its own process, with HDF5's default locking
                code = (f"import h5py, time; f = h5py.File({str(run_file_path(run_dir))!r}, 'r', libver='latest', "
                        "swmr=True); print('open', flush=True); time.sleep(600)")
                other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
                assert other.stdout is not None and other.stdout.readline().strip() == "open"
        time.sleep(0.1)
    _, err = proc.communicate(timeout=120)
    other.kill()
    other.wait()
    assert proc.returncode == 0, err
    assert len(held) >= 3 and seen == sorted(seen)
    for r in held:
        r.close()
    with probe.load_run(run_dir) as run:
        assert run.finished and run.steps[-1] == 400


def test_ctrl_c_exits_130_and_the_run_resumes(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([*CLI, "train", *TOY, "--set", "steps=100000", "--no-progress", "--out", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    deadline = time.time() + 60
    while time.time() < deadline and not run_file_path(run_dir).exists():
        time.sleep(0.1)
    time.sleep(1.0)
    try:
        for _ in range(5):  # Ctrl-C, again if the first landed where Python could not raise it
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=20)
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
    if not _mount_tmpfs(small, "1600k"):  # room for the first chunks of every series, not the second
        pytest.skip("cannot mount a small tmpfs here (needs root and mount)")
    longer = [*TOY, "--set", "steps=1000"]
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
        assert len(run.steps) >= 10 and run.steps[-1] < 1000
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
