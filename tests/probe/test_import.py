"""``probe import``: checkpoint series written by other code become ordinary probe runs.

Every fixture is written here with plain torch, safetensors and numpy in the layouts others use:
TransformerLens' grokking demo (one ``.pth`` whose ``config`` is an object of a class that no longer
exists), a training loop's per-step state dicts (``.pt``, ``.safetensors``, ``.npz``; renamed and
transposed layouts through a map), and a Hugging Face Trainer's ``checkpoint-N/`` folders. Their
weights and recorded losses come from tiny probe runs, so the fidelity check has the truth to
compare with. Bad input is one line, exit code 2, nothing written; nothing is unpickled beyond
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import probe
from probe.cli import main
from probe.errors import ProbeError
from probe.train.config import load_config
from probe.train.importers import ImportRequest, import_series
from probe.train.loop import train

ROOT = Path(__file__).resolve().parents[2]
TINY = {"p": "11", "steps": "20", "model.d_model": "16", "model.n_heads": "2", "model.d_mlp": "32",
        "checkpoint.every": "5", "checkpoint.metrics_every": "1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs the fixtures are written from: Nanda's transformer (with and without biases, as
    TransformerLens' demo and Nanda et al.'s original code keep them) and Kitouni's MLP."""
    base = tmp_path_factory.mktemp("runs")
    cfgs = {
        "tf": load_config("nanda-modadd", overrides=TINY),
        "nobias": load_config("nanda-modadd", overrides={**TINY, "model.attn_bias": "false",
                                                          "model.head_bias": "false"}),
        "mlp": load_config("kitouni-mlp", overrides={"p": "11", "steps": "20", "model.d_embed": "8",
                                                     "model.hidden": "16", "checkpoint.schedule": "every",
                                                     "checkpoint.every": "5", "checkpoint.metrics_every": "1"}),
    }
    for name, cfg in cfgs.items():
        train(cfg, base / name, progress=False)
    return {name: base / name for name in cfgs}


def _err(capsys, argv: list) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _losses(run) -> tuple[dict[int, float], dict[int, float]]:
    m = run.metrics
    steps = m["step"].to_numpy().astype(int)
    return dict(zip(steps, m["train_loss"])), dict(zip(steps, m["val_loss"]))


def _grid(run, which: str) -> np.ndarray:
    pairs = run.task.inputs[getattr(run.split, which)]
    return pairs[:, 0] * run.task.n_symbols + pairs[:, 1]


def _tl_state(run, step: int) -> dict[str, torch.Tensor]:
    """A checkpoint as TransformerLens' HookedTransformer names it, buffers included."""
    sd = {k: v.clone() for k, v in run.params(step).items()}
    n_ctx = run.config.model.n_ctx
    for layer in range(run.config.model.n_layers):
        sd[f"blocks.{layer}.attn.mask"] = torch.tril(torch.ones(n_ctx, n_ctx)).bool()
        sd[f"blocks.{layer}.attn.IGNORE"] = torch.tensor(-torch.inf)
    return sd


def _with_module(module: str, cls_name: str):
    """A class registered under ``module`` for pickling, and a function that removes it again (so the
    file names a class from a module that does not exist when it is read)."""
    cls = type(cls_name, (), {"__module__": module})
    added = []
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    saved = getattr(sys.modules[module], cls_name, None)
    setattr(sys.modules[module], cls_name, cls)

    def remove() -> None:
        if saved is None:
            delattr(sys.modules[module], cls_name)
        else:
            setattr(sys.modules[module], cls_name, saved)
        for name in added:
            sys.modules.pop(name, None)

    return cls, remove


