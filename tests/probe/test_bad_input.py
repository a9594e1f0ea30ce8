"""Bad input added with the reliability pass: one line on stderr, exit code 2, nothing left behind;
and the inputs that are accepted (unsorted step lists, a user's training fraction) do the right thing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import probe
from probe import analyses
from probe.analyses.export import tidy
from probe.cli import main
from probe.errors import ProbeError
from probe.run import select_steps, run_labels
from probe.tasks import make_task
from probe.train.config import load_config

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "runs"


def _err(capsys, argv: list[str]) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv,needle", [
    (["analyze", SHIPPED / "modadd-p53", "--metric", "rqi", "--hook", "blocks.0.hook_resid_post", "--position", "7",
      "--steps", "last"], "--position: 7 is outside"),
    (["analyze", SHIPPED / "modadd-p53", "--metric", "circularity", "--pcs", "200", "--steps", "last", "--force"],
     "--pcs: 200 is more than"),
    (["plot", SHIPPED / "modadd-p53", "--figure", "animation", "--fps", "0", "--out", "x.gif"], "--fps: must be >= 1"),
    (["plot", SHIPPED / "modadd-p53", "--figure", "animation", "--fps", "-3", "--out", "x.gif"], "--fps: must be >= 1"),
    (["train", "--preset", "liu-toy-add", "--set", "split_seed=-1", "--out", "unused"], "split_seed=-1"),
    (["train", "--preset", "liu-toy-add", "--set", "momentum=-1", "--out", "unused"], "momentum=-1.0"),
    (["train", "--preset", "liu-toy-add", "--set", "seed=1e30", "--out", "unused"], "seed=1000000000000000019884624838656"),
    (["train", "--preset", "liu-toy-add", "--out", "/proc/no/such/run"], "--out: cannot write to run directory"),
    (["train", "--preset", "liu-toy-add", "--set", "train_fraction=0.5", "--set", "n_train=20", "--dry-run"],
     "either train_fraction or n_train"),
    (["train", "--resume", SHIPPED / "toy-add", "--steps", "0"], "--steps: must be >= 1"),
])
def test_cli_bad_input_is_one_line(capsys, tmp_path, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    assert needle in _err(capsys, argv)
    assert not (tmp_path / "unused").exists()


def test_step_lists_are_sorted_and_deduplicated():
    steps = np.array([0, 10, 20, 500])
    assert select_steps(steps, "500,0").tolist() == [0, 3]
    assert select_steps(steps, "last,first").tolist() == [0, 3]
    assert select_steps(steps, "0,0").tolist() == [0]


def test_failed_train_leaves_no_directory(capsys, tmp_path):
    out = tmp_path / "new" / "run"
    _err(capsys, ["train", "--preset", "liu-toy-add", "--set", "checkpoint.tensors=nothing*", "--out", out])
    assert not out.exists()


def test_user_training_fraction_wins_over_the_preset():
    cfg = load_config("liu-toy-add", overrides={"train_fraction": "0.5"})
    assert cfg.n_train is None and cfg.train_fraction == 0.5


def test_tables_that_are_not_groups_are_refused_unless_asked(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_text("op,a,b,c\na,a,b,c\nb,c,a,b\nc,b,c,a\n")
    const = tmp_path / "const.csv"
    const.write_text("op,a,b\na,a,a\nb,a,a\n")
    with pytest.raises(ProbeError, match="not associative"):
        make_task("group", group=str(latin))
    with pytest.raises(ProbeError, match="not a group"):
        make_task("group", group=str(const))
    assert make_task("table", group=str(latin)).n_symbols == 3


def test_group_run_survives_its_csv_moving(tmp_path, monkeypatch):
    from probe.train.loop import resume, train

    csv = tmp_path / "z3.csv"
    csv.write_text("op,e,r,s\ne,e,r,s\nr,r,s,e\ns,s,e,r\n")
    cfg = load_config("liu-toy-add", overrides={"task": "group", "group": str(csv), "p": None, "n_train": None,
                                                "train_fraction": "0.8", "steps": "20", "model.decoder": "8"})
    train(cfg, tmp_path / "run", progress=False)
    csv.unlink()
    monkeypatch.chdir(tmp_path.parent)
    with probe.load_run(tmp_path / "run") as run:
        assert run.task.n_symbols == 3 and run.task.symbols == ("e", "r", "s")
    resume(tmp_path / "run", steps=30, progress=False)


def test_info_on_a_run_with_no_metric_rows(capsys, tmp_path):
    import h5py

    d = tmp_path / "early"
    shutil.copytree(SHIPPED / "toy-add", d, ignore=shutil.ignore_patterns("analysis"))
    with h5py.File(d / "run.h5", "r+") as f:  # as if killed before the first metrics were committed
        f["metrics/step"].resize((0,))
    assert main(["info", str(d)]) == 0
    assert "no metrics recorded yet" in capsys.readouterr().out


def test_run_names_are_unique_in_tables(tmp_path):
    for parent in ("A", "B"):
        shutil.copytree(SHIPPED / "toy-add", tmp_path / parent / "run", ignore=shutil.ignore_patterns("analysis"))
    assert run_labels([tmp_path / "A" / "run", tmp_path / "B" / "run"]) == ["A/run", "B/run"]
    runs = [probe.load_run(tmp_path / p / "run") for p in ("A", "B")]
    df = tidy(runs, ["rqi"], steps="last")
    assert sorted(df["run"]) == ["A/run", "B/run"]


def test_cache_is_keyed_by_content_and_edited_files_are_recomputed(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(SHIPPED / "toy-add", a, ignore=shutil.ignore_patterns("analysis"))
    shutil.copytree(SHIPPED / "modadd-p53", b, ignore=shutil.ignore_patterns("analysis"))
    with probe.load_run(a) as run:
        first = analyses.compute(run, "rqi", steps="last")
    cached = next((a / "analysis").glob("rqi-*.parquet"))
    table = pq.read_table(cached)
    edited = table.set_column(table.column_names.index("rqi"), "rqi", pa.array([0.12]))
    pq.write_table(edited.replace_schema_metadata(table.schema.metadata), cached)
    with pytest.warns(UserWarning, match="does not match"), probe.load_run(a) as run:
        again = analyses.compute(run, "rqi", steps="last")
    assert again["rqi"].iloc[0] == first["rqi"].iloc[0] == 1.0
    # another run copied into a's place, same name, cache directory kept: never served a's result
    keep = a / "analysis"
    shutil.copy(b / "run.h5", a / "run.h5")
    assert keep.exists()
    with probe.load_run(a) as run:  # (HDF5 shares one handle per file: the old ones are closed above)
        other = analyses.compute(run, "rqi", steps="last")
    assert other["rqi"].iloc[0] != first["rqi"].iloc[0]
