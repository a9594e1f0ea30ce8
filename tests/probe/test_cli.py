import subprocess
import sys
import time

import pytest

from probe.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_is_fast_and_lists_commands():
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "probe.cli", "--help"], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    assert res.returncode == 0 and "train" in res.stdout and "info" in res.stdout
    assert elapsed < 5  # generous bound for slow CI; heavy imports must not happen here
    res = subprocess.run([sys.executable, "-c", "import sys, probe.cli; print('torch' in sys.modules)"],
                         capture_output=True, text=True)
    assert res.stdout.strip() == "False"


HEAVY = ("torch", "h5py", "numpy", "pandas", "matplotlib")


def test_building_the_parser_loads_nothing_heavy():
    """``probe --help`` and every command but the registry ones build their parser without numpy and
    heavier; the registry commands build theirs with the metric parameters and figures."""
    code = ("import sys, probe.cli; probe.cli.build_parser(); probe.cli.build_parser('train'); "
            "probe.cli.build_parser('sweep'); print(','.join(m for m in %r if m in sys.modules))" % (HEAVY,))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""
    from probe.cli import REGISTRY_COMMANDS, build_parser

    for command in REGISTRY_COMMANDS:
        help_text = build_parser(command)._subparsers._group_actions[0].choices[command].format_help()
        assert "--delta" in help_text or "--figure" in help_text, command


def test_train_and_info(tmp_path, capsys):
    out_dir = tmp_path / "r"
    code, out, err = _run(capsys, "train", "--preset", "liu-toy-add", "--set", "steps=20", "--set", "model.decoder=8",
                          "--set", "checkpoint.schedule=every", "--set", "checkpoint.every=10", "--out", str(out_dir),
                          "--no-progress")
    assert code == 0, err
    code, out, err = _run(capsys, "info", str(out_dir), "--hooks")
    assert code == 0
    for needle in ("nonmod-add(p=10", "45 train / 10 val", "seed 0, split_seed 1", "adamw lr 0.0001",
                   "embeddings lr 0.001", "3 at steps 0..20", "every 10 steps", "final:", "MB", "hook_embed",
                   "decoder.0.hook_pre"):
        assert needle in out, needle
    code, out, _ = _run(capsys, "info", str(out_dir), "--json")
    assert code == 0 and '"checkpoints"' in out
    code, _, err = _run(capsys, "train", "--preset", "liu-toy-add", "--out", str(out_dir))
    assert code == 2 and "already holds a run" in err


def test_progress_bar_shows_step_and_metrics(tmp_path, capsys):
    code, _, err = _run(capsys, "train", "--preset", "liu-toy-add", "--set", "steps=30", "--set", "model.decoder=8",
                        "--out", str(tmp_path / "p"))
    assert code == 0
    assert "30/30" in err and "val_acc=" in err and "loss=" in err


@pytest.mark.parametrize("argv,message", [
    (["info", "/nonexistent/run"], "does not exist"),
    (["train", "--preset", "nope", "--out", "x"], "unknown preset 'nope' (valid: liu-toy-add"),
    (["train", "--preset", "liu-toy-add", "--set", "bogus=1", "--out", "x"], "unknown config key 'bogus'"),
    (["train", "--preset", "liu-toy-add", "--set", "lr=abc", "--out", "x"], "invalid config value lr='abc'"),
    (["train", "--preset", "liu-toy-add", "--set", "lr", "--out", "x"], "--set expects key=value"),
    (["train", "--out", "x"], "give a preset"),
    (["frobnicate"], "invalid choice"),
    (["train", "--resume", "/nonexistent/run"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert err.startswith("probe: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_corrupt_run_via_cli(tmp_path, toy_run, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    data = (toy_run / "run.h5").read_bytes()
    (bad / "run.h5").write_bytes(data[:2000])
    code, _, err = _run(capsys, "info", str(bad))
    assert code == 2 and "corrupt or truncated" in err
    assert (bad / "run.h5").read_bytes() == data[:2000]  # nothing on disk changed


def test_dry_run_prints_resolved_config(capsys):
    code, out, _ = _run(capsys, "train", "--preset", "nanda-modadd", "--set", "p=97", "--dry-run")
    assert code == 0 and "p: 97" in out and "d_model: 128" in out


def test_out_of_range_options_are_one_line(capsys, tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    shipped = Path(__file__).resolve().parents[2] / "data" / "runs"
    for argv, message in (
        (["plot", shipped / "toy-add", "--figure", "animation", "--fps", "100000", "--out", "a.gif"],
         "--fps: must be in 1..100"),
        (["theory", "critical-fraction", "--p", "5", "--trials", "2", "--seed", "-1", "--no-progress"],
         "--seed: must be an integer in 0..4294967295, got -1"),
        (["theory", "critical-fraction", "--p", "5", "--trials", "2", "--seed", str(2**32), "--no-progress"],
         "--seed: must be an integer"),
    ):
        code, out, err = _run(capsys, *map(str, argv))
        assert code == 2 and message in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "a.gif").exists()


@pytest.mark.parametrize("parent", ['"a string"', "[1, 2]", "{not json", '{"run": "x", "step": "7"}', "null"])
def test_info_refuses_a_parent_record_that_is_not_one(parent, capsys, tmp_path):
    import shutil
    from pathlib import Path

    import h5py

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).resolve().parents[2] / "data" / "runs" / "toy-add", run,
                    ignore=shutil.ignore_patterns("analysis"))
    with h5py.File(run / "run.h5", "r+") as f:
        f.attrs["parent"] = parent
    code, out, err = _run(capsys, "info", str(run))
    assert code == 2 and "parent" in err and err.count("\n") == 1 and "Traceback" not in err, err
