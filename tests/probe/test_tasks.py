import numpy as np
import pytest

from probe.errors import ProbeError
from probe.tasks import TASKS, make_split, make_task, read_group_csv


def test_modular_addition_table_and_sizes():
    t = make_task("add", p=113)
    assert t.n_samples == 113 * 113 and t.n_classes == 113 and t.modulus == 113
    a, b = t.inputs[:, 0], t.inputs[:, 1]
    assert np.array_equal(t.labels, (a + b) % 113)


def test_division_excludes_zero_divisor_and_inverts():
    t = make_task("div", p=7)
    assert t.n_samples == 7 * 6
    a, b, c = t.inputs[:, 0], t.inputs[:, 1], t.labels
    assert np.all(b != 0) and np.array_equal((c * b) % 7, a)


def test_products_without_zero_b_are_lee_et_al_s_equations():
    """Lee et al. 2024's main.py: a * b mod p for 0 <= a < p, 0 < b < p; p = 97 gives 9,312 equations,
    split in halves of 4,656."""
    t = make_task("mul-b-nonzero", p=97)
    a, b = t.inputs[:, 0], t.inputs[:, 1]
    assert t.n_samples == 97 * 96 == 9312 and t.n_classes == 97 and t.modulus == 97 and not t.commutative
    assert np.all(b != 0) and set(a.tolist()) == set(range(97)) and np.array_equal(t.labels, (a * b) % 97)
    assert make_split(t.n_samples, 0.5, 0).sizes == (4656, 4656)
    assert make_task("mul-b-nonzero", p=12).n_samples == 12 * 11  # no prime needed: it does not divide
    assert "Lee et al. 2024" in TASKS.get("mul-b-nonzero").description


def test_liu_nonmodular_addition_unordered_pairs():
    t = make_task("nonmod-add", p=10)
    assert t.n_samples == 55 and t.n_classes == 19
    assert np.all(t.inputs[:, 0] <= t.inputs[:, 1])
    assert make_task("nonmod-add", p=10, ordered=True).n_samples == 100


@pytest.mark.parametrize("name", [n for n, kind in TASKS.items() if kind.modular])
def test_all_modular_tasks_build(name):
    t = make_task(name, p=5)
    assert t.labels.min() >= 0 and t.labels.max() < 5


def test_permutation_group_composition_is_associative():
    t = make_task("perm", n=3)
    T = t.table
    assert T.shape == (6, 6) and not t.commutative
    assert all(T[T[a, b], c] == T[a, T[b, c]] for a in range(6) for b in range(6) for c in range(6))


@pytest.mark.parametrize("name,order", [("S3", 6), ("D4", 8), ("Q8", 8), ("A4", 12)])
def test_shipped_group_tables_are_groups(name, order):
    t = make_task("group", group=name)
    T = t.table
    assert T.shape == (order, order)
    assert all(len(set(row)) == order for row in T)  # Latin square
    assert all(T[T[a, b], c] == T[a, T[b, c]] for a in range(order) for b in range(order) for c in range(order))


def test_group_csv_that_is_not_closed_is_an_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("o,e,a\ne,e,a\na,a,x\n")
    with pytest.raises(ProbeError, match="not closed"):
        read_group_csv(bad)
    with pytest.raises(ProbeError, match="not closed"):
        make_task("group", group=str(bad))


def test_unknown_group_lists_shipped_tables():
    with pytest.raises(ProbeError, match="shipped: A4, D4, D59, D9, Q8, S3"):
        make_task("group", group="Z99")


def test_invalid_parameters_are_clear_errors():
    with pytest.raises(ProbeError, match="prime"):
        make_task("div", p=12)
    with pytest.raises(ProbeError, match="unknown task 'pow'.*valid"):
        make_task("pow", p=5)
    with pytest.raises(ProbeError, match=r"train_fraction must be in \(0, 1\]"):
        make_split(10, 1.5, 0)
    with pytest.raises(ProbeError, match=r"train_fraction must be in \(0, 1\]"):
        make_split(10, 0.0, 0)


