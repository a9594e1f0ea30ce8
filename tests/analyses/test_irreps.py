"""Irreducible representations of finite groups (Chughtai, Chan and Nanda 2023): the representations
themselves on every shipped group and S_n, known character tables, the reduction to the Fourier basis
on Z_p, properties (relabelling, rotations), the key-irrep rules, logit shares, refusals, and the
three metrics through the runner on trained group runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import probe
from probe import analyses
from probe.analyses import fourier as fr
from probe.analyses import irreps as ir
from probe.analyses.applies import group_task, group_task_grid
from probe.cli import main
from probe.errors import ProbeError
from probe.tasks import make_task
from probe.train.config import load_config
from probe.train.loop import train

GROUPS = {"S3": ("group", {"group": "S3"}), "D4": ("group", {"group": "D4"}), "Q8": ("group", {"group": "Q8"}),
          "A4": ("group", {"group": "A4"}), "S_3": ("perm", {"n": 3}), "S_4": ("perm", {"n": 4}),
          "S_5": ("perm", {"n": 5})}


def table_of(name: str) -> np.ndarray:
    kind, kw = GROUPS[name]
    return make_task(kind, **kw).table


def cyclic(p: int) -> np.ndarray:
    return np.add.outer(np.arange(p), np.arange(p)) % p


def relabel(table: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """The same group with element ``a`` renamed ``perm[a]``."""
    out = np.empty_like(table)
    out[perm[:, None], perm[None, :]] = perm[table]
    return out


# the representations -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(GROUPS))
def test_characters_are_orthonormal_by_rows_and_columns(name):
    rec = ir.irreps(table_of(name))
    n = rec.order
    sizes = np.array([len(c) for c in rec.classes])
    chi = rec.characters
    assert len(rec.names) == len(rec.classes)  # one irrep per conjugacy class
    assert sum(d * d for d in rec.dims) == n
    np.testing.assert_allclose((chi * sizes) @ chi.conj().T / n, np.eye(len(rec.names)), atol=1e-10)
    np.testing.assert_allclose(chi.conj().T @ chi, np.diag(n / sizes), atol=1e-9)  # column orthogonality
    assert sorted(c for cls in rec.classes for c in cls) == list(range(n))


@pytest.mark.parametrize("name", list(GROUPS))
def test_every_irrep_is_a_unitary_homomorphism(name):
    t = table_of(name)
    rec = ir.irreps(t)
    for rho, kind, d in zip(rec.matrices, rec.kinds, rec.dims):
        assert rho.shape == (rec.order, d, d)
        if kind == "real":
            assert not np.iscomplexobj(rho)  # real irreps in a real orthogonal form
        np.testing.assert_allclose(np.einsum("gij,gkj->gik", rho, rho.conj()),
                                   np.broadcast_to(np.eye(d), rho.shape), atol=1e-10)
        np.testing.assert_allclose(np.einsum("aij,bjk->abik", rho, rho), rho[t], atol=1e-10)  # rho(a)rho(b)=rho(ab)
        np.testing.assert_allclose(rho[rec.structure.identity], np.eye(d), atol=1e-10)


@pytest.mark.parametrize("name", list(GROUPS))
def test_the_basis_is_orthonormal_in_blocks_of_the_irreps(name):
    t = table_of(name)
    rec = ir.irreps(t)
    b, labels = ir.irrep_basis(t)
    np.testing.assert_allclose(b @ b.T, np.eye(rec.order), atol=1e-10)
    assert not np.iscomplexobj(b)
    assert [labels.count(lab) for lab in rec.labels] == list(rec.block_sizes)
    assert list(dict.fromkeys(labels)) == list(rec.labels) and rec.labels[0] == "1a"
    np.testing.assert_allclose(b[0], np.full(rec.order, 1 / np.sqrt(rec.order)), atol=1e-12)  # trivial first


@pytest.mark.parametrize("name,dims,kinds", [
    ("S3", (1, 1, 2), ("real",) * 3),
    ("D4", (1, 1, 1, 1, 2), ("real",) * 5),
    ("Q8", (1, 1, 1, 1, 2), ("real",) * 4 + ("quaternionic",)),
    ("A4", (1, 1, 1, 3), ("real", "complex", "complex", "real")),
    ("S_4", (1, 1, 2, 3, 3), ("real",) * 5),
    ("S_5", (1, 1, 4, 4, 5, 5, 6), ("real",) * 7),
])
def test_known_dimensions_and_types(name, dims, kinds):
    rec = ir.irreps(table_of(name))
    assert rec.dims == dims and rec.kinds == kinds
    t = table_of(name)
    for i in range(len(rec.names)):  # Frobenius-Schur indicator (1/|G|) sum chi(g^2): 1, 0, -1 by type
        nu = rec.character(i)[np.diagonal(t)].sum() / rec.order
        assert nu == pytest.approx({"real": 1, "complex": 0, "quaternionic": -1}[rec.kinds[i]], abs=1e-10)


def test_character_table_of_s3_and_q8():
    rec = ir.irreps(table_of("S3"))
    # classes of the shipped table: identity, the three transpositions, the two 3-cycles
    assert [len(c) for c in rec.classes] == [1, 3, 2]
    np.testing.assert_allclose(rec.characters, [[1, 1, 1], [1, -1, 1], [2, 0, -1]], atol=1e-12)
    q8 = ir.irreps(table_of("Q8"))
    assert [len(c) for c in q8.classes] == [1, 1, 2, 2, 2]
    np.testing.assert_allclose(q8.characters[-1], [2, -2, 0, 0, 0], atol=1e-12)
    assert q8.block_sizes == (1, 1, 1, 1, 4)  # the quaternionic 2-dim irrep spans a 4-dim real subspace
    a4 = ir.irreps(table_of("A4"))
    assert a4.names == ("1a", "1b", "1b*", "3a") and a4.labels == ("1a", "1b", "3a")
    np.testing.assert_allclose(a4.characters[2], a4.characters[1].conj())
    assert a4.block_sizes == (1, 2, 9)


# Z_p: Nanda et al.'s Fourier basis --------------------------------------------------------------------
@pytest.mark.parametrize("p", [7, 13])
def test_cyclic_irreps_are_the_fourier_basis(p):
    t = cyclic(p)
    rec = ir.irreps(t)
    assert rec.kinds[1:] == ("complex",) * (p - 1) and len(rec.labels) == (p + 1) // 2
    b, _ = ir.irrep_basis(t)
    basis, _ = fr.fourier_basis(p)
    np.testing.assert_allclose(b, basis, atol=1e-12)  # rows [1, cos 1, sin 1, cos 2, ...] in order
    w = np.random.default_rng(p).normal(size=(p, 9))
    norms = ir.irrep_norms_of(w, ir.irrep_basis(t))
    np.testing.assert_allclose(norms[1:], fr.frequency_norms(w, p), rtol=1e-12)
    np.testing.assert_allclose((norms ** 2).sum(), (w ** 2).sum(), rtol=1e-12)
    k = np.arange(1, (p + 1) // 2)  # label j is the pair chi_{+-k}, chi_k(1) = exp(2 pi i k / p)
    np.testing.assert_allclose(rec.characters[1::2, 1], np.exp(2j * np.pi * k / p), atol=1e-12)


def test_irrep_norms_equal_fourier_norms_on_the_shipped_modular_run(modadd):
    steps = [int(modadd.steps[0]), int(modadd.steps[len(modadd.steps) // 2]), int(modadd.steps[-1])]
    four = analyses.compute(modadd, "fourier_norms", steps=steps, parts="we,wu", cache=False)
    irr = analyses.compute(modadd, "irrep_norms", steps=steps, cache=False)
    labels = ir.irreps(modadd.task.table).labels
    for k, lab in enumerate(labels[1:], start=1):
        np.testing.assert_allclose(irr[f"irrep_norm_embed_{lab}"], four[f"we_{k}"], rtol=1e-10)
        np.testing.assert_allclose(irr[f"irrep_norm_unembed_{lab}"], four[f"wu_{k}"], rtol=1e-10)
    # the energy rule is the Fourier energy rule: the same key frequencies, in the same order
    freqs = analyses.compute(modadd, "key_freqs", steps="last", cache=False)["key_freqs"].iloc[0].split(",")
    keys = analyses.compute(modadd, "key_irreps", steps="last", cache=False)["key_irreps"].iloc[0].split(",")
    assert keys == [labels[int(k)] for k in freqs]
    share = analyses.compute(modadd, "irrep_logit_share", steps=steps, cache=False)
    assert share["irrep_logit_fve"].iloc[0] < 0.01 < 0.9 < share["irrep_logit_fve"].iloc[-1]  # GCR form after grokking


# properties ------------------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None)
@given(name=st.sampled_from(["S3", "D4", "Q8", "A4", "S_4"]), seed=st.integers(0, 10_000))
def test_relabelling_the_elements_permutes_the_result_consistently(name, seed):
    t = table_of(name)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(t))
    t2 = relabel(t, perm)
    rec, rec2 = ir.irreps(t), ir.irreps(t2)
    assert rec2.dims == rec.dims and rec2.kinds == rec.kinds and rec2.block_sizes == rec.block_sizes
    # each real irrep of the relabelled group is one of the original's, read through the renaming
    match = {}
    for lab2 in rec2.labels:
        chi2 = rec2.real_character(lab2)[perm]
        hits = [lab for lab in rec.labels if np.allclose(rec.real_character(lab), chi2, atol=1e-9)]
        assert len(hits) == 1
        match[lab2] = hits[0]
    assert sorted(match.values()) == sorted(rec.labels)
    w = rng.normal(size=(len(t), 5))
    w2 = np.empty_like(w)
    w2[perm] = w
    norms = dict(zip(rec.labels, ir.irrep_norms_of(w, ir.irrep_basis(t))))
    norms2 = dict(zip(rec2.labels, ir.irrep_norms_of(w2, ir.irrep_basis(t2))))
    for lab2, lab in match.items():
        assert norms2[lab2] == pytest.approx(norms[lab], rel=1e-9)


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(["S3", "Q8", "A4", "S_4"]), seed=st.integers(0, 10_000), width=st.integers(1, 12))
def test_norms_are_invariant_under_a_rotation_of_the_embedding_dimension(name, seed, width):
    basis = ir.irrep_basis(table_of(name))
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(len(basis[0]), width))
    q, _ = np.linalg.qr(rng.normal(size=(width, width)))
    np.testing.assert_allclose(ir.irrep_norms_of(w @ q, basis), ir.irrep_norms_of(w, basis), rtol=1e-9)
    # the unembedding orientation gives the same numbers
    np.testing.assert_allclose(ir.irrep_norms_of(w.T, basis, axis=-1), ir.irrep_norms_of(w, basis), rtol=1e-12)


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(["S3", "D4", "A4", "S_4", "S_5"]), seed=st.integers(0, 10_000),
       width=st.sampled_from([8, 64, 128]))
def test_random_embeddings_have_no_key_irrep(name, seed, width):
    t = table_of(name)
    rec = ir.irreps(t)
    w = np.random.default_rng(seed).normal(size=(len(t), width))
    norms = ir.irrep_norms_of(w, ir.irrep_basis(t))
    assert ir.key_irreps(norms, rec.labels, "energy", sizes=rec.block_sizes, width=width) == []


# key irreps and logit shares ---------------------------------------------------------------------------
def test_key_irrep_rules_on_constructed_embeddings():
    t = table_of("S_4")
    rec = ir.irreps(t)
    b, labels = ir.irrep_basis(t)
    rng = np.random.default_rng(0)
    rows = [i for i, lab in enumerate(labels) if lab == "3a"]
    w = b[rows].T @ rng.normal(size=(len(rows), 32)) + 0.01 * rng.normal(size=(24, 32)) + 5.0  # 3a, plus a mean
    norms = ir.irrep_norms_of(w, (b, labels))
    assert ir.key_irreps(norms, rec.labels, "energy", sizes=rec.block_sizes, width=32) == ["3a"]
    assert ir.key_irreps(norms, rec.labels, "share", 0.05) == ["3a"]
    assert ir.key_irreps(norms, rec.labels, "share", 0.9999) == []
    # the fixed share admits the big irreps of random weights; the energy rule does not
    noise = ir.irrep_norms_of(rng.normal(size=(24, 32)), (b, labels))
    assert set(ir.key_irreps(noise, rec.labels, "share", 0.05)) >= {"3a", "3b"}
    with pytest.raises(ProbeError):
        ir.key_irreps(norms, rec.labels, "energy")
    # on Z_p the energy thresholds are the Fourier rule's
    p = 13
    limits = ir.energy_thresholds([2] * ((p - 1) // 2), 16, 1e-6)
    np.testing.assert_allclose(limits, fr.energy_share_threshold((p - 1) // 2, 16, 1e-6), rtol=1e-12)


def gcr_logits(t: np.ndarray, weights: dict[str, float], noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Chughtai et al.'s GCR logits sum_rho w_rho tr(rho(a) rho(b) rho(c^{-1})) built from the matrices."""
    rec = ir.irreps(t)
    n = len(t)
    inv = rec.structure.inverse
    out = np.zeros((n, n, n))
    for name, wgt in weights.items():
        rho = rec.matrices[rec.names.index(name)]
        ab = np.einsum("aij,bjk->abik", rho, rho)
        out += wgt * np.einsum("abij,cji->abc", ab, rho[inv]).real
    return out + noise * np.random.default_rng(seed).normal(size=out.shape) + np.arange(n)[:, None, None]


