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
from probe.train.config import PRESETS, load_config

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
    (["plot", SHIPPED / "modadd-p53", "--figure", "animation", "--fps", "0", "--out", "x.gif"], "--fps: must be in 1..100"),
    (["plot", SHIPPED / "modadd-p53", "--figure", "animation", "--fps", "-3", "--out", "x.gif"], "--fps: must be in 1..100"),
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


# -- written configs, YAML, values ------------------------------------------------------------------
def _bomb(levels: int = 9, width: int = 9) -> str:
    """A 'billion laughs' document: ``levels`` anchors, each a list of ``width`` aliases of the one before."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_written_config_reads_back_as_itself(name, tmp_path, capsys):
    """What --dry-run prints (and what a run directory's config.yaml holds) loads as the same config,
    and printing it again gives the same text, for every preset (both training-set keys included)."""
    import yaml

    cfg = load_config(name)
    assert type(cfg).from_dict(cfg.to_dict()) == cfg
    assert main(["train", "--preset", name, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert yaml.safe_load(text) == cfg.to_dict()
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert load_config(path=path) == cfg
    assert main(["train", str(path), "--dry-run"]) == 0
    assert capsys.readouterr().out == text


def test_training_set_size_layers(tmp_path):
    """A file holding both keys means n_train (as a stored config does); a fraction set over it (a
    file's over a preset, an override over a file) clears the n_train below it."""
    both = tmp_path / "both.yaml"
    both.write_text("preset: liu-toy-add\ntrain_fraction: 0.3\nn_train: 40\n")
    cfg = load_config(path=both)
    assert (cfg.train_fraction, cfg.n_train) == (0.3, 40)
    cfg = load_config(path=both, overrides={"train_fraction": "0.5"})
    assert (cfg.train_fraction, cfg.n_train) == (0.5, None)
    fraction = tmp_path / "fraction.yaml"
    fraction.write_text("preset: liu-toy-add\ntrain_fraction: 0.6\n")
    assert load_config(path=fraction).n_train is None
    assert load_config(path=fraction, overrides={"n_train": "30"}).n_train == 30


def test_yaml_bombs_and_oversized_documents_are_refused():
    from probe.yamlfile import MAX_BYTES, MAX_DEPTH, load_yaml

    assert len(_bomb()) < 1500
    with pytest.raises(ProbeError, match="expands to more than"):
        load_yaml(_bomb(), "the spec")
    with pytest.raises(ProbeError, match="contains it"):
        load_yaml("a: &a [1, *a]\n", "the spec")
    with pytest.raises(ProbeError, match="more than 64 deep"):
        load_yaml("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "the spec")
    with pytest.raises(ProbeError, match="deep"):  # unbalanced and far deeper than any recursion limit
        load_yaml("[" * 200_000, "the spec")
    with pytest.raises(ProbeError, match="bytes; at most"):
        load_yaml("a: 1\n" + "#" * MAX_BYTES, "the spec")
    with pytest.raises(ProbeError, match="not valid YAML"):
        load_yaml("!!python/object/apply:os.system [echo hi]", "the spec")
    with pytest.raises(ProbeError, match="cannot be read"):
        load_yaml("when: 2020-13-45\n", "the spec")
    # ordinary aliases and merge keys still work; an empty document is None
    assert load_yaml("base: &b {lr: 0.1}\nrun: {<<: *b, seed: 1}\n", "x") == {"base": {"lr": 0.1},
                                                                              "run": {"lr": 0.1, "seed": 1}}
    assert load_yaml("", "x") is None


def test_yaml_bombs_are_refused_by_every_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("preset: liu-toy-add\n" + _bomb())
    (tmp_path / "spec.yaml").write_text("preset: liu-toy-add\n" + _bomb() + "grid:\n  lr: *l8\n")
    assert "expands to more than" in _err(capsys, ["train", "config.yaml", "--dry-run"])
    assert "expands to more than" in _err(capsys, ["sweep", "spec.yaml", "--dry-run"])
    (tmp_path / "sweep").mkdir()
    assert "expands to more than" in _err(capsys, ["sweep", "spec.yaml", "--out", "sweep"])
    run = tmp_path / "killed"  # a run directory whose config copy was replaced
    run.mkdir()
    (run / "config.yaml").write_text(_bomb())
    assert "expands to more than" in _err(capsys, ["train", "--resume", run])
    assert not (run / "run.h5").exists()


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "nan", "1e400"])
def test_non_finite_numbers_are_refused(value, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _err(capsys, ["train", "--preset", "liu-toy-add", "--set", f"lr={value}", "--out", "unused"])
    assert "expected a finite number" in err and "lr=" in err
    assert not (tmp_path / "unused").exists()
    (tmp_path / "spec.yaml").write_text("preset: liu-toy-add\ngrid:\n  weight_decay: [0.1, .inf]\n")
    err = _err(capsys, ["sweep", "spec.yaml", "--dry-run"])
    assert "grid point weight_decay=inf" in err and "expected a finite number" in err


def test_empty_step_selections_are_refused(capsys):
    steps = np.array([0, 10, 20])
    for spec in ("", "  ", []):
        with pytest.raises(ProbeError, match="^steps: empty"):
            select_steps(steps, spec)
    with pytest.raises(ProbeError, match="is not a step"):
        select_steps(steps, [10.5])
    assert select_steps(steps, [10.0]).tolist() == [1]
    assert "--steps: empty" in _err(capsys, ["analyze", SHIPPED / "toy-add", "--metric", "rqi", "--steps", ""])


def test_unknown_hook_is_refused_before_any_work(monkeypatch):
    from probe.analyses import runner

    def no_work(*args, **kwargs):
        raise AssertionError("a metric was computed before the hook was checked")

    monkeypatch.setattr(runner, "_loop", no_work)
    with pytest.raises(ProbeError, match="unknown hook 'blocks.9.nothing'.*blocks.0.mlp.hook_post") as exc:
        analyses.compute(SHIPPED / "modadd-p53", ["param_norm", "rqi"], hook="blocks.9.nothing", force=True)
    assert exc.value.param == "hook"


def test_yaml_is_read_in_one_place():
    """Every YAML document probe reads goes through the bounded loader (configs, specs, import maps)."""
    import re

    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"yaml\.(safe_load|load|full_load|unsafe_load)\w*\(|\b(C?Safe|Full|Unsafe)?Loader\b")
    offenders = [f"{path.relative_to(root)}:{i}" for folder in ("probe", "train", "analyses")
                 for path in sorted((root / folder).rglob("*.py")) if path.name != "yamlfile.py"
                 for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, f"YAML read outside probe.yamlfile.load_yaml: {offenders}"


def test_dry_run_refuses_what_training_would(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["train", "--preset", "liu-toy-add", "--set", "task=group", "--set", "p=null", "--dry-run"]
    assert "group table '../../etc/passwd' not found" in _err(capsys, base + ["--set", "group=../../etc/passwd"])
    assert "n_train must be in 1..36, got 45" in _err(capsys, base + ["--set", "group=S3"])
    assert main(base + ["--set", "group=S3", "--set", "n_train=30"]) == 0
    assert "group: S3" in capsys.readouterr().out
