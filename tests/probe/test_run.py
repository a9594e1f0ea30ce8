import json

import h5py
import numpy as np
import pytest
import torch

import probe
from probe.errors import ProbeError
from probe.runfile import RunFile


def test_load_run_api(toy_run, tiny_toy_config):
    run = probe.load_run(toy_run)
    assert run.config == tiny_toy_config
    assert run.task.name == "nonmod-add" and run.split.sizes == (45, 10)
    assert run.steps.tolist() == list(range(0, 61, 5))
    m = run.metrics
    assert list(m.columns) == ["step", "train_loss", "train_acc", "val_loss", "val_acc", "lr"]
    assert m["step"].tolist() == list(range(0, 61, 5))
    params = run.params(10)
    assert params["embed.W_E"].shape == (10, 1)
    assert torch.equal(run.embeddings(10), params["embed.W_E"])
    model = run.model("last")
    x, y = run.dataset("train")
    with torch.no_grad():
        acc = (model.predict(model.answer(x)) == y).double().mean().item()
    assert acc == pytest.approx(m["train_acc"].iloc[-1])
    run.close()


def test_model_reproduces_recorded_metrics(transformer_run):
    with probe.load_run(transformer_run) as run:
        step = int(run.steps[-1])
        model = run.model(step)
        x, y = run.dataset("val")
        with torch.no_grad():
            out = model.answer(x, last_only=False)
            loss = model.loss(out, y).item()
        row = run.metrics.set_index("step").loc[step]
        assert loss == pytest.approx(row["val_loss"], rel=1e-5)
        logits, cache = model.run_with_cache(x[:3])
        assert "blocks.0.mlp.hook_post" in cache


def test_iterating_a_tensor_in_chunks(toy_run):
    with probe.load_run(toy_run) as run:
        full = run.series("embed.W_E")
        chunks = list(run.iter_tensor("embed.W_E", chunk=4))
        assert [len(s) for s, _ in chunks] == [4, 4, 4, 1]
        assert np.array_equal(np.concatenate([v for _, v in chunks]), full)
        assert np.array_equal(np.concatenate([s for s, _ in chunks]), run.steps)


def test_step_not_saved_is_a_clear_error(toy_run):
    with probe.load_run(toy_run) as run:
        with pytest.raises(ProbeError, match="step 7 is not a checkpoint.*nearest: 5, 10"):
            run.params(7)
        with pytest.raises(ProbeError, match="not saved"):
            run.series("nope")


def test_plain_h5py_can_read_the_run(toy_run):
    with h5py.File(toy_run / "run.h5", "r") as f:
        cfg = json.loads(f.attrs["config"])
        assert cfg["task"] == "nonmod-add" and f.attrs["schema_version"] == 2
        steps = f["checkpoints/steps"][:]
        emb = f["checkpoints/params/embed.W_E"][:]
        assert emb.shape == (len(steps), 10, 1)
        assert f["metrics/val_acc"].shape == f["metrics/step"].shape
        # one checkpoint per chunk: appending never rewrites a chunk holding committed checkpoints
        assert f["checkpoints/params/decoder.0.W"].chunks == (1, *f["checkpoints/params/decoder.0.W"].shape[1:])


def test_no_pickle_anywhere_in_the_file(toy_run):
    with h5py.File(toy_run / "run.h5", "r") as f:
        kinds = set()
        f.visititems(lambda name, obj: kinds.add(obj.dtype.kind) if isinstance(obj, h5py.Dataset) else None)
    assert kinds <= {"f", "i", "u"}  # numbers only: no opaque, object or string blobs


def test_bad_run_inputs(tmp_path, toy_run):
    with pytest.raises(ProbeError, match="does not exist"):
        probe.load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProbeError, match="not a probe run"):
        probe.load_run(tmp_path / "empty")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    data = (toy_run / "run.h5").read_bytes()
    (corrupt / "run.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(ProbeError, match="corrupt or truncated"):
        probe.load_run(corrupt)
    other = tmp_path / "other"
    other.mkdir()
    with h5py.File(other / "run.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ProbeError, match="not a probe run"):
        probe.load_run(other)


def test_newer_schema_is_refused(tmp_path, toy_run):
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "run.h5").write_bytes((toy_run / "run.h5").read_bytes())
    with h5py.File(newer / "run.h5", "r+") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(ProbeError, match="schema version 99"):
        RunFile(newer / "run.h5")