@pytest.mark.parametrize("name", ["S3", "A4", "S_4"])
def test_logit_shares_of_the_gcr_algorithm(name):
    t = table_of(name)
    rec = ir.irreps(t)
    big = rec.labels[-1]
    one = gcr_logits(t, {big: rec.dims[rec.names.index(big)]})
    share = ir.logit_variance_share(one, t)
    assert share[-1] == pytest.approx(1.0) and share[:-1].sum() == pytest.approx(0.0, abs=1e-12)
    out = ir.logit_variance_share(one, t, "output")
    assert out[-1] == pytest.approx(1.0)
    mixed = gcr_logits(t, {big: 2.0, rec.labels[1]: 1.0}, noise=0.3)
    share = ir.logit_variance_share(mixed, t)
    assert 0 < share.sum() < 1 and share[0] == 0.0
    assert ir.logit_variance_share(mixed, t, "output").sum() == pytest.approx(1.0)
    # against the cosine similarity with the full character cube, computed directly
    n = len(t)
    a, b, c = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    g = t[t[a, b], rec.structure.inverse[c]]
    x = mixed - mixed.mean(axis=2, keepdims=True)
    for i, lab in enumerate(rec.labels[1:], start=1):
        cube = rec.real_character(lab)[g]
        sim = (x * cube).sum() / np.sqrt((x * x).sum() * (cube * cube).sum())
        assert ir.logit_character_similarity(mixed, t)[i] == pytest.approx(sim, abs=1e-12)
    assert ir.key_irreps(ir.logit_character_similarity(mixed, t), rec.labels, "logit")[0] == big


