import numpy as np

from probe.config import CheckpointConfig
from probe.schedules import geometric_steps, make_schedule


def test_every():
    s = make_schedule(CheckpointConfig(schedule="every", every=10), 35)
    assert [k for k in range(36) if s.due(k, None)] == [0, 10, 20, 30, 35]


def test_geometric_is_log_spaced_and_includes_ends():
    steps = geometric_steps(100000, 50)
    assert steps[0] == 0 and steps[-1] == 100000
    assert len(steps) <= 51 and np.all(np.diff(steps) > 0)
    ratios = steps[-10:][1:] / steps[-10:][:-1]
    assert np.allclose(ratios, ratios[0], rtol=0.05)


def test_adaptive_is_dense_when_metrics_move():
    cfg = CheckpointConfig(schedule="adaptive", min_every=1, max_every=100, threshold=0.05)
    s = make_schedule(cfg, 1000)
    flat = {"train_acc": 1.0, "val_acc": 0.1, "train_loss": 1e-6, "val_loss": 5.0}
    written = []
    for step in range(0, 1001):
        row = dict(flat)
        if 400 <= step < 450:  # a grokking transition: validation accuracy climbs fast
            row["val_acc"] = 0.1 + 0.018 * (step - 400)
        elif step >= 450:
            row["val_acc"] = 1.0
        if s.due(step, row):
            s.record(step, row)
            written.append(step)
    plateau = [k for k in written if k < 400]
    transition = [k for k in written if 400 <= k < 450]
    assert plateau == [0, 100, 200, 300]
    assert len(transition) >= 10
    assert written[-1] == 1000


def test_adaptive_ignores_loss_jitter_below_floor():
    s = make_schedule(CheckpointConfig(schedule="adaptive", min_every=1, max_every=1000, threshold=0.02), 10000)
    base = {"train_acc": 1.0, "val_acc": 1.0, "val_loss": 1e-7}
    s.record(0, {**base, "train_loss": 1e-8})
    assert not s.due(5, {**base, "train_loss": 1e-6})
