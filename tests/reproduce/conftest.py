"""One quick-scale run per registered reproduction, shared by the contract battery and the
reproduction's own golden tests (each reproduction trains once per test process, in that process:
``--executor inline``)."""

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
            cache[name] = (out, reproduce(name, out, "quick", executor="inline"))
        return cache[name]

    return get


def reproduction_of(item: pytest.Item) -> str:
    """The reproduction a test exercises: the contract battery's ``rec`` parameter, else the test
    module's ``REPRODUCTION`` (a module about one reproduction), else its file name (``test_liu_fig3.py``
    -> ``liu-fig3``); ``""`` for a test about none in particular."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "rec" in callspec.params:
        return str(callspec.params["rec"])
    module = getattr(item, "module", None)
    named = getattr(module, "REPRODUCTION", None)
    if isinstance(named, str):
        return named
    stem = Path(str(item.fspath)).stem
    return stem[len("test_"):].replace("_", "-") if stem.startswith("test_") else ""


@pytest.fixture(scope="session")
def arn_thesis() -> str:
    """Arn's thesis (the project's source text, shared/seeds) with its whitespace collapsed, for checking
    quotations word for word; skips the test where the source texts are not beside the checkout."""
    root = Path(__file__).resolve().parents[2]
    found = [d / "shared" / "seeds" / "001_8e34bce25d6d6024.txt" for d in (root, root.parent)]
    thesis = next((f for f in found if f.is_file()), None)
    if thesis is None:
        pytest.skip("the project's source texts (shared/seeds) are not beside the checkout")
    return " ".join(thesis.read_text().split())


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist each reproduction's tests (its own and the contract battery's) run in one
    worker, so its quick scale trains once; the reproductions spread over the workers."""
    for item in items:
        if "tests/reproduce/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.xdist_group(f"reproduce-{reproduction_of(item) or 'misc'}"))
