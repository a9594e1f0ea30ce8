"""``rng: grokking-squared``: the split, the regression targets, the initial weights and the
minibatches drawn as Liu et al.'s toy/train_add.py draws them, so that seed S is their seed S;
``rng: grokking-squared-phase``: as the notebook of their Fig. 6 addition phase diagrams draws them.

The golden numbers were printed by the authors' ``train_add`` (github.com/ejmichaud/grokking-squared,
commit 0229df9, ``toy/train_add.py``, run unchanged with ``train_add(train_num=N, seed=S, steps=T)``
and the defaults: p 10, 1-d embeddings, decoder 200-200 tanh, eta_reprs 1e-3, eta_dec 1e-4, batch 45):
``repr_nn[t]`` is the embedding after update t + 1, ``loss_train[t]`` the minibatch loss before it."""

from __future__ import annotations

import numpy as np
import pytest

from probe.cli import main
from probe.config import TrainConfig
from probe.errors import ProbeError
from probe.run import load_run
from probe.tasks import GrokkingSquaredStream

#: train_add(train_num=30, seed=2, steps=200): full batch (30 < 45)
SEED2_N30 = {"loss_train[0:3]": [1.05875778, 1.04938245, 1.04043126],
             "repr_nn[199][:6]": [0.37141743, 0.15460193, 0.3031696, 0.13889349, -0.03759427, -0.06638993],
             "acc_train[199]": 0.2, "acc_test[199]": 0.16}
#: train_add(train_num=54, seed=4, steps=300): 45 of the 54 drawn from numpy's stream every step
SEED4_N54 = {"repr_nn[299][:6]": [-0.26276892, -0.3032186, -0.5574554, -0.53809404, -0.42516467, -0.1333156],
             "acc_train[299]": 0.1111111111111111, "acc_test[299]": 1.0}


def _train(out, seed, n_train, steps, extra=()):
    sets = [f"rng=grokking-squared", f"seed={seed}", f"split_seed={seed}", f"n_train={n_train}", "batch_size=45",
            f"steps={steps}", "checkpoint.schedule=every", "checkpoint.every=1", "checkpoint.metrics_every=1", *extra]
    assert main(["train", "--preset", "liu-toy-add", *sum((["--set", s] for s in sets), []), "--no-progress",
                 "--out", str(out)]) == 0
    return load_run(out)


def test_full_batch_run_is_the_authors_run(tmp_path):
    with _train(tmp_path / "r", 2, 30, 200) as run:
        m = run.metrics
        # before the first update the full-batch loss is their first minibatch's (the same 30 samples)
        np.testing.assert_allclose(m["train_loss"].values[:1], SEED2_N30["loss_train[0:3]"][:1], rtol=1e-6)
        np.testing.assert_allclose(np.asarray(run.params(200)["embed.W_E"]).ravel()[:6],
                                   SEED2_N30["repr_nn[199][:6]"], atol=1e-6)
        assert m["train_acc"].values[-1] == pytest.approx(SEED2_N30["acc_train[199]"])
        assert m["val_acc"].values[-1] == pytest.approx(SEED2_N30["acc_test[199]"])
        assert run.split.sizes == (30, 25)


def test_minibatch_run_is_the_authors_run_and_resumes_bit_identically(tmp_path):
    with _train(tmp_path / "whole", 4, 54, 300) as run:
        whole_e = np.asarray(run.params(300)["embed.W_E"])
        whole_loss = run.metrics["train_loss"].values
        np.testing.assert_allclose(whole_e.ravel()[:6], SEED4_N54["repr_nn[299][:6]"], atol=1e-6)
        assert run.metrics["train_acc"].values[-1] == pytest.approx(SEED4_N54["acc_train[299]"])
        assert run.metrics["val_acc"].values[-1] == pytest.approx(SEED4_N54["acc_test[299]"])
    _train(tmp_path / "halves", 4, 54, 150).close()
    assert main(["train", "--resume", str(tmp_path / "halves"), "--steps", "300", "--no-progress"]) == 0
    with load_run(tmp_path / "halves") as run:  # the stream replayed to step 150: the same batches after it
        np.testing.assert_array_equal(np.asarray(run.params(300)["embed.W_E"]), whole_e)
        np.testing.assert_array_equal(run.metrics["train_loss"].values, whole_loss)


