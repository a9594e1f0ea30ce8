"""The reproduction registry: one :class:`Reproduction` record per published figure or table that
probe re-trains and compares with its authors' released numbers (docs/design.md, "Reproductions").

A record is data (its source, the setting table beside the authors' code, one sweep spec per
scale) and two functions: ``analyse(sweep_dir, scale)`` returning the comparison rows (recomputed
from the runs every time) and ``draw(analysis)`` returning the figure laid out like the paper's.
Importing this module registers nothing; :func:`get_reproduction` and :func:`all_reproductions`
import the catalogue when first asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from probe.errors import ProbeError, valid
from probe.registry import Registry

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

SCALES: tuple[str, ...] = ("quick", "paper")
VERDICTS: tuple[str, ...] = ("agrees", "differs")


@dataclass(frozen=True)
class Artefact:
    """The released numbers a reproduction is compared with: a file (or folder) of a repository."""

    repository: str  # e.g. "github.com/ejmichaud/grokking-squared"
    commit: str
    path: str  # file or folder in the repository
    description: str


@dataclass(frozen=True)
class Setting:
    """One row of the setting table: how the authors' code does it (and in which file), how probe
    does it at the paper scale, and the remaining difference with its reason ("" when none)."""

    setting: str
    authors: str
    authors_file: str  # the authors' file it was read from
    probe: str
    difference: str = ""


@dataclass(frozen=True)
class Stage:
    """A further sweep trained after the scale's first one, into ``OUT/NAME``: a second stage whose
    runs start from the first's (its spec's ``from:`` paths are relative to ``OUT``, e.g.
    ``sweep/runs/seed=0``), as Varma et al.'s ungrokking continues grokked networks."""

    name: str
    spec: str

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name == "sweep":
            raise ValueError(f"a stage's name is a plain folder name other than 'sweep', got {self.name!r}")


@dataclass(frozen=True)
class Scale:
    """A scale of a reproduction: the sweep spec it trains (into ``OUT/sweep``), any further stages
    trained after it, and the time it took on 2 CPU cores."""

    name: str
    spec: str  # sweep spec (YAML text), as ``probe sweep`` reads it
    time: str  # "unmeasured" until measured
    purpose: str
    stages: tuple[Stage, ...] = ()

    def __post_init__(self) -> None:
        if self.name not in SCALES:
            raise ValueError(f"unknown scale {self.name!r}")
        if len({s.name for s in self.stages}) != len(self.stages):
            raise ValueError("stage names repeat")


@dataclass(frozen=True)
class Row:
    """One reference number against probe's: a row of comparison.csv."""

    quantity: str
    paper: str
    source: str  # repository file, or paper table/section
    probe: str
    tolerance: str
    verdict: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass(frozen=True)
class Analysis:
    """What a reproduction's analysis returns: the comparison rows, the per-run table, and whatever
    its figure needs (``extra``)."""

    rows: tuple[Row, ...]
    runs: "pd.DataFrame"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reproduction:
    name: str
    paper: str
    figure: str  # figure or table of the paper
    artefact: Artefact
    trains: str
    setting: tuple[Setting, ...]
    scales: dict[str, Scale]
    analyse: Callable[[str, str], Analysis]
    draw: Callable[[Analysis], "Figure"]  # the figure, laid out like the paper's (the runner writes it)
    claims: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if set(self.scales) != set(SCALES):
            raise ValueError(f"reproduction {self.name!r} must define the scales {SCALES}")
        if not self.setting or any(not s.authors_file for s in self.setting):
            raise ValueError(f"reproduction {self.name!r}: every setting row names the authors' file")

    def scale(self, name: str) -> Scale:
        if name not in SCALES:
            raise ProbeError(f"unknown scale {name!r}{valid(SCALES)}", param="scale")
        return self.scales[name]


REPRODUCTIONS: Registry[Reproduction] = Registry("reproduction")
_CATALOGUE = ("probe.reproduce.liu_fig3", "probe.reproduce.liu_fig4a", "probe.reproduce.liu_fig5b",
              "probe.reproduce.liu_fig6b", "probe.reproduce.kitouni_mlp_wd", "probe.reproduce.lee_grokfast",
              "probe.reproduce.omnigrok_digits", "probe.reproduce.prieto_softmax_collapse",
              "probe.reproduce.varma_ungrokking", "probe.reproduce.liu_fig6d", "probe.reproduce.liu_fig13",
              "probe.reproduce.liu_fig14", "probe.reproduce.liu_fig15", "probe.reproduce.liu_fig7",
              "probe.reproduce.liu_fig1", "probe.reproduce.liu_fig22", "probe.reproduce.nanda_fraction",
              "probe.reproduce.nanda_restricted", "probe.reproduce.power_fraction",
              "probe.reproduce.zhong_models", "probe.reproduce.zhong_phase", "probe.reproduce.chughtai_irreps",
              "probe.reproduce.varma_dcrit", "probe.reproduce.varma_semigrokking",
              "probe.reproduce.arn_spikes")


def reproduction(rec: Reproduction) -> Reproduction:
    """Register a reproduction record (used at module level in the catalogue's modules)."""
    return REPRODUCTIONS.add(rec.name, rec)


def _load() -> None:
    import importlib

    for module in _CATALOGUE:
        importlib.import_module(module)


def get_reproduction(name: str) -> Reproduction:
    _load()
    return REPRODUCTIONS.get(name)


def all_reproductions() -> list[Reproduction]:
    _load()
    return [r for _, r in REPRODUCTIONS.items()]


#: where the paper-scale results are committed: docs/reproductions/NAME/ of the source tree
RECORDS = Path(__file__).resolve().parents[1] / "docs" / "reproductions"


def recorded_verdict(rec: Reproduction, records: Path = RECORDS) -> str:
    """The verdict last recorded in the repository: counted from the committed paper-scale
    ``docs/reproductions/NAME/comparison.csv`` (written by ``probe reproduce NAME --scale paper``),
    or why there is none."""
    path = records / rec.name / "comparison.csv"
    if not path.is_file():
        return "paper scale not yet run (no docs/reproductions/%s/comparison.csv)" % rec.name
    import csv

    with path.open(newline="") as fh:
        verdicts = [row.get("verdict", "") for row in csv.DictReader(fh)]
    agree = sum(v == "agrees" for v in verdicts)
    return f"paper scale: {agree} of {len(verdicts)} numbers agree ({len(verdicts) - agree} differ)"


def fmt_steps(x: float) -> str:
    """A step count for the tables: ``never`` for inf, ``n/a`` for NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return "never" if math.isinf(x) else f"{x:,.0f}"
