"""Each metric with a source paper against an independent, straightforward implementation of that
paper's formula; the modular analyses on the shipped grokked run; invariances; bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import probe
from probe import analyses
from probe.analyses import fourier as fr
from probe.analyses import parallelograms as pg
from probe.analyses import representations as rm
from probe.cli import main
from probe.errors import ProbeError
from probe.tasks import make_task




def clock(p: int, k: int, d: int = 6, seed: int = 0) -> np.ndarray:
    a = np.arange(p)
    frame = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, 2)))[0]
    return np.stack([np.cos(2 * np.pi * k * a / p), np.sin(2 * np.pi * k * a / p)], 1) @ frame.T


# --------------------------------------------------------------------------------------------------
# golden values: probe against the paper's formula written out plainly
# --------------------------------------------------------------------------------------------------
def test_restricted_loss_is_nandas(modadd):
    """Nanda et al. Sec. 5.1 as their code computes it: neuron activations at the last position, their
    mean plus the projections on unit cos/sin(w(a+b)) vectors, logits = acts @ W_out @ W_U shifted
    to the full model's mean logit, float64 cross-entropy on the test split."""
    import torch
    import torch.nn.functional as F

    step = int(modadd.steps[-1])
    df = analyses.compute(modadd, ["key_freqs", "restricted_loss"], steps=str(step), cache=False)
    keys = [int(k) for k in df["key_freqs"].iloc[0].split(",")]
    p = 53
    model = modadd.model(step)
    tokens = model.model_inputs(torch.as_tensor(modadd.task.inputs))
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    logits = logits[:, -1].double()
    acts = cache["blocks.0.mlp.hook_post"][:, -1].double()
    approx = acts.mean(dim=0, keepdim=True).repeat(acts.shape[0], 1)
    a, b = torch.as_tensor(modadd.task.inputs[:, 0]), torch.as_tensor(modadd.task.inputs[:, 1])
    for k in keys:
        for f in (torch.cos, torch.sin):
            v = f(2 * np.pi * k * (a + b) / p).double()
            v = v / v.norm()
            approx = approx + (acts * v[:, None]).sum(0) * v[:, None]
    params = modadd.params(step)
    restricted = approx @ params["blocks.0.mlp.W_out"].double() @ params["unembed.W_U"].double()
    restricted = restricted + logits.mean(0, keepdim=True) - restricted.mean(0, keepdim=True)
    val = torch.as_tensor(modadd.split.val)
    want = float(F.cross_entropy(restricted[val], torch.as_tensor(modadd.task.labels)[val]))
    assert df["restricted_loss"].iloc[0] == pytest.approx(want, rel=1e-6, abs=1e-12)
    assert "nanda convention, on the val split" in " ".join(df.attrs["probe"]["restricted_loss"]["notes"])


