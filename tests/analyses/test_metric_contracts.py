"""Contract battery over every registered metric (docs/design.md, "Registries"): the registry is read
when the tests are collected, so a newly registered metric is tested here with no edit.

On the shipped runs and on plain arrays, every metric either computes one row per requested
checkpoint or refuses with a one-line :class:`ProbeError` (and ``probe analyze`` with one line and exit
2); it runs on at least one of those sources; a run's results are cached in ``RUN_DIR/analysis`` and
read back equal; no two metrics report a value under one column name; and the result over several
checkpoints at once equals the results one checkpoint at a time (and, for metrics with a batched
form, the per-checkpoint form's).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import probe
from probe.analyses import runner
from probe.analyses.registry import get_metric, load
from probe.cli import main
from probe.errors import ProbeError
from probe.tasks import make_split, make_task

DATA = Path(__file__).resolve().parents[2] / "data" / "runs"
#: every registered metric, read from the registry itself
METRICS = sorted(load().names())
RUNS = ("toy-add", "modadd-p53")
ARRAYS = ("arrays-modadd-p11", "arrays-nonmod-add-p10", "arrays-s3-matrices")
SOURCES = RUNS + ARRAYS

#: the expensive metrics get small settings through their own registered parameters (not skipped):
#: the local learning coefficient samples 2 short SGLD chains on small batches ...
CHEAP: dict[str, dict[str, Any]] = {
    "llc": {"llc_chains": 2, "llc_draws": 4, "llc_batch": 32},
}
#: ... and is checked on two checkpoints instead of three (devinterp collects garbage around each chain,
#: about a second in a process holding the test session). UMAP and t-SNE run as registered: they are
#: fast on the few symbols of these tasks (UMAP compiles its kernels once per process)
FEWER_STEPS = {"llc"}


def _params(name: str) -> dict[str, Any]:
    return dict(CHEAP.get(name, {}))


def _steps(name: str, steps: list[int]) -> list[int]:
    return [steps[0], steps[-1]] if name in FEWER_STEPS else steps


def test_cheap_settings_name_registered_parameters():
    """A renamed parameter must not leave an expensive metric on its defaults unnoticed."""
    for name, params in CHEAP.items():
        declared = {p.name for p in get_metric(name).params}
        assert set(params) <= declared, (name, set(params) - declared)
    assert FEWER_STEPS <= set(METRICS)


# --------------------------------------------------------------------------------------------------
# sources: private copies of the shipped runs (never written in data/), and plain arrays
# --------------------------------------------------------------------------------------------------
class Arrays:
    """A plain-array series: embeddings ``[3, n, ...]`` (checkpoints 0, 1, 2) with a task and split."""

    def __init__(self, task_name: str, p: int | None, n: int | None, shape: tuple[int, ...], seed: int) -> None:
        self.task = make_task(task_name, p=p, n=n)
        self.split = make_split(self.task.n_samples, 0.6, seed)
        rng = np.random.default_rng(seed)
        self.embeddings = rng.normal(size=(3, self.task.n_symbols, *shape))
        if task_name == "add":  # a noisy clock that sharpens over the series, so Fourier metrics see structure
            angle = 2 * np.pi * 3 * np.arange(self.task.n_symbols) / self.task.n_symbols
            clock = np.stack([np.cos(angle), np.sin(angle)], 1)
            for t in range(3):
                self.embeddings[t, :, :2] += (t + 1) * clock
        self.steps = [0, 1, 2]

    def compute(self, metric: str, steps: list[int], **kw: Any) -> pd.DataFrame:
        kw.pop("cache", None)
        return probe.analyses.compute(self.embeddings, metric, steps=steps, task=self.task, split=self.split,
                                      **_params(metric), **kw)


class RunCopy:
    """A private copy of a shipped run; three of its checkpoints (first, middle, last) are analysed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with probe.load_run(path) as run:
            steps = np.asarray(run.steps)
        self.steps = [int(steps[0]), int(steps[len(steps) // 2]), int(steps[-1])]

    def compute(self, metric: str, steps: list[int], **kw: Any) -> pd.DataFrame:
        with probe.load_run(self.path) as run:
            return probe.analyses.compute(run, metric, steps=steps, **_params(metric), **kw)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("shipped")
    out: dict[str, Any] = {}
    for name in RUNS:
        shutil.copytree(DATA / name, base / name, ignore=shutil.ignore_patterns("analysis"))
        out[name] = RunCopy(base / name)
    out["arrays-modadd-p11"] = Arrays("add", 11, None, (6,), 0)
    out["arrays-nonmod-add-p10"] = Arrays("nonmod-add", 10, None, (2,), 1)
    out["arrays-s3-matrices"] = Arrays("perm", None, 3, (3, 3), 2)
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """torch's multi-threaded CPU reductions sum in an order that varies from call to call (two equal
    calls of a float32 gradient differ by about 1e-9), so results are compared exactly on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


_outcomes: dict[tuple[str, str], pd.DataFrame | ProbeError] = {}


def outcome(sources: dict[str, Any], metric: str, source: str) -> pd.DataFrame | ProbeError:
    """The metric over the source's checkpoints (cached in the run, for runs), or its refusal;
    computed once per module. Anything but a ProbeError fails the test that asked."""
    key = (metric, source)
    if key not in _outcomes:
        src = sources[source]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. a degenerate embedding's numerical warnings
                _outcomes[key] = src.compute(metric, _steps(metric, src.steps))
        except ProbeError as exc:
            _outcomes[key] = exc
        import torch

        assert torch.get_num_threads() == 1, f"{metric} changed torch's thread count"
    return _outcomes[key]


def _ran(sources: dict[str, Any], metric: str, source: str) -> pd.DataFrame:
    out = outcome(sources, metric, source)
    if isinstance(out, ProbeError):
        pytest.skip(f"{metric} refuses {source} ({out}); its refusal is checked by test_runs_or_refuses")
    return out


# --------------------------------------------------------------------------------------------------
# the contracts
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("metric", METRICS)
def test_runs_or_refuses_in_one_line(sources, metric, source, capsys):
    out = outcome(sources, metric, source)
    src = sources[source]
    steps = _steps(metric, src.steps)
    if isinstance(out, ProbeError):
        text = str(out)
        assert text.strip() and "\n" not in text, f"{metric} on {source}: {text!r}"
        if source in RUNS:  # the command line says the same in one line with exit code 2
            flags = [a for k, v in _params(metric).items() for a in (f"--{k.replace('_', '-')}", str(v))]
            code = main(["analyze", str(src.path), "--metric", metric, "--steps", ",".join(map(str, steps)), *flags,
                         "--no-progress"])
            err = capsys.readouterr().err
            assert code == 2 and err.startswith("probe: error: ") and err.count("\n") == 1, err
        return
    assert out["step"].tolist() == steps, metric
    assert len(out.columns) >= 2 and out.columns[0] == "step"
    assert out.columns.is_unique
    assert metric in out.attrs["probe"] and "params" in out.attrs["probe"][metric]


@pytest.mark.parametrize("metric", METRICS)
def test_runs_on_a_shipped_run_or_plain_arrays(sources, metric):
    """A metric that refuses every shipped run and every array series is never exercised."""
    refused = {s: outcome(sources, metric, s) for s in SOURCES}
    assert not all(isinstance(o, ProbeError) for o in refused.values()), {s: str(e) for s, e in refused.items()}


@pytest.mark.parametrize("source", RUNS)
@pytest.mark.parametrize("metric", METRICS)
def test_cached_and_read_back_equal(sources, metric, source):
    first = _ran(sources, metric, source)
    cache_dir = sources[source].path / "analysis"
    files = {p.name: p.stat().st_mtime_ns for p in cache_dir.glob(f"{metric}-*.parquet")}
    assert files, f"{metric} wrote no cache file in {cache_dir}"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*cache")  # an unusable cache file is a failure here
        again = sources[source].compute(metric, _steps(metric, sources[source].steps))
    assert {p.name: p.stat().st_mtime_ns for p in cache_dir.glob(f"{metric}-*.parquet")} == files, \
        "the second call recomputed instead of reading the cache"
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    norm = lambda a: json.loads(json.dumps(a, sort_keys=True, default=str))  # noqa: E731 - JSON round trip
    assert norm(first.attrs["probe"]) == norm(again.attrs["probe"])


@pytest.mark.parametrize("source", SOURCES)
def test_no_two_metrics_report_one_column(sources, source):
    owner: dict[str, str] = {}
    ran = 0
    training = set()
    if source in RUNS:
        with probe.load_run(sources[source].path) as run:
            training = set(run.metrics.columns) - {"step"}
    for metric in METRICS:
        out = outcome(sources, metric, source)
        if isinstance(out, ProbeError):
            continue
        ran += 1
        for col in out.columns[1:]:
            assert col not in owner, f"{metric} and {owner[col]} both report {col!r}"
            assert col not in training, f"{metric} reports {col!r}, a column of the run's training metrics"
            owner[col] = metric
    assert ran >= 2


def _compare(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    try:
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_exact=True)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("metric", METRICS)
def test_several_checkpoints_at_once_equal_one_at_a_time(sources, metric, source):
    together = _ran(sources, metric, source)
    src = sources[source]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = pd.concat([src.compute(metric, [s], cache=False) for s in _steps(metric, src.steps)],
                           ignore_index=True)
    _compare(together, single, f"{metric} on {source}, checkpoints at once against one at a time")


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("metric", [m for m in METRICS if get_metric(m).batch_fn is not None])
def test_batched_form_equals_the_per_checkpoint_form(sources, metric, source, monkeypatch):
    together = _ran(sources, metric, source)
    registered = get_metric(metric)
    plain = dataclasses.replace(registered, batch_fn=None, batch_when=None)
    monkeypatch.setattr(runner, "get_metric", lambda name: plain if name == metric else get_metric(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_checkpoint = sources[source].compute(metric, _steps(metric, sources[source].steps), cache=False)
    _compare(together, per_checkpoint, f"{metric} on {source}, batched form against per-checkpoint form")
