"""Training-dynamics measures: analytic values, batched vs per-checkpoint forms, events rules, llc."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import probe
from probe.analyses import compute
from probe.analyses import dynamics as dyn
from probe.analyses.events import EventRule, find_events, loss_spikes
from probe.analyses.families.dynamics import rhat
from probe.errors import ProbeError
from probe.train.config import load_config
from probe.train.loop import train

MLP = {"p": "11", "steps": "60", "model.d_embed": "8", "model.hidden": "16", "checkpoint.schedule": "every",
       "checkpoint.every": "10", "checkpoint.metrics_every": "5"}


@pytest.fixture
def mlp_run(tmp_path):
    train(load_config("kitouni-mlp", overrides=MLP), tmp_path / "mlp", progress=False)
    return tmp_path / "mlp"


# spectra ---------------------------------------------------------------------------------------------
def test_ranks_of_known_matrices():
    assert dyn.effective_rank(dyn.singular_values(np.eye(5))) == pytest.approx(5.0)
    rank_one = np.outer(np.arange(1, 5), np.arange(1, 4)).astype(float)
    s = dyn.singular_values(rank_one)
    assert dyn.effective_rank(s) == pytest.approx(1.0, abs=1e-6)
    assert dyn.stable_rank(s) == pytest.approx(1.0)
    d = np.diag([3.0, 4.0])
    assert dyn.nuclear_norm(dyn.singular_values(d)) == pytest.approx(7.0)
    assert dyn.stable_rank(dyn.singular_values(d)) == pytest.approx(25 / 16)
    assert dyn.effective_rank(dyn.singular_values(np.zeros((3, 3)))) == 0.0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.01, 100.0))
def test_ranks_are_invariant_to_scale_and_rotation(seed, scale):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(6, 4))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    s1, s2 = dyn.singular_values(w), dyn.singular_values(scale * q @ w)
    assert dyn.effective_rank(s2) == pytest.approx(dyn.effective_rank(s1), rel=1e-8)
    assert dyn.stable_rank(s2) == pytest.approx(dyn.stable_rank(s1), rel=1e-8)
    assert dyn.nuclear_norm(s2) == pytest.approx(scale * dyn.nuclear_norm(s1), rel=1e-8)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.integers(1, 40), st.floats(-6, 2))
def test_fast_singular_values_match_the_svd(seed, m, n, log_scale):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(3, m, n)) * 10.0**log_scale
    w[0, :, 0] = 0.0  # a rank-deficient member
    fast, ref = dyn.fast_singular_values(w), dyn.singular_values(w)
    top = ref.max(axis=-1, keepdims=True)
    assert np.allclose(fast, ref, atol=1e-7 * top.max(), rtol=0)
    assert np.allclose(dyn.stable_rank(fast), dyn.stable_rank(ref), rtol=1e-9)
    assert np.allclose(dyn.nuclear_norm(fast), dyn.nuclear_norm(ref), rtol=1e-6)
    assert np.allclose(dyn.effective_rank(fast), dyn.effective_rank(ref), rtol=1e-6)


def test_per_head_tensors_are_joined_over_heads():
    w_q = np.arange(2 * 5 * 3, dtype=float).reshape(2, 5, 3)  # [heads, d_model, d_head]
    m = dyn.matrix_view("blocks.0.attn.W_Q", w_q)
    assert m.shape == (5, 6) and np.array_equal(m[:, 3:], w_q[1])
    w_o = np.arange(2 * 3 * 5, dtype=float).reshape(2, 3, 5)  # [heads, d_head, d_model]
    assert dyn.matrix_view("blocks.0.attn.W_O", w_o).shape == (6, 5)
    assert dyn.matrix_view("unembed.b_U", np.zeros(4)) is None


# margins and collapse ----------------------------------------------------------------------------------
def test_logit_margins():
    z = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    top, mean = dyn.logit_margins(z, np.array([0, 2]))
    assert np.allclose(top, [1.0, -4.0]) and np.allclose(mean, [1.5, -1.5])


def test_collapse_masks_follow_the_precision():
    z = np.array([[20.0, 0.0, 0.0], [2.0, 0.0, 0.0], [200.0, 0.0, 0.0]], dtype=np.float32)
    y = np.array([0, 0, 0])
    loss32, grad32 = dyn.collapse_masks(z, y, "float32")
    loss64, grad64 = dyn.collapse_masks(z, y, "float64")
    assert loss32.tolist() == [True, False, True] and loss64.tolist() == [False, False, True]
    assert grad32.tolist() == [False, False, True]  # exp(-20) is still representable in float32
    stable32, _ = dyn.collapse_masks(z, y, "float32", "stablemax")  # StableMax decays polynomially
    assert stable32.tolist() == [False, False, False]


# registered metrics on a run -------------------------------------------------------------------------------
def test_param_norm_against_the_weights_and_batched_equals_single(mlp_run):
    run = probe.load_run(mlp_run)
    batched = compute(run, "param_norm", cache=False, chunk=64)
    single = compute(run, "param_norm", cache=False, chunk=1)
    pd.testing.assert_frame_equal(batched, single)
    last = {k: v.double().numpy() for k, v in run.params("last").items()}
    first = {k: v.double().numpy() for k, v in run.params(0).items()}
    row = batched.iloc[-1]
    assert row["norm_total"] == pytest.approx(np.sqrt(sum((v**2).sum() for v in last.values())), rel=1e-12)
    assert row["norm_embed"] == pytest.approx(np.linalg.norm(last["embed.W_E"]), rel=1e-12)
    assert row["norm_last"] == pytest.approx(np.linalg.norm(last["unembed.W_U"]), rel=1e-12)
    assert row["norm_total"] ** 2 == pytest.approx(row["norm_embed"] ** 2 + row["norm_rest"] ** 2, rel=1e-12)
    assert row["dist_init"] == pytest.approx(np.sqrt(sum(((last[k] - first[k]) ** 2).sum() for k in last)), rel=1e-12)
    assert batched["dist_init"].iloc[0] == 0.0


def test_weight_spectrum_batched_equals_single(mlp_run):
    run = probe.load_run(mlp_run)
    a = compute(run, "weight_spectrum", cache=False, chunk=64)
    b = compute(run, "weight_spectrum", cache=False, chunk=1)
    pd.testing.assert_frame_equal(a, b)
    w = run.params("last")["decoder.0.W"].double().numpy()
    assert a["nuclear.decoder.0.W"].iloc[-1] == pytest.approx(np.linalg.svd(w, compute_uv=False).sum(), rel=1e-10)
    assert "erank.decoder.0.b" not in a.columns


def test_efficiency_and_collapse_on_a_run(mlp_run):
    run = probe.load_run(mlp_run)
    df = compute(run, ["efficiency", "softmax_collapse", "param_norm"], cache=False)
    model = run.model("last")
    x, y = run.dataset("train")
    out = model.answer(x).detach().double().numpy()
    top, _ = dyn.logit_margins(out, y.numpy())
    last = df.iloc[-1]
    assert last["margin_train"] == pytest.approx(top.mean(), rel=1e-6)  # float32 forward passes over different batches
    assert last["efficiency_train"] == pytest.approx(top.mean() / last["norm_total"], rel=1e-6)
    assert 0 <= last["zero_loss_frac"] <= 1 and -1 <= last["nlm_cos"] <= 1


def test_collapse_rises_in_float32_on_a_run_without_weight_decay(tmp_path):
    sets = {**MLP, "weight_decay": "0", "softmax_dtype": "float32", "lr": "0.1", "steps": "300",
            "checkpoint.every": "100"}
    train(load_config("kitouni-mlp", overrides=sets), tmp_path / "c", progress=False)
    df = compute(probe.load_run(tmp_path / "c"), "softmax_collapse", cache=False)
    assert df["zero_loss_frac"].iloc[0] == 0.0 and df["zero_loss_frac"].iloc[-1] > 0.1
    as64 = compute(probe.load_run(tmp_path / "c"), "softmax_collapse", cache=False, dtype="float64")
    assert as64["zero_loss_frac"].iloc[-1] < df["zero_loss_frac"].iloc[-1]


def test_margins_do_not_apply_to_regression_runs(toy_run):
    with pytest.raises(ProbeError, match="efficiency does not apply to this run: it needs class logits"):
        compute(probe.load_run(toy_run), "efficiency")
    norms = compute(probe.load_run(toy_run), "param_norm", cache=False)  # norms apply to every run
    assert (norms["norm_total"] > 0).all()


def test_weights_metrics_need_a_run():
    from probe.tasks import make_task

    with pytest.raises(ProbeError, match="needs the run's weights"):
        compute(np.zeros((10, 1)), "param_norm", task=make_task("nonmod-add", p=10))


# events --------------------------------------------------------------------------------------------------
def _rows(steps, train_loss, train_acc, val_loss, val_acc):
    return pd.DataFrame({"step": steps, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                         "val_acc": val_acc})


def test_events_thresholds_delay_and_ungrokking():
    steps = np.arange(0, 100, 10)
    train_acc = [0.1, 0.5, 0.95, 1, 1, 1, 1, 1, 1, 1]
    val_acc = [0.0, 0.1, 0.1, 0.2, 0.6, 0.92, 1.0, 0.8, 0.3, 0.2]
    val_loss = [5, 4, 4, 3, 2, 0.5, 0.05, 0.4, 2, 3]
    ev = find_events(_rows(steps, np.ones(10), train_acc, val_loss, val_acc))
    assert ev.train_passes[0.9] == 20 and ev.val_passes[0.9] == 50 and ev.delay == 30
    assert ev.val_loss_below == {1.0: 50, 0.1: 60}
    assert ev.ungrok_step == 80 and ev.ungrok_min_acc == pytest.approx(0.2)
    table = ev.table()
    assert table.attrs["probe"]["events"]["params"]["spike_factor"] == 10.0


def test_loss_spike_rule():
    steps = np.arange(0, 200, 10)
    loss = np.full(20, 1e-6)
    loss[:3] = [1.0, 1e-3, 1e-5]
    loss[10:13] = [1e-3, 5e-2, 1e-4]  # a spike: 50,000x the running minimum, back under 10x at step 130
    spikes = loss_spikes(steps, loss, factor=10.0, window=1000)
    assert len(spikes) == 1
    sp = spikes[0]
    assert (sp.start, sp.peak, sp.recovery) == (100, 110, 30)
    assert sp.height == pytest.approx(5e-2 / 1e-6)
    assert loss_spikes(steps, loss, factor=1e5, window=1000) == []
    # the window: a minimum older than the window does not count
    assert len(loss_spikes(steps, loss, factor=10.0, window=5)) == 0


def test_event_parameters_are_checked():
    for bad in ({"thresholds": (0.0,)}, {"thresholds": (1.2,)}, {"ungrok_below": 0.0}, {"spike_factor": 1.0},
                {"loss_levels": (-1.0,)}):
        with pytest.raises(ProbeError):
            EventRule(**bad)


def test_events_cli_and_bad_threshold(toy_run):
    r = subprocess.run([sys.executable, "-m", "probe.cli", "events", str(toy_run), "--format", "csv"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "val_acc >= 0.9" in r.stdout and "spike_factor=10.0" in r.stderr
    r = subprocess.run([sys.executable, "-m", "probe.cli", "events", str(toy_run), "--threshold", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "(0, 1]" in r.stderr and "Traceback" not in r.stderr


def test_curves_and_norms_figures_overlay_runs(toy_run, mlp_run, tmp_path):
    for fig in ("curves", "norms"):
        out = tmp_path / f"{fig}.png"
        r = subprocess.run([sys.executable, "-m", "probe.cli", "plot", str(toy_run), str(mlp_run), "--figure", fig,
                            "--out", str(out), "--no-progress"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert out.stat().st_size > 10_000
    r = subprocess.run([sys.executable, "-m", "probe.cli", "plot", str(toy_run), str(mlp_run), "--figure", "pca",
                        "--out", str(tmp_path / "x.png")], capture_output=True, text=True)
    assert r.returncode == 2 and "shows one run" in r.stderr


# llc ------------------------------------------------------------------------------------------------------
def test_rhat():
    rng = np.random.default_rng(0)
    same = rng.normal(size=(4, 500))
    assert rhat(same) == pytest.approx(1.0, abs=0.02)
    apart = same + np.arange(4)[:, None] * 5
    assert rhat(apart) > 2


def test_llc_on_a_run(mlp_run):
    pytest.importorskip("devinterp")
    df = compute(probe.load_run(mlp_run), "llc", steps="first,last", cache=False, llc_draws=30, llc_chains=2)
    assert np.isfinite(df["llc"]).all() and np.isfinite(df["llc_rhat"]).all()
    assert {"llc_chain0", "llc_chain1", "llc_std", "llc_trace_first", "llc_trace_last"} <= set(df.columns)
    assert df.attrs["probe"]["llc"]["params"]["llc_draws"] == 30
    # the shared model is left with the checkpoint's weights
    run = probe.load_run(mlp_run)
    assert compute(run, "param_norm", steps="last", cache=False)["norm_total"].iloc[0] == pytest.approx(
        compute(run, "param_norm", steps="last", cache=False)["norm_total"].iloc[0])


def test_llc_without_devinterp_is_one_line(mlp_run, tmp_path):
    code = ("import sys; sys.modules['devinterp'] = None; sys.modules['devinterp.slt'] = None; "
            "sys.modules['devinterp.slt.llc'] = None; from probe.cli import main; "
            f"sys.exit(main(['analyze', {str(mlp_run)!r}, '--metric', 'llc', '--no-progress']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2 and "needs devinterp" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
