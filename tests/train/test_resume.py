"""Crash safety: kill -9 during training leaves a readable file; resume is bit-identical on CPU."""

import os
import signal
import subprocess
import sys
import time

import numpy as np

import probe
from probe.runfile import RunFile, run_file_path
from probe.train.config import load_config
from probe.train.loop import resume, train

KILL_SETS = ["steps=750", "model.decoder=32,32", "checkpoint.schedule=every", "checkpoint.every=3",
             "checkpoint.metrics_every=1"]


def _final_params(run_dir):
    with probe.load_run(run_dir) as run:
        return {k: v.numpy() for k, v in run.params("last").items()}, run.metrics


def _assert_identical(a, b):
    pa, ma = a
    pb, mb = b
    assert pa.keys() == pb.keys()
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), k
    assert ma.equals(mb)


def test_interrupted_run_resumes_bit_identical(tmp_path, tiny_toy_config, train_interrupted):
    """In-process: stop after an exception mid-run, resume, compare with an uninterrupted run."""
    train(tiny_toy_config, tmp_path / "full", progress=False)
    train_interrupted(tiny_toy_config, tmp_path / "cut", at_call=33)
    with probe.load_run(tmp_path / "cut") as run:
        assert not run.finished and run.steps[-1] == 25
    resume(tmp_path / "cut", progress=False)
    _assert_identical(_final_params(tmp_path / "full"), _final_params(tmp_path / "cut"))


def test_kill_minus_nine_then_resume(tmp_path, wait_for_checkpoints):
    cfg = load_config("liu-toy-add", overrides=dict(s.split("=") for s in KILL_SETS))
    train(cfg, tmp_path / "ref", progress=False)
    reference = _final_params(tmp_path / "ref")
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "probe.cli", "train", "--preset", "liu-toy-add", "--no-progress", "--out", str(run_dir)]
    for s in KILL_SETS:
        cmd += ["--set", s]
    rng = np.random.default_rng(0)
    kills = 0
    for attempt in range(3):
        proc = subprocess.Popen(cmd if attempt == 0 else [sys.executable, "-m", "probe.cli", "train", "--resume",
                                                          str(run_dir), "--no-progress"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait until training writes, then kill at a random moment while checkpoints stream in
        wait_for_checkpoints(proc, run_dir, 5)
        time.sleep(float(rng.uniform(0.05, 0.4)))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        # whatever was committed before the kill is readable and self-consistent
        rf = RunFile(run_file_path(run_dir))
        steps = rf.steps
        assert len(steps) >= 1 and np.all(np.diff(steps) > 0)
        for name in rf.tensor_names:
            assert np.isfinite(rf.read(rf.series_dataset(name), slice(0, len(steps)))).all()
        assert rf.resume_state() is not None
        rf.close()
    assert kills >= 1
    subprocess.run([sys.executable, "-m", "probe.cli", "train", "--resume", str(run_dir), "--no-progress"],
                   check=True, capture_output=True)
    _assert_identical(reference, _final_params(run_dir))


def test_reader_while_writer_runs(tmp_path, waits):
    run_dir = tmp_path / "live"
    cmd = [sys.executable, "-m", "probe.cli", "train", "--preset", "liu-toy-add", "--no-progress", "--out",
           str(run_dir)] + sum((["--set", s] for s in KILL_SETS), [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = []

    def read() -> bool:
        """One read of the live run; enough once five reads saw checkpoints (two, if training ended)."""
        if run_file_path(run_dir).exists():
            try:
                run = probe.load_run(run_dir)
            except probe.ProbeError:
                return False
            with run:
                n = len(run.steps)
                if n:
                    assert run.params("last")["embed.W_E"].shape == (10, 1)
                    seen.append(n)
        return len(seen) >= 5 or (proc.poll() is not None and len(seen) >= 2)

    try:
        waits.until(read, "five reads of the run while it trains", progress=lambda: seen[-1:], proc=proc, poll=0.1)
    finally:
        proc.kill()
        proc.wait()
    assert seen == sorted(seen)


def test_a_run_killed_before_its_file_existed_starts_from_its_config(tmp_path, capsys):
    """Only config.yaml (what --dry-run prints, both training-set keys included) and a partial
    run.h5.tmp: --resume trains the run from its config, for the presets that set n_train."""
    from probe.cli import main

    for preset, sets in (("liu-toy-add", ["steps=20", "model.decoder=8"]),
                         ("omnigrok-digits", ["steps=20", "model.width=16", "checkpoint.count=5"])):
        run_dir = tmp_path / preset
        run_dir.mkdir()
        argv = ["train", "--preset", preset, "--dry-run"] + [a for s in sets for a in ("--set", s)]
        assert main(argv) == 0
        (run_dir / "config.yaml").write_text(capsys.readouterr().out)
        (run_dir / "run.h5.tmp").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # killed while being written
        code, printed = main(["train", "--resume", str(run_dir), "--no-progress"]), capsys.readouterr()
        assert code == 0 and "resumed and finished" in printed.out, printed.err
        with probe.load_run(run_dir) as run:
            assert run.finished and run.config == load_config(preset, overrides=dict(s.split("=") for s in sets))
            assert run.config.n_train is not None


def test_epoch_batches_walk_a_shuffled_split_and_resume_bit_identical(tmp_path, train_interrupted):
    """batching=epochs (Lee et al. 2024's main.py): each epoch's batches are consecutive slices of a fresh
    shuffle of the training rows, the last one the remainder; the shuffle depends on the step alone, so a
    run interrupted mid-epoch resumes bit-identical."""
    from probe.train.loop import Trainer

    sets = {"p": "11", "steps": "20", "model.d_model": "16", "model.n_heads": "2", "model.d_mlp": "32",
            "batch_size": "16", "batching": "epochs", "checkpoint.every": "5", "checkpoint.metrics_every": "1"}
    cfg = load_config("nanda-modadd", overrides=sets)
    trainer = Trainer(cfg, tmp_path / "unused", progress=False)
    n_train = trainer.x_train.shape[0]
    assert n_train == 36  # floor(0.3 * 121): three steps an epoch, 16 + 16 + 4 rows
    epochs = [[trainer.batch_rows(step).tolist() for step in range(3 * e, 3 * e + 3)] for e in range(3)]
    for batches in epochs:
        assert [len(b) for b in batches] == [16, 16, 4]
        assert sorted(sum(batches, [])) == list(range(n_train))
    assert epochs[0] != epochs[1] != epochs[2]
    assert Trainer(cfg, tmp_path / "unused", progress=False).batch_rows(7).tolist() == epochs[2][1]  # no state
    random = Trainer(load_config("nanda-modadd", overrides={**sets, "batching": "random"}), tmp_path / "u", progress=False)
    assert [len(random.batch_rows(s)) for s in range(3)] == [16, 16, 16]

    train(cfg, tmp_path / "full", progress=False)
    train_interrupted(cfg, tmp_path / "cut", at_call=25)
    with probe.load_run(tmp_path / "cut") as run:
        assert not run.finished and 0 < run.steps[-1] < 20 and run.steps[-1] % 3
    resume(tmp_path / "cut", progress=False)
    _assert_identical(_final_params(tmp_path / "full"), _final_params(tmp_path / "cut"))
