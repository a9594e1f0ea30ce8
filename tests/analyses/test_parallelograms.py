"""Parallelograms, RQI, Acc-hat and the Alexander bound: analytic cases, paper examples, properties,
and fast-versus-reference agreement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.analyses import parallelograms as pg
from probe.errors import ProbeError
from probe.tasks import make_task


def _indices(task, pairs):
    rows = [tuple(r) for r in task.inputs.tolist()]
    return np.array(sorted(rows.index(tuple(p)) for p in set(pairs)))


def _rest(task, idx):
    return np.setdiff1d(np.arange(task.n_samples), idx)


# --- P0 --------------------------------------------------------------------------------------------
def test_p0_counts_match_definition():
    task = make_task("nonmod-add", p=10)
    p0 = pg.Parallelograms.from_labels(task.labels)
    _, counts = np.unique(task.labels, return_counts=True)
    assert len(p0) == int(np.sum(counts * (counts - 1) // 2))
    assert np.all(task.labels[p0.first] == task.labels[p0.second])
    assert np.all(p0.first != p0.second)
    assert len(p0) == 70  # p = 10 addition over unordered pairs


def test_p0_modular_p97_ordered_has_451632_quadruples():
    task = make_task("add", p=97)
    assert len(pg.Parallelograms.from_labels(task.labels)) == 451_632


# --- RQI analytic cases --------------------------------------------------------------------------------
def test_linear_representation_has_rqi_one():
    task = make_task("nonmod-add", p=10)
    k = np.arange(10)[:, None]
    emb = np.array([[0.3, -2.0, 1.0]]) + k * np.array([[1.5, 0.2, -0.7]])
    assert pg.rqi(emb, task.inputs, task.labels) == 1.0


def test_random_embeddings_have_rqi_near_zero():
    task = make_task("nonmod-add", p=20)
    emb = np.random.default_rng(0).normal(size=(20, 16))
    assert pg.rqi(emb, task.inputs, task.labels) < 0.01


def test_matrix_representation_of_s3_has_rqi_one():
    task = make_task("perm", n=3)
    import itertools

    mats = []
    for perm in itertools.permutations(range(3)):
        m = np.zeros((3, 3))
        m[np.arange(3), perm] = 1.0
        mats.append(m)
    # the task's composition convention decides which of E or E^T is the homomorphism
    t = task.table
    emb = np.stack(mats)
    if not all(np.allclose(emb[a] @ emb[b], emb[t[a, b]]) for a in range(6) for b in range(6)):
        emb = emb.transpose(0, 2, 1)
    assert all(np.allclose(emb[a] @ emb[b], emb[t[a, b]]) for a in range(6) for b in range(6))
    assert pg.rqi(emb, task.inputs, task.labels) == 1.0
    noisy = emb + np.random.default_rng(1).normal(scale=0.3, size=emb.shape)
    assert pg.rqi(noisy, task.inputs, task.labels) < 0.2


def test_grokking_squared_convention_counts_mean_square_residual():
    task = make_task("nonmod-add", p=10)
    rng = np.random.default_rng(3)
    emb = np.arange(10)[:, None] * np.array([[1.0, 2.0]]) + rng.normal(scale=0.05, size=(10, 2))
    p0 = pg.Parallelograms.from_labels(task.labels)
    norm = (emb - emb.mean(0)) / emb.std(0, ddof=1)
    v = norm[task.inputs[:, 0]] + norm[task.inputs[:, 1]]
    expected = np.mean([np.mean((v[s] - v[t]) ** 2) < 0.01 for s, t in zip(p0.first, p0.second)])
    assert pg.rqi(emb, task.inputs, task.labels, delta=0.01, convention="grokking-squared") == pytest.approx(expected)
    with pytest.raises(ProbeError, match="unknown RQI convention"):
        pg.rqi(emb, task.inputs, task.labels, convention="nope")


def test_constant_embeddings_are_a_clear_error():
    task = make_task("nonmod-add", p=5)
    with pytest.raises(ProbeError, match="sigma = 0"):
        pg.rqi(np.ones((5, 3)), task.inputs, task.labels)


# --- invariances (property tests) -------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.floats(-100, 100), scale=st.floats(0.01, 100),
       noise=st.sampled_from([0.0, 0.002, 0.01, 0.05]))
def test_rqi_invariant_under_translation_scale_rotation(seed, shift, scale, noise):
    task = make_task("nonmod-add", p=8)
    rng = np.random.default_rng(seed)
    d = 4
    emb = np.arange(8)[:, None] * rng.normal(size=(1, d)) + rng.normal(scale=noise + 1e-12, size=(8, d))
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    base = pg.rqi(emb, task.inputs, task.labels, delta=0.05)
    moved = pg.rqi(scale * emb @ q + shift, task.inputs, task.labels, delta=0.05)
    # only pairs within rounding of the threshold could flip; none do for these draws
    assert moved == pytest.approx(base, abs=1.5 / 70)


# --- fast == reference ---------------------------------------------------------------------------------
@pytest.mark.parametrize("task_args", [("nonmod-add", {"p": 12}), ("add", {"p": 13}), ("perm", {"n": 3}),
                                       ("mul", {"p": 11})])
@pytest.mark.parametrize("kind", ["random", "structured"])
def test_fast_formed_equals_reference(task_args, kind):
    name, kw = task_args
    task = make_task(name, **kw)
    rng = np.random.default_rng(7)
    n = task.n_symbols
    if task.name == "perm":
        emb = rng.normal(size=(n, 3, 3))
    elif kind == "random":
        emb = rng.normal(size=(n, 5))
    else:
        emb = np.arange(n)[:, None] * rng.normal(size=(1, 5)) + rng.normal(scale=0.003, size=(n, 5))
    p0 = pg.Parallelograms.from_labels(task.labels)
    vec = pg.sample_vectors(pg.normalize(emb), task.inputs)
    dists = np.sqrt(np.sum((vec[p0.first] - vec[p0.second]) ** 2, axis=1))
    for delta in (0.01, float(np.median(dists)), float(dists[0])):  # includes a pair exactly at the threshold
        fast = pg.formed(vec, p0, delta)
        ref = pg.formed_reference(vec, p0, delta)
        assert np.array_equal(fast, ref)
        if emb.ndim == 2:
            norm = pg.normalize(emb)
            assert np.array_equal(pg.formed_sum(norm, task.inputs, p0, delta), ref)
            assert np.array_equal(pg.formed_sum(norm, task.inputs, p0, delta, mean_square=True),
                                  pg.formed_reference(vec, p0, delta, mean_square=True))
        assert np.array_equal(pg.formed(vec, p0, delta, mean_square=True),
                              pg.formed_reference(vec, p0, delta, mean_square=True))


# --- Acc-hat -------------------------------------------------------------------------------------------
def test_acc_hat_follows_eq_12():
    task = make_task("nonmod-add", p=6)
    p0 = pg.Parallelograms.from_labels(task.labels)
    train = _indices(task, [(0, 4), (2, 2)])
    mask = np.zeros(len(p0), dtype=bool)
    # form only {(0,4),(1,3)}: (1,3) joins D-bar through (0,4); (2,2)'s class forms nothing
    q = [i for i in range(len(p0)) if {tuple(task.inputs[p0.first[i]]), tuple(task.inputs[p0.second[i]])}
         == {(0, 4), (1, 3)}]
    mask[q] = True
    assert pg.acc_hat(p0, mask, train) == pytest.approx(3 / 21)
    assert pg.acc_hat(p0, mask, train, _rest(task, train)) == pytest.approx(1 / 19)
    full = np.ones(len(p0), dtype=bool)
    assert pg.acc_hat(p0, full, train) == pytest.approx(
        np.isin(task.labels, task.labels[train]).mean())


# --- Alexander principle (Liu App. E) -----------------------------------------------------------------
def test_liu_appendix_e_p4_example_implies_all_three_parallelograms():
    task = make_task("nonmod-add", p=4)
    train = _indices(task, [(0, 2), (1, 1), (0, 3), (1, 2), (1, 3), (2, 2)])
    p0 = pg.Parallelograms.from_labels(task.labels)
    bound = pg.alexander(task.inputs, p0, train, _rest(task, train), 4)
    assert len(p0) == 3 and bound.implied.sum() == 3 and bound.rqi_bar == 1.0


def test_liu_appendix_c_p6_example_has_two_degrees_of_freedom():
    from probe.analyses.effective import effective_theory

    task = make_task("nonmod-add", p=6)
    samples = [(0, 4), (1, 3), (1, 5), (2, 4), (0, 2), (1, 1), (2, 4), (3, 3)]  # D1..D8 (D4 = D7)
    assert effective_theory(task, _indices(task, samples)).dof == 2
    assert effective_theory(task, _indices(task, samples[:4])).dof > 2  # before D5..D8: not yet unique


def test_liu_appendix_c_first_step_implies_0523():
    task = make_task("nonmod-add", p=6)
    train = _indices(task, [(0, 4), (1, 3), (1, 5), (2, 4)])
    p0 = pg.Parallelograms.from_labels(task.labels)
    bound = pg.alexander(task.inputs, p0, train, _rest(task, train), 6)
    pairs = {frozenset({tuple(task.inputs[s]), tuple(task.inputs[t])})
             for s, t, m in zip(p0.first, p0.second, bound.implied) if m}
    assert frozenset({(0, 5), (2, 3)}) in pairs  # E0 + E5 = E2 + E3, derived in App. C
    assert frozenset({(0, 5), (1, 4)}) not in pairs


@pytest.mark.parametrize("name,p,frac,seed", [("nonmod-add", 9, 0.3, 0), ("nonmod-add", 9, 0.5, 1),
                                              ("add", 7, 0.3, 2), ("nonmod-add", 6, 0.2, 3)])
def test_alexander_projection_equals_rank_per_candidate(name, p, frac, seed):
    from probe.tasks import make_split

    task = make_task(name, p=p)
    split = make_split(task.n_samples, frac, seed)
    p0 = pg.Parallelograms.from_labels(task.labels)
    fast = pg.alexander(task.inputs, p0, split.train, split.val, p).implied
    assert np.array_equal(fast, pg.alexander_reference(task.inputs, p0, split.train, p))


def test_realised_parallelograms_of_an_ideal_model_respect_the_bound():
    # an ideal model realises exactly the ground state: RQI = RQI-bar when the training set is rich
    from probe.tasks import make_split

    task = make_task("nonmod-add", p=10)
    split = make_split(task.n_samples, 0.8, 0)
    p0 = pg.Parallelograms.from_labels(task.labels)
    bound = pg.alexander(task.inputs, p0, split.train, split.val, 10)
    emb = np.arange(10)[:, None] * 1.0
    assert pg.rqi(emb, task.inputs, task.labels) <= bound.rqi_bar + 1e-12
    assert bound.rqi_bar == 1.0
    # with P(D) = P0, D-bar is every sample whose label some training sample carries
    assert bound.acc_bar == pytest.approx(np.isin(task.labels, task.labels[split.train]).mean())


def test_torch_distance_path_equals_numpy():
    # the path used on a GPU, run here with torch on the CPU
    task = make_task("add", p=31)
    rng = np.random.default_rng(5)
    emb = np.arange(31)[:, None] * rng.normal(size=(1, 6)) + rng.normal(scale=0.01, size=(31, 6))
    p0 = pg.Parallelograms.from_labels(task.labels)
    norm = pg.normalize(emb)
    for delta in (0.01, 0.05, 0.5):
        assert np.array_equal(pg.formed_sum(norm, task.inputs, p0, delta, device="cpu"),
                              pg.formed_sum(norm, task.inputs, p0, delta))


# --- the compiled count of the sum-aggregation fast path ---------------------------------------------
@pytest.mark.parametrize("task_args", [("nonmod-add", {"p": 12}), ("add", {"p": 13}), ("mul", {"p": 11}),
                                       ("add", {"p": 31})])
@pytest.mark.parametrize("kind", ["random", "structured"])
def test_compiled_count_equals_reference(task_args, kind):
    name, kw = task_args
    task = make_task(name, **kw)
    rng = np.random.default_rng(11)
    n = task.n_symbols
    if kind == "random":
        emb = rng.normal(size=(n, 5))
    else:
        emb = np.arange(n)[:, None] * rng.normal(size=(1, 5)) + rng.normal(scale=0.003, size=(n, 5))
    p0 = pg.Parallelograms.from_labels(task.labels)
    norm = pg.normalize(emb)
    vec = pg.sample_vectors(norm, task.inputs)
    dists = np.sqrt(np.sum((vec[p0.first] - vec[p0.second]) ** 2, axis=1))
    for delta in (0.01, float(np.median(dists)), float(dists[0])):  # includes a pair exactly at the threshold
        for mean_square in (False, True):
            ref = int(pg.formed_reference(vec, p0, delta, mean_square=mean_square).sum())
            assert pg.count_sum(norm, task.inputs, p0, delta, mean_square) == ref
            assert pg.pair_distances_sum(norm, task.inputs, p0).count(delta, mean_square) == ref


def test_the_sum_distances_rounding_bound_covers_every_gram_term():
    """The recheck margin of a sum distance is relative to the magnitude of the Gram terms it adds up,
    not to ``|v_s|^2 + |v_t|^2``: on a line through the origin ``E_0 + E_11`` is near 0 while each term
    is of order 1, and a margin relative to the small norms missed a pair at the threshold on some CPUs."""
    task = make_task("nonmod-add", p=12)
    rng = np.random.default_rng(11)
    emb = np.arange(12)[:, None] * rng.normal(size=(1, 5)) + rng.normal(scale=0.003, size=(12, 5))
    p0 = pg.Parallelograms.from_labels(task.labels)
    norm = pg.normalize(emb)
    sc = pg.sum_classes(task.inputs, p0)
    g = norm @ norm.T
    terms = np.stack([np.abs(g.ravel()[i]) * w for i, w in zip(sc.gather, (2, 2, 2, 2, 1, 1, 2, 1, 1, 2))])
    magnitude = terms.sum(axis=0)
    small = pg.pair_distances_sum(norm, task.inputs, p0)
    assert np.all(small.scale >= magnitude * (1 - 1e-12))
    assert np.min((small.d2 + 1e-300) / magnitude) < 1e-5  # the case: terms far larger than the distance


def test_compiled_and_numpy_paths_agree(monkeypatch):
    task = make_task("add", p=23)
    rng = np.random.default_rng(3)
    emb = np.arange(23)[:, None] * rng.normal(size=(1, 4)) + rng.normal(scale=0.01, size=(23, 4))
    p0 = pg.Parallelograms.from_labels(task.labels)
    norm = pg.normalize(emb)
    compiled = pg.pair_distances_sum(norm, task.inputs, p0)
    counts = [pg.count_sum(norm, task.inputs, p0, d) for d in (0.01, 0.05, 0.5)]
    monkeypatch.setattr(pg, "_COMPILED", {pg._distances_loop: None, pg._count_loop: None})  # numba absent
    plain = pg.pair_distances_sum(norm, task.inputs, p0)
    assert np.array_equal(compiled.d2, plain.d2) and np.array_equal(compiled.scale, plain.scale)
    assert [pg.count_sum(norm, task.inputs, p0, d) for d in (0.01, 0.05, 0.5)] == counts
