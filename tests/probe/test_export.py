"""``probe export-checkpoints``: a run's checkpoints in others' layouts (safetensors files, TransformerLens'
grokking demo), read back by plain torch and safetensors, and imported again bit for bit with the
same analysis results at every step."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import probe
from probe import analyses
from probe.cli import main
from probe.train.exporters import export_checkpoints
from probe.train.importers import ImportRequest, import_series

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "runs"
METRICS = ["rqi_circular", "rqi", "fourier_norms", "key_freqs", "fourier_gini"]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A copy of the shipped modular-addition run (its analysis cache left behind)."""
    base = tmp_path_factory.mktemp("shipped")
    for name in ("modadd-p53", "toy-add"):
        shutil.copytree(SHIPPED / name, base / name, ignore=shutil.ignore_patterns("analysis"))
    return base


@pytest.fixture(scope="module")
def reference(shipped):
    with probe.load_run(shipped / "modadd-p53") as run:
        return analyses.compute(run, METRICS, cache=False)


@pytest.mark.parametrize("fmt,name", [("safetensors", "ckpts"), ("tl-demo", "demo.pth")])
def test_export_then_import_is_the_same_run(shipped, reference, tmp_path, capsys, fmt, name):
    src = shipped / "modadd-p53"
    out = tmp_path / name
    assert main(["export-checkpoints", str(src), "--format", fmt, "--out", str(out)]) == 0
    assert f"wrote 46 checkpoints (steps 0..6000) of {src} as {fmt}" in capsys.readouterr().out
    back = tmp_path / "back"
    res = import_series(ImportRequest(source=out, out=back))
    assert res.record["fidelity"]["failed"] == 0 and res.record["fidelity"]["compared"] >= 45
    assert res.record["training_settings"] == "recorded"
    with probe.load_run(src) as a, probe.load_run(back) as b:
        assert list(a.steps) == list(b.steps)
        assert a.config == b.config and a.task.spec == b.task.spec
        assert np.array_equal(a.split.train, b.split.train) and np.array_equal(a.split.val, b.split.val)
        for n in a.tensor_names:
            x, y = a.series(n), b.series(n)
            assert x.dtype == y.dtype and np.array_equal(x, y), n  # bit for bit
        df = analyses.compute(b, METRICS, cache=False)
    pd.testing.assert_frame_equal(df, reference)


def test_safetensors_files_read_with_plain_safetensors(shipped, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    res = export_checkpoints(shipped / "modadd-p53", "safetensors", tmp_path / "st", steps="0,3000,last")
    assert res.steps == [0, 3000, 6000]
    files = sorted((tmp_path / "st").glob("step_*.safetensors"))
    assert [f.name for f in files] == ["step_00000000.safetensors", "step_00003000.safetensors",
                                       "step_00006000.safetensors"]
    with probe.load_run(shipped / "modadd-p53") as run:
        sd = load_file(str(files[1]))
        assert set(sd) == set(run.parameters)
        assert torch.equal(sd["embed.W_E"], run.params(3000)["embed.W_E"])
    with safe_open(str(files[2]), framework="pt") as f:
        assert f.metadata() == {"format": "probe", "step": "6000"}


def test_the_demo_file_loads_with_weights_only_and_holds_the_demo_keys(shipped, tmp_path):
    export_checkpoints(shipped / "modadd-p53", "tl-demo", tmp_path / "d.pth", steps="1000:6000")
    data = torch.load(tmp_path / "d.pth", weights_only=True)
    assert {"model", "config", "checkpoints", "checkpoint_epochs", "train_losses", "test_losses", "train_indices",
            "test_indices"} <= set(data)
    cfg = data["config"]
    assert cfg == {"n_layers": 1, "d_model": 64, "d_head": 16, "n_heads": 4, "d_mlp": 256, "d_vocab": 54,
                   "d_vocab_out": 53, "n_ctx": 3, "act_fn": "relu", "normalization_type": None,
                   "attention_dir": "causal", "positional_embedding_type": "standard"}
    with probe.load_run(shipped / "modadd-p53") as run:
        steps = [int(s) for s in run.steps if 1000 <= s <= 6000]
        assert data["checkpoint_epochs"] == [s - 1 for s in steps]
        sd = data["checkpoints"][-1]
        assert sd["blocks.0.attn.mask"].dtype == torch.bool and sd["blocks.0.attn.mask"].shape == (3, 3)
        assert torch.equal(sd["blocks.0.attn.W_Q"], run.params(6000)["blocks.0.attn.W_Q"])
        assert len(data["train_losses"]) == len(data["test_losses"]) == 6000
        m = run.metrics.set_index("step")
        assert data["test_losses"][2999] == pytest.approx(m.loc[3000, "val_loss"])
        pairs = run.task.inputs[run.split.train]
        assert torch.equal(data["train_indices"], torch.from_numpy(pairs[:, 0] * 53 + pairs[:, 1]))


def test_exports_refuse_what_the_layout_cannot_hold(shipped, tmp_path, capsys):
    def err(argv):
        code = main([str(a) for a in argv])
        e = capsys.readouterr().err
        assert code == 2 and e.count("\n") == 1, e
        return e

    assert "model is toy" in err(["export-checkpoints", shipped / "toy-add", "--format", "tl-demo", "--out",
                                  tmp_path / "t.pth"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert "already exists" in err(["export-checkpoints", shipped / "modadd-p53", "--format", "safetensors",
                                    "--out", tmp_path / "full"])
    assert "step 7 is not a checkpoint" in err(["export-checkpoints", shipped / "modadd-p53", "--format",
                                                "safetensors", "--out", tmp_path / "s", "--steps", "7"])
    assert "does not exist" in err(["export-checkpoints", shipped / "modadd-p53", "--format", "safetensors",
                                    "--out", tmp_path / "no" / "where"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


def test_the_toy_model_round_trips_through_safetensors(shipped, tmp_path):
    """A model with fixed buffers (the toy model's regression targets) keeps them."""
    export_checkpoints(shipped / "toy-add", "safetensors", tmp_path / "st")
    assert (tmp_path / "st" / "static.safetensors").is_file()
    import_series(ImportRequest(source=tmp_path / "st", out=tmp_path / "back"))
    with probe.load_run(shipped / "toy-add") as a, probe.load_run(tmp_path / "back") as b:
        assert np.array_equal(a.static()["targets"], b.static()["targets"])
        for n in a.tensor_names:
            assert np.array_equal(a.series(n), b.series(n)), n
        x = analyses.compute(a, ["rqi", "acc_hat"], cache=False)
        y = analyses.compute(b, ["rqi", "acc_hat"], cache=False)
    pd.testing.assert_frame_equal(x, y)
