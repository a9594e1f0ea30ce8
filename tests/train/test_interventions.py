"""Grokfast filters, ⊥Grad, the norm constraint, StableMax and fine-tuning from a checkpoint."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import probe
from probe.config import ConstraintConfig, GrokfastConfig
from probe.errors import ProbeError
from probe.models.base import cross_entropy, stablemax_log_probs
from probe.runfile import run_file_path
from probe.train.config import load_config
from probe.train.interventions import GradFilter, NormConstraint, orthogonalise, total_norm
from probe.train.loop import parent_checkpoint, resume, train

MLP = {"p": "11", "steps": "80", "model.d_embed": "16", "model.hidden": "16", "checkpoint.schedule": "every",
       "checkpoint.every": "10", "checkpoint.metrics_every": "5"}


def _grads(seed, n, shape=(3, 4)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(n)]


def _run_filter(cfg, grads):
    p = torch.nn.Parameter(torch.zeros(grads[0].shape))
    f = GradFilter(cfg, {"w": tuple(p.shape)})
    out = []
    for g in grads:
        p.grad = g.clone()
        f.apply([("w", p)])
        out.append(p.grad.clone())
    return out


def test_ema_filter_matches_the_recursion():
    grads = _grads(0, 12)
    got = _run_filter(GrokfastConfig(filter="ema", alpha=0.9, lamb=3.0), grads)
    mu = None
    for g, h in zip(grads, got):
        mu = g.clone() if mu is None else 0.9 * mu + 0.1 * g
        assert torch.allclose(h, g + 3.0 * mu, atol=1e-6)


@pytest.mark.parametrize("warmup", [True, False])
def test_ma_filter_is_the_windowed_mean(warmup):
    grads = _grads(1, 23)
    got = _run_filter(GrokfastConfig(filter="ma", window=4, lamb=5.0, warmup=warmup), grads)
    for t, (g, h) in enumerate(zip(grads, got)):
        window = grads[max(0, t - 3): t + 1]
        if warmup and len(window) < 4:
            assert torch.equal(h, g)
        else:
            assert torch.allclose(h, g + 5.0 * torch.stack(window).mean(0), atol=1e-6)


def test_filter_defaults_follow_the_paper():
    assert GrokfastConfig(filter="ema").amplification == 2.0
    assert GrokfastConfig(filter="ma").amplification == 5.0


def test_orthogonal_gradient_has_no_component_along_the_weights():
    w = torch.nn.Parameter(torch.randn(5, 6, dtype=torch.float64))
    w.grad = torch.randn(5, 6, dtype=torch.float64) + 3 * w.detach()
    orthogonalise([("w", w)])
    assert abs(float((w.detach() * w.grad).sum())) < 1e-10


def test_rescaled_orthogonal_gradient_keeps_the_gradients_norm():
    """Prieto et al.'s orthograd.py: the projection, then the gradient's own norm restored."""
    w = torch.nn.Parameter(torch.randn(5, 6, dtype=torch.float64))
    g = torch.randn(5, 6, dtype=torch.float64) + 3 * w.detach()
    w.grad = g.clone()
    orthogonalise([("w", w)], rescale=True)
    assert abs(float((w.detach() * w.grad).sum())) < 1e-10
    assert float(w.grad.norm()) == pytest.approx(float(g.norm()), rel=1e-12)
    plain = torch.nn.Parameter(w.detach().clone())
    plain.grad = g.clone()
    orthogonalise([("w", plain)])
    assert float(plain.grad.norm()) < float(g.norm()) * 0.99  # the projection alone shrinks it
    assert torch.allclose(w.grad / w.grad.norm(), plain.grad / plain.grad.norm())


def test_orthogonal_grad_rescale_needs_orthogonal_grad():
    with pytest.raises(ProbeError, match="orthogonal_grad_rescale"):
        load_config("kitouni-mlp", overrides={"orthogonal_grad_rescale": "true"})
    assert load_config("kitouni-mlp", overrides={"orthogonal_grad": "true",
                                                 "orthogonal_grad_rescale": "true"}).orthogonal_grad_rescale


def test_norm_constraint_holds_relative_and_absolute():
    a = torch.nn.Parameter(torch.randn(4, 4))
    b = torch.nn.Parameter(torch.randn(4))
    named = [("a", a), ("b", b)]
    start = total_norm([a, b])
    c = NormConstraint(ConstraintConfig(relative=0.5), named)
    with torch.no_grad():
        a.mul_(3.0)
    c.apply(named)
    assert total_norm([a, b]) == pytest.approx(0.5 * start, rel=1e-6)
    only_a = NormConstraint(ConstraintConfig(norm=2.0, tensors=("a",)), named)
    before_b = b.detach().clone()
    only_a.apply(named)
    assert total_norm([a]) == pytest.approx(2.0, rel=1e-6) and torch.equal(b.detach(), before_b)
    with pytest.raises(ProbeError, match="matches no parameter"):
        NormConstraint(ConstraintConfig(norm=1.0, tensors=("nothing*",)), named)


def test_stablemax_values_and_gradients():
    x = torch.tensor([[0.0, 0.0], [1.0, -1.0], [200.0, -3.0]], dtype=torch.float64, requires_grad=True)
    p = stablemax_log_probs(x).exp()
    assert torch.allclose(p[0], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert torch.allclose(p[1], torch.tensor([2 / 2.5, 0.5 / 2.5], dtype=torch.float64))  # s(1)=2, s(-1)=1/2
    assert torch.allclose(p.sum(-1), torch.ones(3, dtype=torch.float64))
    loss = cross_entropy(x, torch.tensor([0, 1, 0]), "stablemax")
    loss.backward()
    assert torch.isfinite(x.grad).all()
    # the default path is torch's cross-entropy in float64
    y = torch.randn(4, 5)
    lab = torch.tensor([0, 1, 2, 3])
    assert torch.equal(cross_entropy(y, lab), torch.nn.functional.cross_entropy(y.double(), lab))


def test_stablemax_loss_is_the_ratio_form_and_keeps_losses_a_difference_of_logs_would_zero():
    """log(s / sum s), as the authors' log_stablemax: at logits (1e15, 0) the loss is 1e-15 in float64,
    where log s - log sum s rounds to exactly 0; at (1e17, 0) the ratio itself rounds to 1."""
    small = cross_entropy(torch.tensor([[1e15, 0.0]], dtype=torch.float64), torch.tensor([0]), "stablemax")
    assert float(small) == pytest.approx(1e-15, rel=1e-3)
    x = torch.tensor([[1e15, 0.0]], dtype=torch.float64)
    s = x + 1
    assert float(torch.log(s[0, 0]) - torch.log(s.sum())) == 0.0  # the cancelling form
    assert float(cross_entropy(torch.tensor([[1e17, 0.0]]), torch.tensor([0]), "stablemax")) == 0.0


def test_float32_softmax_collapses_where_float64_does_not():
    logits = torch.tensor([[20.0, 0.0, 0.0]])  # exp(-20) is below float32 resolution of 1, not float64
    assert float(cross_entropy(logits, torch.tensor([0]), dtype=torch.float32)) == 0.0
    assert float(cross_entropy(logits, torch.tensor([0]), dtype=torch.float64)) > 0.0


@pytest.mark.parametrize("sets", [
    {"grokfast.filter": "ema"},
    {"grokfast.filter": "ma", "grokfast.window": "7"},
    {"constraint.relative": "1.0", "orthogonal_grad": "true"},
    {"softmax": "stablemax", "softmax_dtype": "float32"},
    {"l1.coef": "1e-3"},
])
def test_interrupted_run_with_interventions_resumes_bit_identical(tmp_path, sets, train_interrupted):
    cfg = load_config("kitouni-mlp", overrides={**MLP, **sets})
    train(cfg, tmp_path / "full", progress=False)
    train_interrupted(cfg, tmp_path / "cut", at_call=47)
    resume(tmp_path / "cut", progress=False)
    with probe.load_run(tmp_path / "full") as a, probe.load_run(tmp_path / "cut") as b:
        assert np.array_equal(a.steps, b.steps)
        for name in a.tensor_names:
            assert np.array_equal(a.series(name), b.series(name)), name
        assert a.metrics.equals(b.metrics)


def test_filter_changes_training_and_constraint_fixes_the_norm(tmp_path):
    plain = load_config("kitouni-mlp", overrides=MLP)
    train(plain, tmp_path / "plain", progress=False)
    train(load_config("kitouni-mlp", overrides={**MLP, "grokfast.filter": "ema"}), tmp_path / "ema", progress=False)
    train(load_config("kitouni-mlp", overrides={**MLP, "constraint.norm": "20"}), tmp_path / "norm", progress=False)
    with probe.load_run(tmp_path / "plain") as a, probe.load_run(tmp_path / "ema") as b:
        assert np.array_equal(a.series("embed.W_E")[0], b.series("embed.W_E")[0])  # same initialisation
        assert not np.allclose(a.series("embed.W_E")[-1], b.series("embed.W_E")[-1])
    with probe.load_run(tmp_path / "norm") as run:
        for step in run.steps:
            norm = np.sqrt(sum((v.double() ** 2).sum().item() for v in run.params(int(step)).values()))
            assert norm == pytest.approx(20.0, rel=1e-5)


def test_fine_tune_from_a_checkpoint(tmp_path):
    cfg = load_config("kitouni-mlp", overrides=MLP)
    train(cfg, tmp_path / "parent", progress=False)
    child_cfg = load_config(overrides={"train_subset": "0.5", "weight_decay": "1.0", "steps": "20"}, base=cfg)
    parent = parent_checkpoint(f"{tmp_path / 'parent'}:40", child_cfg)
    train(child_cfg, tmp_path / "child", progress=False, parent=parent)
    with probe.load_run(tmp_path / "parent") as a, probe.load_run(tmp_path / "child") as b:
        for name, value in a.params(40).items():
            assert torch.equal(value, b.params(0)[name]), name
        assert b.split.sizes[0] == a.split.sizes[0] // 2 and np.array_equal(a.split.val, b.split.val)
        assert set(b.split.train) <= set(a.split.train)
        info = probe.run.describe_run(b)
        assert info["parent"]["step"] == 40 and "weight_decay 0.03 -> 1.0" in info["parent"]["changed"]
    # the optimizer state exists at the last checkpoint only
    with pytest.raises(ProbeError, match="optimizer state only at its last"):
        parent_checkpoint(f"{tmp_path / 'parent'}:40", child_cfg, optimizer=True)
    with_opt = parent_checkpoint(f"{tmp_path / 'parent'}", child_cfg, optimizer=True)
    assert with_opt.optim is not None and with_opt.lineage["step"] == 80


def test_fine_tuned_run_killed_before_its_first_commit_restarts_from_the_parent(tmp_path):
    cfg = load_config("kitouni-mlp", overrides=MLP)
    train(cfg, tmp_path / "parent", progress=False)
    child_cfg = load_config(overrides={"train_subset": "0.5", "steps": "20"}, base=cfg)
    train(child_cfg, tmp_path / "ref", progress=False, parent=parent_checkpoint(str(tmp_path / "parent"), child_cfg))
    # as if killed after the config copy was written and before the run file existed
    train(child_cfg, tmp_path / "cut", progress=False, parent=parent_checkpoint(str(tmp_path / "parent"), child_cfg))
    os.remove(run_file_path(tmp_path / "cut"))
    resume(tmp_path / "cut", progress=False)
    with probe.load_run(tmp_path / "ref") as a, probe.load_run(tmp_path / "cut") as b:
        assert np.array_equal(a.series("embed.W_E"), b.series("embed.W_E"))
        assert b.attrs.get("parent") is not None


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "probe.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_bad_interventions_and_from_are_one_line(tmp_path):
    cfg = load_config("kitouni-mlp", overrides=MLP)
    train(cfg, tmp_path / "parent", progress=False)
    cases = [
        (["train", "--preset", "kitouni-mlp", "--set", "grokfast.alpha=1.5", "--out", str(tmp_path / "x")],
         "grokfast.alpha"),
        (["train", "--preset", "kitouni-mlp", "--set", "grokfast.filter=lowpass", "--out", str(tmp_path / "x")],
         "grokfast.filter"),
        (["train", "--preset", "kitouni-mlp", "--set", "constraint.norm=-1", "--out", str(tmp_path / "x")],
         "constraint.norm"),
        (["train", "--preset", "liu-toy-add", "--set", "softmax=stablemax", "--out", str(tmp_path / "x")],
         "cross_entropy"),
        (["train", "--from", f"{tmp_path / 'parent'}:7", "--out", str(tmp_path / "x")], "no checkpoint at step 7"),
        (["train", "--from", str(tmp_path / "parent"), "--set", "model.hidden=32", "--out", str(tmp_path / "x")],
         "different model"),
        (["train", "--from", str(tmp_path / "missing"), "--out", str(tmp_path / "x")], "missing"),
    ]
    for args, match in cases:
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert match in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()


def test_killed_run_with_filter_resumes_bit_identical(tmp_path, wait_for_checkpoints):
    """kill -9 of a Grokfast MA run (the filter's ring buffer and its running sum are resume state), kill -9
    again during the resume, then --resume to the end: bit-identical to an uninterrupted run."""
    sets = ["p=11", "steps=900", "model.d_embed=16", "model.hidden=16", "checkpoint.schedule=every",
            "checkpoint.every=3", "grokfast.filter=ma", "grokfast.window=5"]
    cfg = load_config("kitouni-mlp", overrides=dict(s.split("=") for s in sets))
    train(cfg, tmp_path / "ref", progress=False)
    run_dir = tmp_path / "killed"
    first = [sys.executable, "-m", "probe.cli", "train", "--preset", "kitouni-mlp", "--no-progress", "--out", str(run_dir)]
    for s in sets:
        first += ["--set", s]
    again = [sys.executable, "-m", "probe.cli", "train", "--resume", str(run_dir), "--no-progress"]
    for cmd, at in ((first, 20), (again, 150)):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_checkpoints(proc, run_dir, at)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert killed, "training finished before it could be killed"
        with probe.load_run(run_dir) as run:
            assert not run.finished and len(run.steps) >= at
    assert _cli("train", "--resume", str(run_dir), "--no-progress").returncode == 0
    with probe.load_run(tmp_path / "ref") as a, probe.load_run(run_dir) as b:
        assert b.finished and np.array_equal(a.steps, b.steps)
        for name in a.tensor_names:
            assert np.array_equal(a.series(name), b.series(name)), name
        assert a.metrics.equals(b.metrics)


def test_interventions_keep_runs_out_of_the_vectorised_ensemble():
    from probe.train.ensemble import group_key, why_not

    plain = load_config("kitouni-mlp", overrides=MLP)
    assert group_key(plain) is not None
    for sets in ({"grokfast.filter": "ema"}, {"constraint.norm": "3"}, {"softmax": "stablemax"},
                 {"train_subset": "0.5"}, {"orthogonal_grad": "true"}, {"init_alpha": "4"}):
        cfg = load_config("kitouni-mlp", overrides={**MLP, **sets})
        assert group_key(cfg) is None
        assert "one-run trainer" in why_not([cfg, cfg])


def test_l1_penalty_adds_the_gradient_of_the_mean_absolute_value():
    """l1: coef * mean|W| over the chosen tensors' entries (default the embedding), its gradient added
    to theirs; on stacked ensemble parameters each member gets its own mean's gradient."""
    import torch

    from probe.train.interventions import L1Penalty

    cfg = load_config("liu-toy-s3", overrides={"l1.coef": "0.5"})
    w = torch.tensor([[1.5, -2.0, 0.0], [0.25, -0.5, 3.0]], requires_grad=True)
    other = torch.ones(4, requires_grad=True)
    named = [("embed.W_E", w), ("decoder.0.W", other)]
    (0.5 * w.abs().mean() + (w ** 2).sum() + other.sum()).backward()
    expected = w.grad.clone()
    w.grad = (2 * w).detach().clone()  # the same gradient without the penalty
    other.grad = torch.ones(4)
    part = L1Penalty(cfg, named, "cpu")
    part.apply(named)
    torch.testing.assert_close(w.grad, expected)
    assert torch.equal(other.grad, torch.ones(4))
    stacked = torch.stack([w.detach(), -w.detach()]).requires_grad_(True)
    stacked.grad = torch.zeros_like(stacked)
    part.apply_stacked([("embed.W_E", stacked)])
    torch.testing.assert_close(stacked.grad[0], 0.5 * torch.sign(w.detach()) / 6)
    torch.testing.assert_close(stacked.grad[1], -0.5 * torch.sign(w.detach()) / 6)
    assert L1Penalty(load_config("liu-toy-s3", overrides={"l1.coef": "1", "l1.tensors": "decoder.*"}),
                     named, "cpu").names == ["decoder.0.W"]


def test_l1_penalty_is_off_by_default_stored_only_when_set_and_refuses_bad_values():
    plain = load_config("liu-toy-s3")
    assert "l1" not in plain.to_dict() and plain.interventions() == []
    cfg = load_config("liu-toy-s3", overrides={"l1.coef": "1e-3"})
    assert cfg.to_dict()["l1"] == {"coef": 1e-3, "tensors": []}
    assert cfg.interventions() == ["L1 penalty 0.001 x mean|W| on the embeddings"]
    assert type(cfg).from_dict(cfg.to_dict()) == cfg
    for bad in ("-1", "inf", "nan"):
        with pytest.raises(ProbeError, match="l1.coef"):
            load_config("liu-toy-s3", overrides={"l1.coef": bad})


def test_l1_runs_still_train_in_a_vectorised_ensemble_and_match_one_by_one(tmp_path):
    """The penalty vectorises: members with it train together and end as the one-run trainer's runs."""
    from probe.train.ensemble import train_ensemble, why_not

    base = {"steps": "60", "checkpoint.schedule": "every", "checkpoint.every": "20", "checkpoint.metrics_every": "10",
            "l1.coef": "0.05"}
    configs = [load_config("liu-toy-s3", overrides={**base, "lr": lr, "seed": seed})
               for lr, seed in (("1e-3", "0"), ("3e-4", "1"))]
    assert why_not(configs) is None
    train_ensemble(configs, [tmp_path / "e0", tmp_path / "e1"], progress=False)
    for i, cfg in enumerate(configs):
        train(cfg, tmp_path / f"one{i}", progress=False)
        with probe.load_run(tmp_path / f"e{i}") as a, probe.load_run(tmp_path / f"one{i}") as b:
            for name in a.tensor_names:
                np.testing.assert_allclose(a.series(name), b.series(name), rtol=1e-4, atol=1e-6, err_msg=name)
    off = load_config("liu-toy-s3", overrides={**base, "l1.coef": "0"})
    with probe.load_run(tmp_path / "one0") as a:
        train(off, tmp_path / "off", progress=False)
        with probe.load_run(tmp_path / "off") as b:
            assert not np.array_equal(a.series("embed.W_E")[-1], b.series("embed.W_E")[-1])


def test_init_alpha_scales_the_weight_matrices(tmp_path):
    sets = {**MLP, "steps": "1"}
    train(load_config("kitouni-mlp", overrides=sets), tmp_path / "a1", progress=False)
    train(load_config("kitouni-mlp", overrides={**sets, "init_alpha": "4"}), tmp_path / "a4", progress=False)
    with probe.load_run(tmp_path / "a1") as a, probe.load_run(tmp_path / "a4") as b:
        pa, pb = a.params(0), b.params(0)
        for name in pa:
            factor = 4.0 if pa[name].ndim >= 2 else 1.0
            assert torch.allclose(pb[name], factor * pa[name]), name
        assert "x4" in probe.run.describe_run(b)["training"]
    with pytest.raises(ProbeError, match="init_alpha"):
        load_config("kitouni-mlp", overrides={"init_alpha": "0"})


def test_lineage_reads_an_older_parent_config_with_defaults(tmp_path):
    """A parent config stored before a key existed lists no change for that key."""
    import json

    import h5py

    cfg = load_config("kitouni-mlp", overrides=MLP)
    train(cfg, tmp_path / "parent", progress=False)
    child_cfg = load_config(overrides={"steps": "20"}, base=cfg)
    train(child_cfg, tmp_path / "child", progress=False, parent=parent_checkpoint(str(tmp_path / "parent"), child_cfg))
    with h5py.File(run_file_path(tmp_path / "child"), "r+") as f:
        lineage = json.loads(f.attrs["parent"])
        del lineage["config"]["init_alpha"]
        f.attrs["parent"] = json.dumps(lineage)
    with probe.load_run(tmp_path / "child") as run:
        assert probe.run.describe_run(run)["parent"]["changed"] == "steps 80 -> 20"