def test_split_is_seeded_disjoint_and_complete():
    s1, s2 = make_split(100, 0.3, 7), make_split(100, 0.3, 7)
    assert np.array_equal(s1.train, s2.train)
    assert s1.sizes == (30, 70)
    assert not set(s1.train) & set(s1.val)
    assert sorted(set(s1.train) | set(s1.val)) == list(range(100))
    assert not np.array_equal(make_split(100, 0.3, 8).train, s1.train)
    assert make_split(55, 0.5, 0, n_train=45).sizes == (45, 10)


def test_digits_task_uses_bundled_data():
    t = make_task("digits")
    assert t.inputs.shape == (1797, 64) and t.n_classes == 10 and not t.is_table


def test_a_prime_is_needed_only_by_the_operations_that_divide():
    from probe.config import TrainConfig

    dividing = [n for n, kind in TASKS.items() if kind.modular and kind.op.needs_prime]
    assert dividing == ["div", "mix1"]
    for name in dividing:
        for build in (lambda: make_task(name, p=12), lambda: TrainConfig(task=name, p=12)):
            with pytest.raises(ProbeError, match=rf"task '{name}' divides.*prime p.*got p=12 = 2 x 6") as err:
                build()
            assert "\n" not in str(err.value)
        assert make_task(name, p=13).n_samples == 13 * 12
    # 3 has no inverse mod 9: the operations that divide are undefined there, the others are not
    assert not any((3 * b) % 9 == 1 for b in range(9))
    for name, kind in TASKS.items():
        if kind.modular and not kind.op.needs_prime:
            t = make_task(name, p=12)
            assert TrainConfig(task=name, p=12).p == 12 and t.modulus == 12
            assert t.n_samples == (12 * 11 if kind.op.b_nonzero else 144)
            a, b = t.inputs[:, 0], t.inputs[:, 1]
            assert np.array_equal(t.labels, kind.op.fn(a, b, 12) % 12)
    a, b = make_task("mul", p=12).inputs.T
    assert np.array_equal(make_task("mul", p=12).labels, (a * b) % 12)


@pytest.fixture
def xor_task(monkeypatch):
    """A task registered from outside the package: bitwise XOR on 0..p-1 (p a power of two)."""
    from probe.tasks import TaskKind, _table_task

    def check(p=None, **_):
        if p is None or p < 2 or p & (p - 1):
            raise ProbeError(f"task 'xor' needs p a power of two, got p={p}", param="p")

    def build(p=None, ordered=None, **_):
        check(p)
        a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
        return _table_task({"name": "xor", "p": p, "ordered": True}, (a ^ b).astype(np.int64),
                           tuple(str(k) for k in range(p)), p, True, True, modulus=None)

    assert "xor" not in TASKS
    monkeypatch.setitem(TASKS._items, "xor", TaskKind("xor", "a XOR b", build, check))
    return "xor"


def test_a_task_registered_elsewhere_is_accepted_built_and_trained(xor_task, tmp_path):
    from probe.config import TrainConfig
    from probe.run import load_run
    from probe.train.config import load_config
    from probe.train.loop import train

    with pytest.raises(ProbeError, match="power of two"):
        TrainConfig(task=xor_task, p=12)
    cfg = load_config("nanda-modadd", overrides={"task": xor_task, "p": "8", "steps": "4", "model.d_model": "8",
                                                "model.n_heads": "2", "model.d_mlp": "16", "checkpoint.every": "2"})
    assert cfg.task == xor_task and cfg.p == 8
    train(cfg, tmp_path / "run", progress=False)
    with load_run(tmp_path / "run") as run:
        a, b = run.task.inputs.T
        assert run.task.name == xor_task and np.array_equal(run.task.labels, a ^ b)
        assert run.steps.tolist()[-1] == 4
