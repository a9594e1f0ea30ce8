"""probe.devices: the device resolver and the thread pools analyses run under."""

from __future__ import annotations

import numpy as np
import pytest

from probe.devices import one_thread_pool, resolve_device
from probe.errors import ProbeError
from probe.tasks import make_task


def _openblas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"]


def test_numpy_blas_runs_on_one_thread_inside_and_as_before_after():
    np.ones((4, 4)) @ np.ones((4, 4))  # numpy's BLAS loaded
    before = _openblas_threads()
    if not before:
        pytest.skip("numpy is not linked against OpenBLAS here")
    with one_thread_pool():
        assert _openblas_threads() == [1] * len(before)
    assert _openblas_threads() == before


def test_compute_holds_numpy_blas_to_one_thread(monkeypatch):
    from probe import analyses
    from probe.analyses import runner

    np.ones((4, 4)) @ np.ones((4, 4))
    if not _openblas_threads():
        pytest.skip("numpy is not linked against OpenBLAS here")
    seen: list[list[int]] = []
    real = runner._compute

    def spy(*args, **kwargs):
        seen.append(_openblas_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_compute", spy)
    rng = np.random.default_rng(0)
    analyses.compute(rng.normal(size=(10, 4)), "pca_variance", task=make_task("add", p=10))
    assert seen and all(t == 1 for t in seen[0])


def test_unknown_and_unavailable_devices_are_user_errors():
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ProbeError):
        resolve_device("tpu")