def test_the_stream_draws_targets_then_the_split_then_one_batch_per_step():
    s = GrokkingSquaredStream(55, 30, 2, (19, 30))
    rs = np.random.RandomState(2)
    np.testing.assert_array_equal(s.targets, rs.normal(0, 1, size=(19, 30)).astype(np.float32))
    order = rs.choice(55, 30, replace=False)
    assert s.split.train.tolist() == sorted(order.tolist()) and len(s.split.val) == 25
    first = rs.choice(30, 20, replace=False)
    np.testing.assert_array_equal(s.split.train[s.batch(0, 20)], order[first])
    second = s.batch(1, 20)
    np.testing.assert_array_equal(s.batch(1, 20), second)  # asking again replays the stream to that step


@pytest.mark.parametrize("sets,needle", [
    ({"task": "add"}, "task nonmod-add"),
    ({"split_seed": 1}, "set split_seed = seed"),
    ({"train_subset": 0.5}, "no train_subset"),
])
def test_it_applies_to_the_authors_setting_only(sets, needle):
    base = {"task": "nonmod-add", "p": 10, "model": {"kind": "toy"}, "rng": "grokking-squared"}
    with pytest.raises(ProbeError, match=needle):
        TrainConfig.from_dict({**base, **sets})


def test_stored_only_when_set():
    assert "rng" not in TrainConfig.from_dict({"task": "nonmod-add", "p": 10, "model": {"kind": "toy"}}).to_dict()


#: phase_diagram_plot/phase_diagram.ipynb (commit 0229df9) run unchanged here, its train([1e-4, 0, 2200]) at
#: its seed 58: the first 0-based epochs with training / test accuracy >= 0.9; the released
#: train_steps.txt and test_steps.txt hold the same two numbers in their cell (decoder lr 1e-4, weight decay 0)
NOTEBOOK_SEED58_LR1E4_WD0 = (1650, 2076)


def test_phase_notebook_run_is_the_authors_cell(tmp_path):
    sets = ["rng=grokking-squared-phase", "seed=58", "split_seed=58", "n_train=45", "lr=1e-4", "weight_decay=0",
            "steps=2100", "checkpoint.schedule=every", "checkpoint.every=700", "checkpoint.metrics_every=1"]
    assert main(["train", "--preset", "liu-toy-add", *sum((["--set", s] for s in sets), []), "--no-progress",
                 "--out", str(tmp_path / "r")]) == 0
    with load_run(tmp_path / "r") as run:
        m = run.metrics
        first = [int(m["step"].values[np.argmax(m[c].values >= 0.9)]) for c in ("train_acc", "val_acc")]
        assert first == [i + 1 for i in NOTEBOOK_SEED58_LR1E4_WD0]  # probe counts updates done
        assert run.split.sizes == (45, 10)


def test_the_phase_stream_discards_the_notebooks_x_templates_first():
    s = GrokkingSquaredStream(55, 45, 58, (19, 30), discard_shape=(10, 30))
    rs = np.random.RandomState(58)
    rs.normal(0, 1, size=(10, 30))
    np.testing.assert_array_equal(s.targets, rs.normal(0, 1, size=(19, 30)).astype(np.float32))
    assert s.split.train.tolist() == sorted(rs.choice(55, 45, replace=False).tolist())


def test_the_phase_notebook_trains_full_batch_only():
    base = {"task": "nonmod-add", "p": 10, "model": {"kind": "toy"}, "rng": "grokking-squared-phase"}
    with pytest.raises(ProbeError, match="full batch"):
        TrainConfig.from_dict({**base, "batch_size": 8})
