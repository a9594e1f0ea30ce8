"""probe metrics / analyze / export / plot / theory from the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from probe.cli import main

DATA = Path(__file__).resolve().parents[2] / "data" / "runs"


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name in ("toy-add", "modadd-p53"):
        shutil.copytree(DATA / name, root / name, ignore=shutil.ignore_patterns("analysis"))
        out[name] = root / name
    return out


def test_metrics_lists_every_metric_with_needs_and_tasks(capsys):
    from probe import analyses

    code, out, _ = _run(capsys, "metrics")
    assert code == 0
    for m in analyses.metrics():
        assert m.name in out
    assert "embeddings+split" in out and "abelian operation tables" in out


def test_analyze_table_csv_json_parquet(runs, tmp_path, capsys):
    toy = runs["toy-add"]
    code, out, err = _run(capsys, "analyze", toy, "--metric", "rqi", "--metric", "acc_hat", "--steps", "last",
                          "--no-progress")
    assert code == 0, err
    assert "rqi" in out.splitlines()[0] and "acc_hat" in out.splitlines()[0]
    code, out, _ = _run(capsys, "analyze", toy, "--metric", "rqi", "--format", "csv", "--delta", "0.05")
    df = pd.read_csv(pd.io.common.StringIO(out))
    assert df["rqi"].iloc[-1] == 1.0 and len(df) > 10
    code, out, _ = _run(capsys, "analyze", toy, "--metric", "rqi_bar", "--format", "json", "--steps", "0,6000")
    rows = json.loads(out)
    assert [r["step"] for r in rows] == [0, 6000] and rows[0]["rqi_bar"] == rows[1]["rqi_bar"]
    target = tmp_path / "r.parquet"
    code, _, _ = _run(capsys, "analyze", toy, "--metric", "dof", "--format", "parquet", "--out", target)
    assert code == 0 and pd.read_parquet(target)["dof"].iloc[0] == 2
    import pyarrow.parquet as pq

    assert json.loads(pq.read_schema(target).metadata[b"probe"])["dof"]["scope"] == "split"
    code, _, err = _run(capsys, "analyze", toy, "--metric", "rqi", "--device", "tpu")
    assert code == 2 and "unknown device 'tpu'" in err


def test_analyze_modular_run_notes_degeneracy_and_uses_hooks(runs, capsys):
    mod = runs["modadd-p53"]
    code, out, err = _run(capsys, "analyze", mod, "--metric", "rqi", "--steps", "last", "--no-progress")
    assert code == 0 and "note (rqi): modular task" in err
    code, out, err = _run(capsys, "analyze", mod, "--metric", "rqi_circular", "--steps", "first,last",
                          "--format", "csv", "--no-progress")
    df = pd.read_csv(pd.io.common.StringIO(out))
    assert df["rqi_circular"].iloc[-1] > df["rqi_circular"].iloc[0] + 0.3
    code, out, err = _run(capsys, "analyze", mod, "--metric", "rqi", "--hook", "blocks.0.hook_resid_post",
                          "--steps", "last", "--delta", "0.5", "--format", "csv", "--no-progress")
    assert code == 0, err


@pytest.mark.parametrize("argv,needle", [
    (["--metric", "nope"], "unknown metric 'nope' (valid: acc_bar"),
    (["--metric", "rqi", "--delta", "-0.1"], "--delta: must be a positive number"),
    (["--metric", "rqi", "--delta", "x"], "--delta: 'x' is not a valid float"),
    (["--metric", "rqi", "--steps", "7"], "step 7 is not a checkpoint"),
    (["--metric", "rqi", "--hook", "blocks.9.nothing"], "unknown hook 'blocks.9.nothing' (valid: logits, hook_embed"),
    (["--metric", "rqi", "--out", "/nonexistent/dir/x.csv"], "directory /nonexistent/dir does not exist"),
    (["--metric", "rqi_circular"], "does not apply to task nonmod-add"),
    (["--metric", "rqi", "--freq", "2"], "--freq: does not belong to rqi"),
])
def test_analyze_bad_input_is_one_line_exit_2(runs, capsys, argv, needle):
    code, out, err = _run(capsys, "analyze", runs["toy-add"], "--no-progress", *argv)
    assert code == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_analyze_missing_run_and_corrupt_cache(runs, tmp_path, capsys):
    code, _, err = _run(capsys, "analyze", tmp_path / "nothing", "--metric", "rqi")
    assert code == 2 and "probe: error:" in err
    toy = runs["toy-add"]
    _run(capsys, "analyze", toy, "--metric", "lambda3")
    for f in (toy / "analysis").glob("lambda3-*.parquet"):
        f.write_text("garbage")
    code, out, err = _run(capsys, "analyze", toy, "--metric", "lambda3", "--steps", "all")
    assert code == 0 and "warning" in err and "recomputing" in err and "lambda3" in out


def test_export_tidy_and_summary(runs, tmp_path, capsys):
    toy, mod = runs["toy-add"], runs["modadd-p53"]
    code, out, err = _run(capsys, "export", toy, "--metric", "rqi", "--metric", "acc_hat", "--format", "markdown",
                          "--no-progress")
    assert code == 0, err
    assert out.startswith("| run") and "| toy-add" in out and "train_acc" in out
    tex = tmp_path / "summary.tex"
    code, _, err = _run(capsys, "export", toy, mod, "--summary", "--format", "latex", "--out", tex, "--no-progress")
    assert code == 0, err
    text = tex.read_text()
    assert "\\toprule" in text and "\\midrule" in text and "\\bottomrule" in text
    assert "final\\_rqi" in text and "toy-add" in text and "modadd-p53" in text
    assert text.count("\\\\") == 3  # header + two runs
    import re

    assert text.count("{") == text.count("}") and re.search(r"(?<!\\)[_%#]", text) is None  # escaped
    pq = tmp_path / "s.parquet"
    _run(capsys, "export", toy, mod, "--summary", "--format", "parquet", "--out", pq, "--no-progress")
    s = pd.read_parquet(pq).set_index("run")
    assert s.loc["toy-add", "final_rqi"] == 1.0 and s.loc["toy-add", "rqi_bar"] == 1.0
    assert s.loc["toy-add", "step_val_acc_99"] <= s.loc["toy-add", "step_rqi_95"] + 2000
    assert s.loc["modadd-p53", "step_val_acc_99"] > s.loc["modadd-p53", "step_val_acc_90"] - 1
    assert s.loc["modadd-p53", "phase"] == "grokking" and s.loc["toy-add", "phase"] == "comprehension"
    code, _, err = _run(capsys, "export", toy, "--format", "csv")
    assert code == 2 and "--metric NAME" in err


def test_plot_writes_png_and_pdf(runs, tmp_path, capsys):
    for suffix in ("png", "pdf"):
        out = tmp_path / f"rqi.{suffix}"
        code, _, err = _run(capsys, "plot", runs["toy-add"], "--metric", "rqi", "--out", out, "--no-progress")
        assert code == 0, err
        assert out.stat().st_size > 1000
    code, _, err = _run(capsys, "plot", runs["toy-add"], "--metric", "rqi", "--out", tmp_path / "x.txt")
    assert code == 2 and "figure format" in err


def test_theory_critical_fraction_reproduces_liu_fig4a(capsys):
    code, out, err = _run(capsys, "theory", "critical-fraction", "--task", "nonmod-add", "--p", "10", "--trials", "60",
                          "--no-progress")
    assert code == 0, err
    crit = float(out.strip().splitlines()[-1].split(":")[-1])
    assert 0.33 <= crit <= 0.47  # Liu et al. Fig. 4a: about 0.4
    assert "nonmod-add(p=10" in err


def test_theory_task_names_mean_what_they_mean_everywhere(capsys):
    code, _, err = _run(capsys, "theory", "critical-fraction", "--task", "add", "--p", "7", "--trials", "2",
                        "--no-progress")
    assert code == 0, err
    assert "# task add(p=7, ordered=True): (add) mod p" in err and "modular task" in err
    code, _, err = _run(capsys, "theory", "critical-fraction", "--task", "mod-add", "--p", "7")
    assert code == 2 and err.count("\n") == 1 and "unknown task 'mod-add'" in err and "nonmod-add" in err


def test_theory_effective_dynamics(runs, tmp_path, capsys):
    prefix = tmp_path / "eff"
    code, out, err = _run(capsys, "theory", "effective-dynamics", runs["toy-add"], "--out", prefix)
    assert code == 0, err
    df = pd.read_csv(f"{prefix}.csv")
    first = df[df["step"] == 0]
    assert (first["predicted"] - first["real"]).abs().max() < 1e-9  # same start
    assert Path(f"{prefix}.png").stat().st_size > 1000
    code, _, err = _run(capsys, "theory", "effective-dynamics", runs["toy-add"], "--out", tmp_path / "no" / "x")
    assert code == 2 and "does not exist" in err


def test_non_abelian_run_gets_matrix_rqi_and_clear_errors(tmp_path, capsys):
    out = tmp_path / "s3"
    code, _, err = _run(capsys, "train", "--preset", "liu-toy-s3", "--set", "steps=10", "--set", "model.decoder=8",
                        "--set", "checkpoint.schedule=every", "--set", "checkpoint.every=5", "--out", out,
                        "--no-progress")
    assert code == 0, err
    code, text, err = _run(capsys, "analyze", out, "--metric", "rqi", "--metric", "acc_hat", "--delta", "0.5",
                           "--format", "csv", "--no-progress")
    assert code == 0, err
    df = pd.read_csv(pd.io.common.StringIO(text))
    assert len(df) == 3 and df["rqi"].between(0, 1).all()
    for argv, needle in ((["analyze", out, "--metric", "dof"], "abelian"),
                         (["theory", "effective-dynamics", out, "--out", tmp_path / "e"], "assumes an abelian operation"),
                         (["analyze", out, "--metric", "fourier_gini"], "modular")):
        code, _, err = _run(capsys, *argv)
        assert code == 2 and needle in err, err


@pytest.mark.parametrize("figure,extra", [("pca", ["--axes", "final"]), ("fourier", []),
                                          ("projection", ["--n-components", "1,4,all"])])
def test_plot_figures_of_the_modular_run(runs, tmp_path, capsys, figure, extra):
    out = tmp_path / f"{figure}.png"
    code, _, err = _run(capsys, "plot", runs["modadd-p53"], "--figure", figure, "--out", out, "--no-progress", *extra)
    assert code == 0, err
    assert out.stat().st_size > 5000


def test_plot_animation_gif_and_bad_input(runs, tmp_path, capsys):
    out = tmp_path / "pca.gif"
    code, _, err = _run(capsys, "plot", runs["modadd-p53"], "--figure", "animation", "--steps", "0:400",
                        "--out", out, "--no-progress")
    assert code == 0, err
    assert out.read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    code, _, err = _run(capsys, "plot", runs["modadd-p53"], "--figure", "animation", "--out", tmp_path / "a.avi")
    assert code == 2 and ".gif or .mp4" in err
    from matplotlib import animation

    if not animation.writers.is_available("ffmpeg"):
        code, _, err = _run(capsys, "plot", runs["modadd-p53"], "--figure", "animation", "--out", tmp_path / "a.mp4")
        assert code == 2 and "needs ffmpeg" in err
    code, _, err = _run(capsys, "plot", runs["modadd-p53"], "--figure", "animation", "--steps", "last",
                        "--out", out, "--no-progress")
    assert code == 2 and "at least two checkpoints" in err
    code, _, err = _run(capsys, "plot", runs["toy-add"], "--figure", "fourier", "--out", tmp_path / "f.png")
    assert code == 2 and "does not apply to task nonmod-add" in err and "modular" in err
    code, _, err = _run(capsys, "analyze", runs["modadd-p53"], "--metric", "pca_variance", "--components", "500")
    assert code == 2 and "larger than" in err


def test_phases_follow_liu_table_1():
    from probe.analyses.export import phase

    steps = np.arange(0, 5000, 10)
    up = lambda at: (steps >= at).astype(float)  # noqa: E731
    assert phase(steps, up(100), up(600)) == "comprehension"
    assert phase(steps, up(100), up(3000)) == "grokking"
    assert phase(steps, up(100), up(10**9)) == "memorization"
    assert phase(steps, up(10**9), up(10**9)) == "confusion"
    assert phase(steps, up(100), up(3000), budget=2000) == "memorization"


@pytest.mark.parametrize("argv,needle", [
    (["theory", "critical-fraction", "--p", "1"], "--p: must be >= 2"),
    (["theory", "critical-fraction", "--trials", "0"], "--trials: must be >= 1"),
    (["theory", "critical-fraction", "--task", "sub", "--p", "7"], "assumes an abelian operation"),
    (["theory"], "give a theory command"),
])
def test_theory_bad_input_is_one_line_exit_2(capsys, argv, needle):
    code, _, err = _run(capsys, *argv, *(["--no-progress"] if len(argv) > 1 else []))
    assert code == 2 and needle in err and err.count("\n") == 1


def test_effective_dynamics_bad_time_scale(runs, tmp_path, capsys):
    code, _, err = _run(capsys, "theory", "effective-dynamics", runs["toy-add"], "--out", tmp_path / "e",
                        "--time-scale", "0")
    assert code == 2 and "--time-scale: must be 'fit' or a positive number" in err