def write_demo(run_dir: Path, path: Path, module: str = "transformer_lens.HookedTransformerConfig",
               cls_name: str = "HookedTransformerConfig", extra: dict | None = None) -> Path:
    """TransformerLens' grokking demo's file, from a probe run: the demo checkpoints after epoch e's
    update (probe step e + 1) and records train_losses[e] before it and test_losses[e] after it."""
    with probe.load_run(run_dir) as run:
        steps = [int(s) for s in run.steps if s > 0]
        last = steps[-1]
        tr, va = _losses(run)
        cls, remove = _with_module(module, cls_name)
        cfg = cls()
        m = run.config.model
        cfg.__dict__.update(n_layers=m.n_layers, d_model=m.d_model, d_head=m.head_dim, n_heads=m.n_heads,
                            d_mlp=m.d_mlp, d_vocab=run.task.n_symbols + 1, d_vocab_out=run.task.n_classes, n_ctx=3,
                            act_fn="relu", normalization_type=None, init_weights=True, seed=999,
                            device=torch.device("cpu"), dtype=torch.float32, attention_dir="causal",
                            positional_embedding_type="standard")
        data = {"model": _tl_state(run, last), "config": cfg,
                "checkpoints": [_tl_state(run, s) for s in steps], "checkpoint_epochs": [s - 1 for s in steps],
                "train_losses": [tr[e] for e in range(last)], "test_losses": [va[e + 1] for e in range(last)],
                "train_indices": torch.from_numpy(_grid(run, "train")),
                "test_indices": torch.from_numpy(_grid(run, "val")), **(extra or {})}
        try:
            torch.save(data, path)
        finally:
            remove()
    return path


def _same_tensors(a_dir: Path, b_dir: Path, skip_first: int = 0) -> None:
    with probe.load_run(a_dir) as a, probe.load_run(b_dir) as b:
        assert list(a.steps[skip_first:]) == list(b.steps)
        for name in a.tensor_names:
            assert np.array_equal(a.series(name)[skip_first:], b.series(name)), name


