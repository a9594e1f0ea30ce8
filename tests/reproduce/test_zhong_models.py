"""probe reproduce zhong-models (docs/design.md, "Reproductions"): probe's metrics on the authors' released
Model A and Model B give their notebook's numbers; the released bins recomputed from their tables; the
quick scale end to end (golden); rows recomputed from the runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from probe.models import build_model
from probe.reproduce import zhong as z
from probe.reproduce import zhong_models as m
from probe.reproduce.registry import get_reproduction
from probe.reproduce.runner import COLUMNS, RECORD
from probe.tasks import make_task
from probe.train.config import load_config

DATA = Path(__file__).resolve().parents[2] / "data" / "zhong"
MIRROR = Path("/work/.mirror/fjzzq2002+pizza/repo")


@pytest.fixture(scope="module")
def quick(quick_reproduction):
    return quick_reproduction("zhong-models")


def _their_model(run_id: str):
    cfg = load_config("zhong-pizza", overrides={"model.attention_rate": str(z.MODEL_RATES[run_id])})
    model = build_model(cfg.model, make_task("add", p=z.P, ordered=True))
    with np.load(DATA / f"model_{run_id}.npz") as arrays:
        model.load_state_dict(z.their_params(dict(arrays)), strict=True)
    return model.eval()


@pytest.mark.parametrize("run_id", [z.MODEL_A, z.MODEL_B])
def test_probes_metrics_on_their_released_models_give_their_numbers(run_id):
    """Model A: the notebook's printed outputs; Model B: the notebook's code run on the saved model. The
    forward pass is float32 on both sides, so agreement is to about 1e-7."""
    got = z.their_metrics(_their_model(run_id), z.MODEL_RATES[run_id])
    for key, value in z.AUTHORS_MODELS[run_id].items():
        assert got[key] == pytest.approx(value, abs=2e-7), key
    assert got["accuracy"] == 1.0


def test_their_layout_maps_onto_probes_names_and_shapes():
    with np.load(DATA / f"model_{z.MODEL_A}.npz") as arrays:
        params = z.their_params(dict(arrays))
    model = _their_model(z.MODEL_A)
    assert {n: tuple(p.shape) for n, p in model.named_parameters()} == {n: tuple(t.shape) for n, t in params.items()}
    # attention rate 0: W_Q and W_K get no gradient and weight decay erased them
    assert float(params["blocks.0.attn.W_Q"].norm()) < 1e-12
    torch.testing.assert_close(model.embed.W_E.detach(), params["embed.W_E"])


@pytest.mark.skipif(not MIRROR.is_dir(), reason="the authors' repository is not mirrored on this machine")
def test_the_bins_are_recomputed_from_their_released_tables(tmp_path):
    import subprocess

    for path, kind, expected in ((z.FIXED_CSV, "fixed", z.FIXED_BINS), (z.VARY_CSV, "vary", z.VARY_BINS)):
        out = tmp_path / Path(path).name
        out.write_bytes(subprocess.run(["git", "-C", str(MIRROR), "show", f"{z.COMMIT}:{path}"], check=True,
                                       capture_output=True).stdout)
        assert z.released_bins(out, kind) == expected
        if kind == "fixed":
            assert z.released_all(out) == z.FIXED_ALL
    assert sum(v[0] for v in z.FIXED_BINS.values()) == 817 and sum(v[0] for v in z.VARY_BINS.values()) == 466


def test_binomial_consistency():
    assert z.binomial_consistent(1, 3, 0.38) and z.binomial_consistent(0, 3, 0.34)
    assert not z.binomial_consistent(3, 3, 0.1) and not z.binomial_consistent(0, 20, 0.5)
    assert z.binomial_consistent(10, 20, 0.5)


def test_registered_with_a_setting_table_naming_the_authors_files():
    rec = get_reproduction("zhong-models")
    assert {s.authors_file for s in rec.setting} == {z.TRAIN, z.NOTEBOOK, z.FIXED_CSV}
    assert "steps: 20000" in rec.scales["paper"].spec and "  seed: [0, 1, 2, 0, 1, 2]" in rec.scales["paper"].spec
    assert z.fixed_bin(0.0) == 0 and z.fixed_bin(1.0) == 9 and z.fixed_bin(0.95) == 9
    assert z.vary_cell(32, 0.1) == (32, 0) and z.vary_cell(511, 1.0) == (256, 4) and z.vary_cell(16, 0.5) is None


def test_quick_scale_golden(quick):
    out, res = quick
    for name in ("comparison.csv", "comparison.md", "runs.csv", "figure.png", "figure.pdf", RECORD):
        assert (out / name).is_file(), name
    assert json.loads((out / RECORD).read_text()) == {"reproduction": "zhong-models", "scale": "quick"}
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == 15  # 7 per model and the order of the two
    runs = pd.read_csv(out / "runs.csv").set_index("attention_rate")
    assert list(runs.index) == [0.0, 1.0]
    # the claim at any scale: constant attention (rate 0) makes a pizza, ordinary attention a clock
    assert runs.loc[0.0, "gradient_symmetricity"] > 0.95 > runs.loc[1.0, "gradient_symmetricity"]
    assert runs.loc[1.0, "di_top_incorrect"] > runs.loc[0.0, "di_top_incorrect"]
    assert table.iloc[-1]["verdict"] == "agrees"


def test_rows_are_recomputed_from_the_runs(quick, tmp_path):
    """A sweep holding one short rate-0 run: the Model A rows show that run, Model B's are gone."""
    from probe.train.sweep import ExecutorOptions, parse_spec, run_sweep

    _, res = quick
    run_sweep(parse_spec(z.spec([0.0], [16], 30, [3])), tmp_path / "sweep", ExecutorOptions(kind="inline"), progress=False)
    changed = m.analyse(str(tmp_path / "sweep"), "quick")
    before = {r.quantity: r for r in res.analysis.rows}
    assert len(changed.rows) == 7 and all("Model A" in r.quantity for r in changed.rows)
    for row in changed.rows:
        assert row.paper == before[row.quantity].paper
        if not row.quantity.startswith("runs with circularity"):  # (a count of 0 or 1 may repeat)
            assert row.probe != before[row.quantity].probe
    assert list(changed.runs["seed"]) == [3]
