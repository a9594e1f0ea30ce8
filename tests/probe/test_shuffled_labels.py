"""The ``labels`` config key (``task`` or ``shuffled``, with ``label_seed``): random labels that only a
memorising circuit can fit (Varma et al. 2023). A key added after runs existed: a config that leaves it
alone is stored exactly as before; a shuffled run stores its task spec and labels and is rebuilt and
checked from them; runs that share a labelling vectorise together."""

from __future__ import annotations

import numpy as np
import pytest

import probe
from probe.config import TrainConfig
from probe.errors import ProbeError
from probe.tasks import make_task, task_from_spec


def test_defaults_are_stored_as_before():
    cfg = TrainConfig()
    assert cfg.labels == "task" and cfg.label_seed == 0
    stored = cfg.to_dict()
    assert "labels" not in stored and "label_seed" not in stored
    assert TrainConfig.from_dict(stored) == cfg
    assert make_task("add", p=5).spec == {"name": "add", "p": 5, "ordered": True}  # the spec runs store


def test_shuffled_labels_permute_the_tasks_labels():
    true = make_task("add", p=11)
    shuffled = make_task("add", p=11, labels="shuffled", label_seed=3)
    np.testing.assert_array_equal(shuffled.inputs, true.inputs)
    assert np.bincount(shuffled.labels, minlength=11).tolist() == np.bincount(true.labels, minlength=11).tolist()
    assert (shuffled.labels != true.labels).mean() > 0.8
    assert shuffled.spec == {"name": "add", "p": 11, "ordered": True, "labels": "shuffled", "label_seed": 3}
    assert shuffled.modulus is None and not shuffled.commutative  # no Fourier analysis of random labels
    # the table holds what the run trains on
    assert (shuffled.table[shuffled.inputs[:, 0], shuffled.inputs[:, 1]] == shuffled.labels).all()
    again = task_from_spec(shuffled.spec)
    np.testing.assert_array_equal(again.labels, shuffled.labels)
    other = make_task("add", p=11, labels="shuffled", label_seed=4)
    assert not np.array_equal(other.labels, shuffled.labels)


@pytest.mark.parametrize("overrides, message", [
    ({"labels": "random"}, "labels='random': (valid: task, shuffled)"),
    ({"labels": True}, "labels"),  # YAML's `true` is a boolean, not a labelling
    ({"label_seed": 2}, "label_seed applies to labels=shuffled only"),
    ({"labels": "shuffled", "label_seed": -1}, "label_seed must be an integer"),
    ({"task": "group", "group": "S3", "p": None, "labels": "shuffled"}, "stores its own operation table"),
])
def test_bad_values_are_refused_in_one_line(overrides, message):
    with pytest.raises(ProbeError) as exc:
        TrainConfig.from_dict(overrides)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_a_shuffled_run_stores_and_reopens_its_labels(tmp_path):
    from probe.train.loop import train

    cfg = TrainConfig.from_dict({"task": "add", "p": 7, "steps": 3, "labels": "shuffled", "label_seed": 1,
                                 "model": {"kind": "mlp", "d_embed": 4, "hidden": [8]},
                                 "checkpoint": {"schedule": "every", "every": 3}})
    train(cfg, tmp_path / "run", progress=False)
    with probe.load_run(tmp_path / "run") as run:
        assert run.config.labels == "shuffled" and run.config.label_seed == 1
        np.testing.assert_array_equal(run.task.labels, make_task("add", p=7, labels="shuffled", label_seed=1).labels)
        assert "labels=shuffled" in run.task.describe()


def test_runs_sharing_a_labelling_vectorise_and_others_do_not():
    from probe.train.ensemble import group_key

    a = TrainConfig.from_dict({"p": 7, "labels": "shuffled", "seed": 0, "n_train": 10})
    b = TrainConfig.from_dict({"p": 7, "labels": "shuffled", "seed": 1, "n_train": 20})
    c = TrainConfig.from_dict({"p": 7, "seed": 1, "n_train": 20})
    d = TrainConfig.from_dict({"p": 7, "labels": "shuffled", "label_seed": 5})
    assert group_key(a) == group_key(b) != group_key(c)
    assert group_key(d) != group_key(a)


def test_a_run_started_from_another_keeps_its_labelling(tmp_path):
    from probe.train.loop import check_same_model

    parent = TrainConfig.from_dict({"p": 7})
    with pytest.raises(ProbeError, match="different model or task"):
        check_same_model(parent, parent.with_overrides({"labels": "shuffled"}), tmp_path)
