"""Fourier, PCA, lottery-ticket and clock/pizza metrics: constructed cases and the shipped run."""

from __future__ import annotations


import numpy as np
import pytest

from probe import analyses
import probe
from probe.analyses import fourier as fr
from probe.analyses import representations as rm
from probe.errors import ProbeError
from probe.tasks import make_task



def clock(p: int, freqs: list[int], d: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.arange(p)
    cols = []
    for k in freqs:
        cols += [np.cos(2 * np.pi * k * a / p), np.sin(2 * np.pi * k * a / p)]
    frame = np.linalg.qr(rng.normal(size=(d, len(cols))))[0]
    return np.stack(cols, 1) @ frame.T + 3.0


def test_fourier_basis_is_orthonormal():
    b, names = fr.fourier_basis(13)
    assert np.allclose(b @ b.T, np.eye(13)) and names[:3] == ["const", "cos 1", "sin 1"]


def test_known_frequencies_are_recovered_exactly():
    task = make_task("add", p=31)
    emb = clock(31, [4, 11, 7])
    df = analyses.compute(emb, ["key_freqs", "key_freq_energy"], task=task)
    assert sorted(map(int, df["key_freqs"].iloc[0].split(","))) == [4, 7, 11]
    assert df["key_freq_energy"].iloc[0] == pytest.approx(1.0)


def test_single_frequency_has_maximal_gini_and_flat_spectrum_zero():
    n = 15
    assert fr.gini(np.eye(n)[3]) == pytest.approx((n - 1) / n)
    assert fr.gini(np.ones(n)) == pytest.approx(0.0)
    task = make_task("add", p=31)
    g = analyses.compute(clock(31, [5]), "fourier_gini", task=task)["fourier_gini"].iloc[0]
    assert g == pytest.approx(14 / 15)


def test_circularity_of_a_perfect_circle_is_one():
    assert rm.circularity_of(clock(29, [6]), 29) == pytest.approx(1.0)
    noise = np.random.default_rng(0).normal(size=(29, 12))
    assert rm.circularity_of(noise, 29) < 0.5


def test_distance_irrelevance_on_constructed_logit_tables():
    p = 17
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    clock_logits = np.cos(2 * np.pi * 3 * ((a + b) % p) / p) + 0.1 * ((a + b) % p)  # a function of a + b
    pizza_logits = np.abs(np.cos(np.pi * 3 * ((a - b) % p) / p))  # a function of a - b only
    assert rm.distance_irrelevance_of(clock_logits) == pytest.approx(1.0)
    assert rm.distance_irrelevance_of(pizza_logits) == pytest.approx(0.0, abs=1e-12)


def test_gradient_symmetricity_on_constructed_gradients():
    g = np.random.default_rng(0).normal(size=(50, 8))
    assert rm.gradient_symmetricity_of(g, 2 * g) == pytest.approx(1.0)
    assert rm.gradient_symmetricity_of(g, -g) == pytest.approx(-1.0)
    h = np.stack([g[:, 1], -g[:, 0]], 1)
    assert rm.gradient_symmetricity_of(g[:, :2], h) == pytest.approx(0.0, abs=1e-12)


def test_effective_dimension_and_variance():
    task = make_task("add", p=31)
    df = analyses.compute(clock(31, [2]), ["effective_dim", "pca_variance"], task=task, components=2)
    assert df["effective_dim"].iloc[0] == pytest.approx(2.0)
    assert df["var_pc1"].iloc[0] == pytest.approx(0.5) and df["var_pc2"].iloc[0] == pytest.approx(0.5)


def test_bad_input_for_representation_metrics():
    with pytest.raises(ProbeError, match="does not apply to task nonmod-add.*modular"):
        analyses.compute(np.random.default_rng(0).normal(size=(10, 4)), "fourier_gini",
                         task=make_task("nonmod-add", p=10))
    with pytest.raises(ProbeError, match="larger than the 4 principal components"):
        analyses.compute(np.random.default_rng(0).normal(size=(31, 4)), "pca_variance",
                         task=make_task("add", p=31), components=9)


def test_shipped_modular_run_reproduces_nanda_and_liu(modadd: probe.Run):
    df = analyses.compute(modadd, ["key_freqs", "restricted_loss", "excluded_loss", "effective_dim",
                                   "lottery_ticket", "circularity"])
    keys = df["key_freqs"].iloc[-1].split(",")
    assert 1 <= len(keys) <= 8
    last = df.iloc[-1]
    # Nanda et al.: restricting to the key frequencies lowers the loss, removing them destroys it
    assert last["restricted_loss"] < last["restricted_loss_full"]
    assert last["excluded_loss"] > 1000 * last["excluded_loss_full"] and last["excluded_loss"] > 1.0
    # Liu et al. Fig. 7: the effective dimension drops after the transition
    m = modadd.metrics
    grok = int(m[m["val_acc"] >= 0.99]["step"].iloc[0])
    before = df[df["step"] <= grok]["effective_dim"]
    assert last["effective_dim"] < 0.6 * before.iloc[0]
    # lottery ticket: along the final PCs the initial embeddings are already more ordered than random
    first = df.iloc[0]
    assert first["lt_order"] > first["lt_random_order"] + 0.1
    assert first["lt_variance_share"] > first["lt_random_share"]
    assert last["circularity"] > 0.85  # Zhong et al.'s: the first 4 PCs, each on its own


def test_projection_accuracy_with_all_components_equals_real_accuracy(modadd: probe.Run):
    import torch

    step = 3000
    # 53 centred symbol embeddings span at most 52 dimensions: projecting on 52 PCs goes through the
    # hook and must reproduce the model exactly; "all" (64) is the identity by definition
    df = analyses.compute(modadd, "pca_projection_accuracy", steps=str(step), n_components="1,52,all")
    model = modadd.model(step)
    x, y = modadd.dataset("all")
    with torch.no_grad():
        correct = (model.predict(model.answer(x)) == y).double().numpy()
    d = model.cfg.d_model
    for n in (52, d):
        for tag in ("cur", "final") if n == d else ("cur",):
            assert df[f"train_acc_{tag}_{n}"].iloc[0] == pytest.approx(correct[modadd.split.train].mean())
            assert df[f"test_acc_{tag}_{n}"].iloc[0] == pytest.approx(correct[modadd.split.val].mean(), abs=5e-3)  # near-ties may flip at float32 rounding
    assert df["test_acc_cur_1"].iloc[0] < df[f"test_acc_cur_{d}"].iloc[0]


def test_neuron_fourier_norms_and_gradient_symmetricity_run(modadd: probe.Run):
    df = analyses.compute(modadd, ["fourier_norms", "gradient_symmetricity", "distance_irrelevance"], steps="last")
    p = 53
    assert {f"we_{k}" for k in range(1, p // 2 + 1)} <= set(df.columns)
    neuron = np.array([df[f"neuron_{k}"].iloc[0] for k in range(1, p // 2 + 1)])
    keys = [int(k) for k in analyses.compute(modadd, "key_freqs", steps="last")["key_freqs"].iloc[0].split(",")]
    assert set(np.argsort(-neuron)[:2] + 1) & set(keys)
    assert -1 <= df["gradient_symmetricity"].iloc[0] <= 1 and 0 <= df["distance_irrelevance"].iloc[0] <= 1.5


def test_order_quality_circular_and_linear():
    a = np.arange(11)
    circle = np.stack([np.cos(2 * np.pi * 3 * a / 11), np.sin(2 * np.pi * 3 * a / 11)], 1)
    assert rm.order_quality(circle, make_task("add", p=11)) == pytest.approx(1.0)
    shuffled = circle[np.random.default_rng(0).permutation(11)]
    assert rm.order_quality(shuffled, make_task("add", p=11)) < 0.8
    line = np.stack([np.arange(10.0) * -2, np.zeros(10)], 1)
    assert rm.order_quality(line, make_task("nonmod-add", p=10)) == pytest.approx(1.0)


def test_tsne_and_pca2d_coordinates():
    task = make_task("add", p=17)
    emb = clock(17, [2])
    df = analyses.compute(emb, ["pca2d", "tsne"], task=task)
    assert {"pca2d_x0", "pca2d_y16", "tsne_x0", "tsne_y16"} <= set(df.columns)
    xy = np.array([[df[f"pca2d_x{k}"].iloc[0], df[f"pca2d_y{k}"].iloc[0]] for k in range(17)])
    assert np.allclose(np.linalg.norm(xy, axis=1), np.linalg.norm(xy, axis=1).mean())  # a circle stays one
