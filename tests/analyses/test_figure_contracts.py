"""Contract battery over every registered figure (docs/design.md, "Registries"): run figures
(``probe.analyses.figures.FIGURES``) on each shipped run and, for overlay figures, on both at once;
sweep figures (``probe.analyses.sweeps.SWEEP_FIGURES``) on a small sweep trained here. The registries
are read when the tests are collected, so a newly registered figure is tested with no edit.

Through ``probe plot``, each figure writes a non-empty file with exit code 0, or refuses in one line
with exit code 2 and writes nothing; each draws on at least one of the shipped runs (sweep figures:
on the sweep).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from probe.analyses.figures import FIGURES
from probe.analyses.sweeps import SWEEP_FIGURES
from probe.cli import main

DATA = Path(__file__).resolve().parents[2] / "data" / "runs"
RUNS = ("toy-add", "modadd-p53")
#: figures whose file must have another format than .png
SUFFIX = {"animation": ".gif"}
#: what a figure that shows metrics is asked to show (cheap, and defined for every run)
METRIC_ARGS = ["--metric", "param_norm"]
#: a sweep with a training-size axis and a second swept key, so both sweep figures apply
SWEEP = """
preset: liu-toy-add
set: {steps: 40, n_train: null, model.decoder: [16, 16], checkpoint.schedule: every, checkpoint.every: 10,
      checkpoint.metrics_every: 5}
grid:
  train_fraction: [0.5, 0.9]
  lr: [1.0e-3, 1.0e-2]
"""
SWEEP_ARGS = ["--x", "train_fraction", "--y", "lr"]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("shipped")
    for name in RUNS:
        shutil.copytree(DATA / name, base / name, ignore=shutil.ignore_patterns("analysis"))
    return {name: base / name for name in RUNS}


def _plot(capsys: pytest.CaptureFixture[str], targets: list[Path], figure: str, out: Path,
          extra: list[str]) -> tuple[int, str]:
    code = main(["plot", *map(str, targets), "--figure", figure, "--out", str(out), *extra, "--no-progress"])
    err = capsys.readouterr().err
    if code == 0:
        assert out.is_file() and out.stat().st_size > 1000, f"{figure} reported success but wrote no figure"
    else:
        assert code == 2, err
        errors = [line for line in err.splitlines() if line.startswith("probe: error: ")]
        assert len(errors) == 1 and "Traceback" not in err, err
        assert not out.exists(), f"{figure} refused but left {out}"
    return code, err


_drawn: dict[str, list[str]] = {}


@pytest.mark.parametrize("target", [*RUNS, "both"])
@pytest.mark.parametrize("figure", FIGURES.names())
def test_figure_draws_or_refuses_in_one_line(shipped, figure, target, tmp_path, capsys):
    targets = list(shipped.values()) if target == "both" else [shipped[target]]
    out = tmp_path / f"{figure}{SUFFIX.get(figure, '.png')}"
    code, err = _plot(capsys, targets, figure, out, METRIC_ARGS)
    if target == "both" and FIGURES.get(figure).overlay:
        assert code == 0, f"overlay figure {figure} refused two runs: {err}"
    if code == 0:
        _drawn.setdefault(figure, []).append(target)


@pytest.mark.parametrize("figure", FIGURES.names())
def test_every_figure_draws_a_shipped_run(shipped, figure, tmp_path, capsys):
    """A figure that refuses both shipped runs is never exercised."""
    for target in RUNS:
        if target in _drawn.get(figure, []):
            return
        out = tmp_path / f"{target}{SUFFIX.get(figure, '.png')}"
        if _plot(capsys, [shipped[target]], figure, out, METRIC_ARGS)[0] == 0:
            return
    pytest.fail(f"figure {figure} draws neither shipped run")


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 x 2 sweep of tiny toy runs, trained in this process (the sweep's worker function, no executor)."""
    from probe.train import sweep as sw

    root = tmp_path_factory.mktemp("sweep") / "s"
    root, points = sw.prepare(sw.parse_spec(SWEEP), root)
    for point in points:
        assert sw.run_point(root, point.name) == "done"
    return root


@pytest.mark.parametrize("figure", SWEEP_FIGURES.names())
def test_sweep_figure_draws_on_a_sweep(sweep_dir, figure, tmp_path, capsys):
    out = tmp_path / f"{figure}.png"
    code, err = _plot(capsys, [sweep_dir], figure, out, SWEEP_ARGS)
    assert code == 0, err


@pytest.mark.parametrize("figure", SWEEP_FIGURES.names())
def test_sweep_figure_on_a_run_refuses_in_one_line(shipped, figure, tmp_path, capsys):
    code, err = _plot(capsys, [shipped["toy-add"]], figure, tmp_path / f"{figure}.png", SWEEP_ARGS)
    assert code == 2 and "needs a sweep directory" in err