# refusals --------------------------------------------------------------------------------------------
def test_non_groups_and_large_groups_are_refused_in_one_line(toy, capsys):
    code = main(["analyze", str(toy), "--metric", "irrep_norms", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not a group" in err, err
    for task, needle in ((make_task("nonmod-add", p=10), "not a group"), (make_task("sub", p=7), "not associative"),
                         (make_task("mul", p=7), "inverse"), (make_task("add", p=211), "order <= 200"),
                         (make_task("digits"), "Cayley table")):
        reason = group_task(task)
        assert reason and needle in reason and "\n" not in reason, (task.describe(), reason)
    assert group_task(make_task("add", p=199)) is None and group_task(make_task("perm", n=5)) is None
    assert "ordered pair" in group_task_grid(make_task("add", p=7, ordered=False))
    with pytest.raises(ProbeError, match="order <= 200; this group has order 211"):
        ir.irreps(cyclic(211))
    with pytest.raises(ProbeError, match="not a group"):
        ir.irreps(np.zeros((3, 3), dtype=int))


# through the runner, on trained group runs -------------------------------------------------------------
TINY = {"steps": "20", "checkpoint.schedule": "every", "checkpoint.every": "5", "checkpoint.metrics_every": "5"}


@pytest.fixture(scope="module")
def group_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("groups")
    runs = {
        # Liu et al.'s toy model on S3 with matrix embeddings (App. H), regression to random targets
        "toy-s3": load_config("liu-toy-s3", overrides={**TINY, "model.decoder": "8"}),
        # the same with class logits
        "toy-s3-cls": load_config("liu-toy-s3", overrides={**TINY, "model.decoder": "8",
                                                           "model.objective": "cross_entropy"}),
        # the concatenating MLP on A4 (a complex pair of irreps)
        "mlp-a4": load_config("kitouni-mlp", overrides={**TINY, "task": "group", "group": "A4", "p": None,
                                                         "model.d_embed": "16", "model.hidden": "32"}),
    }
    out = {}
    for name, cfg in runs.items():
        train(cfg, root / name, progress=False)
        out[name] = root / name
    return out


def test_metrics_through_the_runner_on_trained_group_runs(group_runs):
    for name in ("toy-s3-cls", "mlp-a4"):
        with probe.load_run(group_runs[name]) as run:
            rec = ir.irreps(run.task.table)
            df = analyses.compute(run, ["irrep_norms", "key_irreps", "irrep_logit_share"], cache=False)
            assert df["step"].tolist() == [0, 5, 10, 15, 20]
            emb = run.embeddings("last").numpy().reshape(rec.order, -1).astype(np.float64)
            sq = sum(df[f"irrep_norm_embed_{lab}"].iloc[-1] ** 2 for lab in rec.labels)
            assert sq == pytest.approx((emb ** 2).sum(), rel=1e-6)  # Parseval over the irreps' blocks
            assert {f"irrep_norm_unembed_{lab}" for lab in rec.labels} <= set(df.columns)
            shares = df[[f"irrep_logit_share_{lab}" for lab in rec.labels[1:]]]
            assert ((shares >= 0) & (shares <= 1)).all().all()
            np.testing.assert_allclose(shares.sum(axis=1), df["irrep_logit_fve"], rtol=1e-12)
            assert (df["irrep_logit_fve"] <= 1 + 1e-12).all()
            assert df["key_irreps"].nunique() == 1  # chosen once, at the last checkpoint
            notes = " ".join(df.attrs["probe"]["key_irreps"]["notes"])
            assert "at checkpoint last" in notes
            logit = analyses.compute(run, "key_irreps", irrep_rule="logit", steps="last", cache=False)
            assert set(filter(None, logit["key_irreps"].iloc[0].split(","))) <= set(rec.labels[1:])


def test_regression_runs_report_embeddings_only_and_refuse_logits(group_runs, capsys):
    with probe.load_run(group_runs["toy-s3"]) as run:
        df = analyses.compute(run, "irrep_norms", cache=False)
        assert not [c for c in df.columns if "unembed" in c]
        assert any("embedding norms only" in n for n in df.attrs["probe"]["irrep_norms"]["notes"])
        with pytest.raises(ProbeError, match="no unembedding to decompose"):
            analyses.compute(run, "irrep_norms", irrep_parts="unembed", cache=False)
    code = main(["analyze", str(group_runs["toy-s3"]), "--metric", "irrep_logit_share", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "class logits" in err, err


def test_plain_arrays_of_a_group_get_embedding_norms():
    task = make_task("group", group="Q8")
    emb = np.random.default_rng(0).normal(size=(3, 8, 4))
    df = analyses.compute(emb, ["irrep_norms", "key_irreps"], task=task)
    np.testing.assert_allclose(df["irrep_norm_embed_2a"], ir.irrep_norms_of(emb, ir.irrep_basis(task.table))[:, -1])
    with pytest.raises(ProbeError, match="weights"):
        analyses.compute(emb, "irrep_norms", task=task, irrep_parts="embed,unembed")
