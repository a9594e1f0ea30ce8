"""One quick-scale run per registered reproduction, shared by the contract battery and the
reproduction's own golden tests (each reproduction trains once per test process)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from probe.reproduce.runner import Result, reproduce


@pytest.fixture(scope="session")
def quick_reproduction(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Result]]:
    """``quick_reproduction(name)``: ``(out, result)`` of ``reproduce(name, out, "quick")``, trained the
    first time it is asked for and reused after."""
    cache: dict[str, tuple[Path, Result]] = {}

    def get(name: str) -> tuple[Path, Result]:
        if name not in cache:
            out = tmp_path_factory.mktemp("quick") / name
            cache[name] = (out, reproduce(name, out, "quick", jobs=1))
        return cache[name]

    return get


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist the reproductions' tests run in one worker, so each quick scale trains once."""
    for item in items:
        if "tests/reproduce/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.xdist_group("reproduce"))
