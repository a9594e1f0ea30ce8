"""Fixtures shared by the analysis tests: private copies of the shipped runs (one per test module,
so caches written by one module never serve another)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import probe

DATA = Path(__file__).resolve().parents[2] / "data" / "runs"


def shipped_copy(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    dst = tmp_path_factory.mktemp("runs") / name
    shutil.copytree(DATA / name, dst, ignore=shutil.ignore_patterns("analysis"))
    return dst


@pytest.fixture(scope="module")
def modadd(tmp_path_factory: pytest.TempPathFactory) -> probe.Run:
    return probe.load_run(shipped_copy(tmp_path_factory, "modadd-p53"))


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shipped_copy(tmp_path_factory, "toy-add")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist the tests of the UMAP metric run in one worker: its first call in a process
    compiles umap-learn's numba kernels (about 11 s), later calls take milliseconds."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("metric") == "umap":
            item.add_marker(pytest.mark.xdist_group("umap"))
