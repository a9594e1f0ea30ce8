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
    with pytest.raises(ProbeError, match="shipped: A4, D4, Q8, S3"):
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