# --------------------------------------------------------------------------------------------------
# TransformerLens' demo
# --------------------------------------------------------------------------------------------------
def test_a_demo_file_whose_config_class_is_gone_imports(runs, tmp_path, capsys):
    import importlib.util

    assert importlib.util.find_spec("transformer_lens.HookedTransformerConfig") is None  # gone in TL 4
    src = write_demo(runs["tf"], tmp_path / "grokking_demo.pth")
    out = tmp_path / "imported"
    assert main(["import", str(src), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "imported 4 checkpoints (steps 5..20)" in text and "tl-demo" in text
    assert "4 checkpoints compared" in text, text
    _same_tensors(runs["tf"], out, skip_first=1)  # the demo keeps no step 0
    with probe.load_run(out) as run, probe.load_run(runs["tf"]) as orig:
        assert run.config.model == orig.config.model and run.task.spec == orig.task.spec
        assert np.array_equal(run.split.train, orig.split.train) and np.array_equal(run.split.val, orig.split.val)
        rec = run.imported_from
        assert rec["kind"] == "tl-demo" and rec["task_from"].startswith("the demo's task")
        assert rec["files"] == [{"path": src.name, "sha256": hashlib.sha256(src.read_bytes()).hexdigest()}]
        assert rec["fidelity"]["compared"] == 4 and rec["fidelity"]["failed"] == 0
        assert rec["mapping"]["name"].startswith("by name")
        # probe's own metric rows at the checkpoints equal the losses the demo recorded
        m = run.metrics.set_index("step")
        tr, va = _losses(orig)
        for s in (5, 10, 15):
            assert m.loc[s, "train_loss"] == pytest.approx(tr[s], rel=1e-6)
            assert m.loc[s, "val_loss"] == pytest.approx(va[s], rel=1e-6)
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "imported:" in info and "tl-demo from" in info and "sha256" in info and "agree with the source" in info
    assert "optimizer:   not recorded by the source" in info


def test_a_config_class_from_a_module_that_never_existed_reads_as_fields(runs, tmp_path):
    src = write_demo(runs["tf"], tmp_path / "demo.pth", module="grokking_lab_2023.configs", cls_name="RunConfig")
    res = import_series(ImportRequest(source=src, out=tmp_path / "run"))
    assert res.steps == [5, 10, 15, 20] and res.record["model_from"] == "the TransformerLens config in the file"


def test_a_wrong_task_or_split_fails_the_fidelity_check(runs, tmp_path, capsys):
    src = write_demo(runs["tf"], tmp_path / "demo.pth")
    err = _err(capsys, ["import", src, "--out", tmp_path / "a", "--task", "sub"])
    assert "fidelity check failed at step 5" in err and "training loss" in err and "probe computes" in err
    assert not (tmp_path / "a").exists()
    with probe.load_run(runs["tf"]) as run:
        wrong = np.setdiff1d(np.arange(run.task.n_samples), run.split.train)[: len(run.split.train)]
        pairs = run.task.inputs[wrong]
    idx = tmp_path / "train.txt"
    idx.write_text("\n".join(f"{a},{b}" for a, b in pairs))
    err = _err(capsys, ["import", src, "--out", tmp_path / "b", "--train-indices", idx])
    assert "fidelity check failed at step" in err and "records training loss" in err, err
    assert not (tmp_path / "b").exists()
    # --force imports and says so
    assert main(["import", str(src), "--out", str(tmp_path / "c"), "--task", "sub", "--force", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "warning: fidelity check failed at" in captured.err and "of 4 checkpoints (first at step 5" in captured.err
    with probe.load_run(tmp_path / "c") as run:
        assert run.imported_from["fidelity"]["forced"] and run.imported_from["fidelity"]["failed"] >= 1
        assert run.task.name == "sub"


def test_a_pickle_that_would_run_a_command_is_refused_and_runs_nothing(runs, tmp_path, capsys):
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    src = write_demo(runs["tf"], tmp_path / "evil.pth", extra={"config": Payload()})
    err = _err(capsys, ["import", src, "--out", tmp_path / "out"])
    assert "is refused" in err and "system" in err and "nothing in the file was run" in err
    assert not marker.exists() and not (tmp_path / "out").exists()
    # the same payload in a directory of state dicts, and an object array in an .npz
    d = tmp_path / "dir"
    d.mkdir()
    torch.save({"model": {"w": torch.zeros(2)}, "extra": Payload()}, d / "step_1.pt")
    assert "is refused" in _err(capsys, ["import", d, "--out", tmp_path / "out2", "--task", "add"])
    d2 = tmp_path / "npz"
    d2.mkdir()
    np.savez(d2 / "step_1.npz", w=np.array([Payload()], dtype=object))
    assert "is refused" in _err(capsys, ["import", d2, "--out", tmp_path / "out3", "--task", "add"])
    assert not marker.exists()
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def test_nothing_is_loaded_with_weights_only_false(runs, tmp_path, monkeypatch):
    calls = []
    real = torch.load

    def guarded(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        assert kwargs.get("weights_only") is True, kwargs
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", guarded)
    src = write_demo(runs["tf"], tmp_path / "demo.pth")
    import_series(ImportRequest(source=src, out=tmp_path / "a"))
    d = _state_dict_dir(runs["tf"], tmp_path / "sd", ".pt")
    import_series(ImportRequest(source=d, out=tmp_path / "b", task="add"))
    assert calls and all(c is True for c in calls)
    text = (ROOT / "train" / "importers.py").read_text()
    assert "weights_only=False" not in text and "allow_pickle=True" not in text and "pickle.load(" not in text


# --------------------------------------------------------------------------------------------------
# per-step state dicts and maps
# --------------------------------------------------------------------------------------------------
def _state_dict_dir(run_dir: Path, d: Path, suffix: str, name: str = "step_{}") -> Path:
    from safetensors.torch import save_file

    d.mkdir()
    with probe.load_run(run_dir) as run:
        for s in run.steps:
            sd = _tl_state(run, int(s)) if run.config.model.kind == "transformer" else run.params(int(s))
            path = d / (name.format(int(s)) + suffix)
            if suffix == ".safetensors":
                save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
            elif suffix == ".npz":
                np.savez(path, **{k: v.numpy() for k, v in sd.items()})
            else:
                torch.save(sd, path)
    return d


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".npz"])
def test_a_directory_of_state_dicts_imports(runs, tmp_path, suffix, capsys):
    d = _state_dict_dir(runs["tf"], tmp_path / "ckpts", suffix, name="model_{}")
    out = tmp_path / "run"
    assert main(["import", str(d), "--out", str(out), "--task", "add", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "state-dicts" in captured.out and "p=11 read off the unembedding" in captured.err
    assert "relu assumed" in captured.err and "nothing to compare" in captured.out
    _same_tensors(runs["tf"], out)
    with probe.load_run(out) as run, probe.load_run(runs["tf"]) as orig:
        assert run.config.model == orig.config.model
        assert len(run.imported_from["files"]) == len(orig.steps)


def test_a_step_pattern_reads_steps_from_other_names(runs, tmp_path, capsys):
    d = _state_dict_dir(runs["tf"], tmp_path / "ckpts", ".pt", name="run3-seed7-it{}")
    res = import_series(ImportRequest(source=d, out=tmp_path / "a", task="add", step_pattern=r"it(\d+)"))
    assert res.steps == [0, 5, 10, 15, 20]
    err = _err(capsys, ["import", d, "--out", tmp_path / "b", "--task", "add", "--step-pattern", r"epoch_(\d+)"])
    assert "--step-pattern" in err and "matches none of the 5 checkpoint files" in err
    assert not (tmp_path / "b").exists()


def _nanda_original_layout(run_dir: Path, d: Path) -> Path:
    """Nanda et al.'s original code's names and orientations (W_E [d_model, d_vocab], W_Q [heads, d_head,
    d_model], W_O [d_model, heads * d_head], W_in [d_mlp, d_model], W_out [d_model, d_mlp]), losses of
    the saved weights beside the state dict."""
    d.mkdir()
    with probe.load_run(run_dir) as run:
        tr, va = _losses(run)
        for s in run.steps:
            p = run.params(int(s))
            sd = {"embed.W_E": p["embed.W_E"].T.contiguous(), "pos_embed.W_pos": p["pos_embed.W_pos"],
                  "unembed.W_U": p["unembed.W_U"]}
            a, m = "blocks.0.attn.", "blocks.0.mlp."
            for w in ("W_Q", "W_K", "W_V"):
                sd[f"blocks.0.attn.{w}"] = p[a + w].permute(0, 2, 1).contiguous()
            h, dh, dm = p[a + "W_O"].shape
            sd["blocks.0.attn.W_O"] = p[a + "W_O"].reshape(h * dh, dm).T.contiguous()
            sd["blocks.0.mlp.W_in"] = p[m + "W_in"].T.contiguous()
            sd["blocks.0.mlp.b_in"] = p[m + "b_in"]
            sd["blocks.0.mlp.W_out"] = p[m + "W_out"].T.contiguous()
            sd["blocks.0.mlp.b_out"] = p[m + "b_out"]
            sd["blocks.0.attn.mask"] = torch.tril(torch.ones(3, 3))
            torch.save({"model": sd, "train_loss": torch.tensor(tr[int(s)]), "test_loss": torch.tensor(va[int(s)]),
                        "epoch": int(s)}, d / f"{int(s)}.pth")
    return d


NANDA_MAP = """\
model: {kind: transformer, d_model: 16, n_heads: 2, d_mlp: 32, attn_bias: false, head_bias: false}
tensors:
  embed.W_E: {from: embed.W_E, transpose: true}
  blocks.0.attn.W_Q: {from: blocks.0.attn.W_Q, permute: [0, 2, 1]}
  blocks.0.attn.W_K: {from: blocks.0.attn.W_K, permute: [0, 2, 1]}
  blocks.0.attn.W_V: {from: blocks.0.attn.W_V, permute: [0, 2, 1]}
  blocks.0.attn.W_O: {from: blocks.0.attn.W_O, transpose: true, reshape: [2, 8, 16]}
  blocks.0.mlp.W_in: {from: blocks.0.mlp.W_in, transpose: true}
  blocks.0.mlp.W_out: {from: blocks.0.mlp.W_out, transpose: true}
"""


def test_a_renamed_and_transposed_layout_imports_with_a_map(runs, tmp_path, capsys):
    d = _nanda_original_layout(runs["nobias"], tmp_path / "nanda")
    with probe.load_run(runs["nobias"]) as run:
        idx = tmp_path / "train.npy"
        np.save(idx, _grid(run, "train"))
    # without the map the orientations do not fit: refused naming the tensor and both shapes
    err = _err(capsys, ["import", d, "--out", tmp_path / "a", "--task", "add", "--train-indices", idx])
    assert "--map" in err and "embed.W_E has shape (16, 12)" in err
    mp = tmp_path / "nanda.yaml"
    mp.write_text(NANDA_MAP)
    out = tmp_path / "b"
    assert main(["import", str(d), "--out", str(out), "--task", "add", "--train-indices", str(idx),
                 "--map", str(mp), "--no-progress"]) == 0
    assert "5 checkpoints compared" in capsys.readouterr().out
    _same_tensors(runs["nobias"], out)
    with probe.load_run(out) as run:
        rec = run.imported_from
        assert rec["mapping"]["rules"]["blocks.0.attn.W_O"] == {"from": "blocks.0.attn.W_O", "transpose": True,
                                                               "reshape": [2, 8, 16]}
        assert any(f["path"] == str(mp) for f in rec["files"])


KITOUNI_MAP = """\
model: {kind: mlp, d_embed: 8, hidden: [16]}
tensors:
  embed.W_E: emb.weight
  decoder.0.W: {from: hidden.weight, transpose: true}
  decoder.0.b: hidden.bias
  unembed.W_U: {from: out.weight, transpose: true}
  unembed.b_U: out.bias
"""


def test_a_plain_module_mlp_imports_with_a_map(runs, tmp_path):
    """Kitouni-style nn.Module MLP (nn.Embedding, nn.Linear [out, in]) saved as safetensors."""
    from safetensors.torch import save_file

    d = tmp_path / "mlp"
    d.mkdir()
    with probe.load_run(runs["mlp"]) as run:
        for s in run.steps:
            p = run.params(int(s))
            save_file({"emb.weight": p["embed.W_E"], "hidden.weight": p["decoder.0.W"].T.contiguous(),
                       "hidden.bias": p["decoder.0.b"], "out.weight": p["unembed.W_U"].T.contiguous(),
                       "out.bias": p["unembed.b_U"]}, str(d / f"ckpt_{int(s):05d}.safetensors"))
        np.save(tmp_path / "train.npy", _grid(run, "train"))
    mp = tmp_path / "kitouni.yaml"
    mp.write_text(KITOUNI_MAP)
    res = import_series(ImportRequest(source=d, out=tmp_path / "run", task="add", map=mp,
                                      train_indices=tmp_path / "train.npy"))
    assert res.steps == [0, 5, 10, 15, 20]
    _same_tensors(runs["mlp"], tmp_path / "run")
    with probe.load_run(tmp_path / "run") as a, probe.load_run(runs["mlp"]) as b:
        m, orig = a.metrics.set_index("step"), b.metrics.set_index("step")
        assert np.allclose(m["val_loss"], orig.loc[m.index, "val_loss"], rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# Hugging Face Trainer
# --------------------------------------------------------------------------------------------------
def _hf_dir(run_dir: Path, d: Path) -> Path:
    from safetensors.torch import save_file

    d.mkdir()
    log = []
    with probe.load_run(run_dir) as run:
        tr, va = _losses(run)
        for s in run.steps:
            s = int(s)
            if s == 0:
                continue
            c = d / f"checkpoint-{s}"
            c.mkdir()
            save_file({f"model.{k}": v.contiguous() for k, v in run.params(s).items()}, str(c / "model.safetensors"))
            (c / "config.json").write_text("{}")
            log += [{"loss": tr[s - 1], "learning_rate": 1e-3, "epoch": s / 10, "step": s},
                    {"eval_loss": va[s], "eval_runtime": 0.1, "epoch": s / 10, "step": s}]
            (c / "trainer_state.json").write_text(json.dumps({"global_step": s, "log_history": log}))
        np.save(d.parent / "hf-train.npy", _grid(run, "train"))
    (d / "runs").mkdir()  # TensorBoard logs beside the checkpoints
    return d


def test_a_hugging_face_trainer_directory_imports(runs, tmp_path):
    d = _hf_dir(runs["tf"], tmp_path / "hf")
    mp = tmp_path / "hf.yaml"
    mp.write_text("model: {kind: transformer, d_model: 16, n_heads: 2, d_mlp: 32}\ntensors: {}\n"
                  "ignore: []\n")
    # the names carry the wrapper's prefix: without a map that strips it they fit nothing
    with pytest.raises(ProbeError, match=r"no parameter of the transformer model takes model\."):
        import_series(ImportRequest(source=d, out=tmp_path / "a", task="add", p=11, map=mp))
    assert not (tmp_path / "a").exists()
    with probe.load_run(runs["tf"]) as run:
        names = list(run.parameters)
    mp.write_text("model: {kind: transformer, d_model: 16, n_heads: 2, d_mlp: 32}\ntensors:\n"
                  + "".join(f"  {n}: model.{n}\n" for n in names))
    res = import_series(ImportRequest(source=d, out=tmp_path / "b", task="add", map=mp,
                                      train_indices=tmp_path / "hf-train.npy"))
    assert res.kind == "hf-trainer" and res.steps == [5, 10, 15, 20]
    assert res.record["fidelity"]["compared"] == 4  # eval_loss at each checkpoint
    assert any(f["path"].endswith("trainer_state.json") for f in res.record["files"])
    _same_tensors(runs["tf"], tmp_path / "b", skip_first=1)
    with probe.load_run(tmp_path / "b") as run:
        assert np.allclose(run.metrics["lr"], 1e-3)


# --------------------------------------------------------------------------------------------------
# runs without a split, and every command on an imported run
# --------------------------------------------------------------------------------------------------
def test_without_a_split_metrics_that_need_one_refuse_with_the_reason(runs, tmp_path, capsys):
    from probe import analyses

    d = _state_dict_dir(runs["tf"], tmp_path / "sd", ".safetensors")
    out = tmp_path / "run"
    import_series(ImportRequest(source=d, out=out, task="add"))
    with probe.load_run(out) as run:
        assert run.metrics.empty and run.imported_from["split_from"] == "none"
        df = analyses.compute(run, ["rqi_circular", "fourier_norms"], steps="first,last")
        assert len(df) == 2
        with pytest.raises(ProbeError, match="without a split"):
            analyses.compute(run, "acc_hat", steps="last")
        with pytest.raises(ProbeError, match="--train-indices"):
            run.dataset("train")
    assert main(["info", str(out)]) == 0
    assert "split:       none (imported without a split" in capsys.readouterr().out


@pytest.fixture(scope="module")
def imported_demo(runs, tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    src = write_demo(runs["tf"], base / "demo.pth")
    import_series(ImportRequest(source=src, out=base / "run"))
    return base / "run"


@pytest.mark.parametrize("argv", [
    ["info", "{run}", "--hooks"],
    ["info", "{run}", "--json"],
    ["analyze", "{run}", "--metric", "rqi_circular", "--metric", "fourier_norms", "--no-progress"],
    ["analyze", "{run}", "--metric", "acc_hat", "--metric", "restricted_loss", "--steps", "last", "--no-progress"],
    ["events", "{run}"],
    ["export", "{run}", "--summary", "--format", "markdown", "--no-progress"],
    ["export", "{run}", "--metric", "rqi", "--hook", "logits", "--steps", "last", "--no-progress"],
    ["plot", "{run}", "--figure", "curves", "--out", "{tmp}/curves.png", "--no-progress"],
    ["plot", "{run}", "--figure", "fourier", "--out", "{tmp}/fourier.png", "--no-progress"],
    ["train", "--from", "{run}", "--set", "steps=3", "--out", "{tmp}/child", "--no-progress"],
    ["export-checkpoints", "{run}", "--format", "safetensors", "--out", "{tmp}/again"],
])
def test_every_command_works_on_an_imported_run(imported_demo, tmp_path, capsys, argv):
    args = [a.format(run=imported_demo, tmp=tmp_path) for a in argv]
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err


def test_a_resume_of_an_imported_run_refuses_and_changes_nothing(imported_demo, capsys):
    before = (imported_demo / "run.h5").read_bytes()
    for extra in ([], ["--steps", "40"]):
        err = _err(capsys, ["train", "--resume", imported_demo, *extra])
        assert "was imported" in err and "probe train --from" in err
    assert (imported_demo / "run.h5").read_bytes() == before


def test_identical_checkpoints_at_different_steps_are_reported(runs, tmp_path, capsys):
    d = _state_dict_dir(runs["tf"], tmp_path / "sd", ".safetensors")
    (d / "step_25.safetensors").write_bytes((d / "step_20.safetensors").read_bytes())
    assert main(["import", str(d), "--out", str(tmp_path / "run"), "--task", "add", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "1 checkpoint(s) hold exactly the tensors of an earlier one (step 25 = step 20)" in captured.err
    assert "repeated checkpoints: 1" in captured.out
    with probe.load_run(tmp_path / "run") as run:
        assert run.imported_from["duplicates"] == [[25, 20]]


# --------------------------------------------------------------------------------------------------
# bad input: one line, exit code 2, nothing written
# --------------------------------------------------------------------------------------------------
def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sd = _state_dict_dir(runs["tf"], tmp_path / "sd", ".pt")
    demo = write_demo(runs["tf"], tmp_path / "demo.pth")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("hello")
    ghost = tmp_path / "ghost.yaml"
    ghost.write_text("tensors:\n  embed.W_E: token_embedding.weight\n")
    wide = tmp_path / "wide.yaml"
    wide.write_text("model: {kind: transformer, d_model: 16, n_heads: 2, d_mlp: 64}\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("0\n5\n121\n")
    existing = tmp_path / "existing"
    import_series(ImportRequest(source=demo, out=existing))
    cases = [
        (["import", tmp_path / "nothing", "--out", "o1"], "matches no checkpoint layout probe reads (tried tl-demo"),
        (["import", sd, "--out", "o2", "--task", "add", "--map", ghost],
         "the map names tensors"),
        (["import", sd, "--out", "o3", "--task", "add", "--map", wide], "blocks.0.mlp.W_in has shape (16, 32)"),
        (["import", sd, "--out", "o4", "--task", "add", "--train-indices", outside],
         "train index 121 is outside task add(p=11"),
        (["import", sd, "--out", "o5", "--task", "add", "--step-pattern", r"(\d+)x"], "matches none"),
        (["import", sd, "--out", existing, "--task", "add"], "already holds a run"),
        (["import", sd, "--out", "o6"], "does not record its task: give --task"),
        (["import", sd, "--out", "o7", "--task", "add", "--step-pattern", "step_"], "has no group"),
        (["import", tmp_path / "missing", "--out", "o8"], "does not exist"),
        (["import", sd, "--out", "o9", "--kind", "tl-demo"], "is not a file"),
        (["import", sd, "--out", "o10", "--kind", "zip"], "unknown source kind 'zip'"),
        (["export-checkpoints", existing, "--format", "onnx", "--out", "x"], "unknown export format 'onnx'"),
        (["export-checkpoints", existing, "--format", "tl-demo", "--out", demo], "already exists"),
    ]
    for argv, needle in cases:
        assert needle in _err(capsys, argv), argv
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["demo.pth", "existing", "ghost.yaml", "nothing", "outside.txt", "sd", "wide.yaml"], left


def test_a_failure_while_writing_leaves_nothing(runs, tmp_path):
    d = _state_dict_dir(runs["tf"], tmp_path / "sd", ".safetensors")
    (d / "step_30.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ProbeError, match="step_30.safetensors is not a readable safetensors file"):
        import_series(ImportRequest(source=d, out=tmp_path / "new" / "run", task="add"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sd"]


def test_the_benchmark_runs(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "import_series.py"), "--checkpoints", "40", "80",
                          "--json"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["checkpoints"] for r in rows] == [40, 80] and all(r["checkpoints_per_s"] > 0 for r in rows)