def _zhong_circularity(emb: np.ndarray, p: int, n_pc: int = 4) -> float:
    from sklearn.decomposition import PCA

    x = PCA(n_components=n_pc).fit_transform(emb)
    scores = []
    for i in range(n_pc):
        col = x[:, i]
        best = max(abs(sum(col[a] * np.exp(-2j * np.pi * k * a / p) for a in range(p))) ** 2
                   for k in range(1, p // 2 + 1))
        scores.append(2.0 / p * best / float(np.sum(col ** 2)))
    return float(np.mean(scores))


def test_circularity_is_zhongs(modadd):
    df = analyses.compute(modadd, "circularity", steps="first,last", cache=False)
    emb = modadd.read_embeddings(np.array([0, len(modadd.steps) - 1]))
    for i in range(2):
        assert df["circularity"].iloc[i] == pytest.approx(_zhong_circularity(emb[i], 53), rel=1e-9)


def test_threshold_free_rqi_counts_pairs_directly():
    """P(|h_s - h_t| < |h_u - h_w|) over P0 x different-label pairs, by explicit comparison."""
    task = make_task("add", p=5)
    rng = np.random.default_rng(1)
    h = rng.normal(size=(task.n_samples, 3))
    p0 = pg.Parallelograms.from_labels(task.labels)
    same = [np.sum((h[s] - h[t]) ** 2) for s, t in zip(p0.first, p0.second)]
    n = task.n_samples
    diff = [np.sum((h[u] - h[w]) ** 2) for u, w in itertools.combinations(range(n), 2)
            if task.labels[u] != task.labels[w]]
    want = np.mean([(np.sum(np.array(diff) > d) + 0.5 * np.sum(np.array(diff) == d)) / len(diff) for d in same])
    got = pg.rank_scores(pg.pair_distances(h, p0).d2, pg.between_distances(h, task.labels)).mean()
    assert got == pytest.approx(want, rel=1e-12)


def test_circular_rqi_counts_quadruples_directly():
    task = make_task("add", p=11)
    rng = np.random.default_rng(2)
    emb = clock(11, 3) + 0.15 * rng.normal(size=(11, 6))
    df = analyses.compute(emb, "rqi_circular", task=task, circ_delta=0.3)
    # the plane of frequency 3, whitened with the inverse square root of its covariance
    e = emb - emb.mean(0)
    a = np.arange(11)
    c, s = np.cos(2 * np.pi * 3 * a / 11) @ e, np.sin(2 * np.pi * 3 * a / 11) @ e
    q = np.linalg.qr(np.stack([c, s], 1))[0]
    xy = e @ q
    xy = xy - xy.mean(0)
    w, v = np.linalg.eigh(xy.T @ xy / 11)
    z = xy @ v @ np.diag(w ** -0.5) @ v.T
    theta = np.arctan2(z[:, 1], z[:, 0])
    p0 = pg.Parallelograms.from_labels(task.labels)
    x = task.inputs
    hits = 0
    for s1, s2 in zip(p0.first, p0.second):
        r = theta[x[s1, 0]] + theta[x[s1, 1]] - theta[x[s2, 0]] - theta[x[s2, 1]]
        hits += abs(np.angle(np.exp(1j * r))) <= 0.3
    assert df["rqi_circular"].iloc[0] == pytest.approx(hits / len(p0), abs=1e-12)


def test_lambda3_timescale_from_the_constraint_matrix():
    """Liu Sec. 3.2: lambda3 = third-smallest eigenvalue of A^T A, n_h = 1 / (lambda3 eta)."""
    task = make_task("nonmod-add", p=6)
    split = probe.tasks.make_split(task.n_samples, 0.7, 0)
    p0 = pg.Parallelograms.from_labels(task.labels)
    rows = []
    train = set(split.train.tolist())
    for s, t in zip(p0.first, p0.second):
        if s in train and t in train:
            r = np.zeros(6)
            for sym, sign in ((task.inputs[s, 0], 1), (task.inputs[s, 1], 1), (task.inputs[t, 0], -1),
                              (task.inputs[t, 1], -1)):
                r[sym] += sign
            rows.append(r)
    a = np.array(rows)
    lam = np.sort(np.linalg.eigvalsh(a.T @ a))
    lam3 = lam[2] if lam[2] > 1e-9 else 0.0
    emb = np.random.default_rng(0).normal(size=(6, 2))
    df = analyses.compute(emb, "lambda3", task=task, split=split, eta=1e-3)
    assert df["lambda3"].iloc[0] == pytest.approx(lam3, abs=1e-9)
    assert df["grokking_timescale"].iloc[0] == pytest.approx(1 / (lam3 * 1e-3) if lam3 else np.inf)
    assert df["grokking_timescale_x3"].iloc[0] == pytest.approx(3 * df["grokking_timescale"].iloc[0])


# --------------------------------------------------------------------------------------------------
# the shipped grokked transformer
# --------------------------------------------------------------------------------------------------
def test_shipped_modadd_hook_and_circular_rqi_track_grokking(modadd):
    steps = modadd.steps
    pick = ",".join(str(int(s)) for s in steps[np.linspace(0, len(steps) - 1, 7).round().astype(int)])
    hook = analyses.compute(modadd, "rqi", hook="blocks.0.hook_resid_post", steps=pick, cache=False)
    circ = analyses.compute(modadd, "rqi_circular", steps=pick, cache=False)
    assert abs(hook["rqi"].iloc[0] - 0.5) < 0.05 and hook["rqi"].iloc[-1] >= 0.95  # chance 0.5
    assert circ["rqi_circular"].iloc[0] < 0.2 and circ["rqi_circular"].iloc[-1] >= 0.95  # chance 0.1
    m = modadd.metrics.set_index("step")["val_acc"]
    val = m.reindex(hook["step"]).to_numpy()
    from scipy.stats import spearmanr

    assert spearmanr(val, hook["rqi"]).statistic > 0.9
    assert spearmanr(val, circ["rqi_circular"]).statistic > 0.9
    assert len(set(circ["plane_freq"])) == 1  # one plane for the whole series
    logits = analyses.compute(modadd, "rqi", hook="logits", steps="first,last", cache=False)
    assert logits["rqi"].iloc[0] < 0.6 and logits["rqi"].iloc[-1] >= 0.95


def test_shipped_modadd_restricted_and_excluded_loss(modadd):
    df = analyses.compute(modadd, ["restricted_loss", "excluded_loss"], steps="last", cache=False)
    last = df.iloc[-1]
    assert last["restricted_loss"] < last["restricted_loss_full"]
    assert last["excluded_loss"] > 1.0 > 100 * last["excluded_loss_full"]
    grid = analyses.compute(modadd, "restricted_loss", steps="last", convention="grid", loss_split="all",
                            cache=False)
    assert "grid convention" in " ".join(grid.attrs["probe"]["restricted_loss"]["notes"])


def test_lottery_ticket_uses_all_k_axes(modadd):
    two = analyses.compute(modadd, "lottery_ticket", steps="first", k=2, cache=False)
    eight = analyses.compute(modadd, "lottery_ticket", steps="first", k=8, cache=False)
    assert eight["lt_order"].iloc[0] >= two["lt_order"].iloc[0]
    assert eight["lt_variance_share"].iloc[0] > two["lt_variance_share"].iloc[0]
    assert eight["lt_random_order"].iloc[0] != two["lt_random_order"].iloc[0]


# --------------------------------------------------------------------------------------------------
# invariances and the key-frequency rule
# --------------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([11, 13, 23]), st.integers(1, 5),
       st.floats(0.2, 5.0), st.floats(-3.0, 3.0), st.floats(0.0, 6.28))
def test_circular_rqi_is_affine_invariant(seed, p, k, stretch, shear, angle):
    k = 1 + (k - 1) % ((p - 1) // 2)
    rng = np.random.default_rng(seed)
    a = np.arange(p)
    xy = np.stack([np.cos(2 * np.pi * k * a / p), np.sin(2 * np.pi * k * a / p)], 1)
    xy = xy + 0.05 * rng.normal(size=xy.shape)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    warp = rot @ np.array([[stretch, shear], [0.0, 1.0 / stretch]])
    base = rm.whitened_angles(xy)
    moved = rm.whitened_angles(xy @ warp.T + rng.normal(size=2) * 10)
    task = make_task("add", p=p)
    p0 = pg.Parallelograms.from_labels(task.labels)
    r0 = np.abs(rm.circular_residuals(base, task.inputs, p0.first, p0.second))
    r1 = np.abs(rm.circular_residuals(moved, task.inputs, p0.first, p0.second))
    assert np.allclose(r0, r1, atol=1e-7)


@settings(max_examples=10, deadline=None)
@given(st.sampled_from([7, 11, 13, 23, 29]), st.integers(1, 14), st.floats(0.3, 3.0), st.integers(0, 1000))
def test_an_exact_clock_scores_one_whatever_frequency_ellipse_or_embedding(p, k, stretch, seed):
    k = 1 + (k - 1) % ((p - 1) // 2)
    task = make_task("add", p=p)
    e = clock(p, k, d=5, seed=seed)
    e = e @ np.diag([stretch, 1.0, 1.0, 1.0, 1.0])  # a 2:1 (or any) ellipse in the embedding space
    df = analyses.compute(e, "rqi_circular", task=task, circ_delta=1e-6)
    assert df["rqi_circular"].iloc[0] == 1.0 and df["plane_freq"].iloc[0] == k


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([5, 7, 11, 13, 23, 31, 41, 53, 97, 113]), st.integers(1, 128), st.integers(0, 10_000))
def test_gaussian_embeddings_have_no_key_frequency(p, d, seed):
    e = np.random.default_rng(seed).normal(size=(p, d))
    norms = fr.frequency_norms(rm.centred(e), p)
    assert fr.significant_frequencies(norms, d) == []


def test_a_clock_has_its_key_frequencies_at_any_p():
    for p in (11, 23, 31, 53, 113):
        e = clock(p, 2, d=8) + 0.3 * clock(p, 5 % ((p - 1) // 2) + 1, d=8, seed=3)
        e = e + 0.01 * np.random.default_rng(0).normal(size=e.shape)
        keys = fr.significant_frequencies(fr.frequency_norms(rm.centred(e), p), 8)
        assert keys[0] == 2 and len(keys) <= 2


# --------------------------------------------------------------------------------------------------
# 1-D embeddings (the shipped toy run) and bad input
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["pca_variance", "pca_projection_accuracy", "lottery_ticket", "pca2d", "tsne"])
def test_defaults_adapt_to_one_dimensional_embeddings(toy, capsys, metric):
    code = main(["analyze", str(toy), "--metric", metric, "--steps", "first,last", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err


@pytest.mark.parametrize("argv,needle", [
    (["--metric", "restricted_loss", "--convention", "foo"], "(valid: nanda, grid)"),
    (["--metric", "rqi", "--convention", "foo"], "(valid: liu, grokking-squared)"),
    (["--metric", "circularity", "--method", "foo"], "(valid: zhong, planes)"),
    (["--metric", "rqi_circular", "--freq", "27"], "--freq: must be in 1..26 for p = 53"),
    (["--metric", "rqi_circular", "--freq", "0"], "--freq"),
    (["--metric", "rqi", "--test", "nope"], "(valid: delta, auc)"),
    (["--metric", "key_freqs", "--key-rule", "x"], "(valid: energy, share, neurons)"),
    (["--metric", "lottery_ticket", "--k", "100"], "--k: 100 is larger than the embedding dimension 64"),
])
def test_bad_convention_and_frequency_are_one_line(modadd, capsys, argv, needle):
    code = main(["analyze", str(modadd.dir), "--steps", "last", "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_activations_with_one_sample_are_refused():
    with pytest.raises(ProbeError, match="different labels"):
        pg.between_distances(np.zeros((1, 4)), np.array([0]))
    with pytest.raises(ProbeError, match="all equal"):
        pg.normalize_activations(np.ones((1, 4)))


def test_fourier_metrics_on_multiplication_say_the_additive_basis_does_not_apply():
    task = make_task("mul", p=11)
    emb = np.random.default_rng(0).normal(size=(task.n_symbols, 4))
    df = analyses.compute(emb, ["fourier_gini", "key_freqs"], task=task)
    for name in ("fourier_gini", "key_freqs"):
        assert any("discrete log" in n for n in df.attrs["probe"][name]["notes"])
    add = analyses.compute(clock(11, 2), "fourier_gini", task=make_task("add", p=11))
    assert not any("discrete log" in n for n in add.attrs["probe"]["fourier_gini"]["notes"])
