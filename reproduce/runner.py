"""The one runner of ``probe reproduce``: train through the ordinary sweep, analyse, write the
comparison table and the figures (docs/design.md, "Reproductions").

``reproduce(name, out, scale)`` checks everything before writing anything, records the
reproduction and scale in ``OUT/reproduction.json`` (a directory holding another reproduction is
refused), trains ``OUT/sweep`` with :func:`probe.train.sweep.run_sweep` (a second call reuses
finished runs and resumes interrupted ones), then the scale's further stages (``OUT/NAME``, whose runs
start from the first sweep's), then writes ``comparison.csv``, ``comparison.md``,
``runs.csv`` and the figures. A difference from the paper is a result, not an error.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.errors import ProbeError
from probe.reproduce.registry import SCALES, Analysis, Reproduction, get_reproduction

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RECORD = "reproduction.json"
SWEEP = "sweep"
COLUMNS = ("quantity", "paper", "source", "probe", "tolerance", "verdict")


@dataclass(frozen=True)
class Result:
    reproduction: Reproduction
    scale: str
    out: Path
    analysis: Analysis
    files: tuple[str, ...]
    sweep_counts: dict[str, int]


def check_out(rec: Reproduction, scale: str, out: str | os.PathLike[str]) -> Path:
    """Refuse an ``out`` that is a file or holds another reproduction (or another scale of it)."""
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ProbeError(f"--out {root} is a file, not a directory", param="out")
    marker = root / RECORD
    if root.is_dir() and any(root.iterdir()):
        if not marker.is_file():
            raise ProbeError(f"--out {root} is not empty and holds no {RECORD}: not a reproduction directory",
                             param="out")
        try:
            held = json.loads(marker.read_text())
            held_name, held_scale = str(held["reproduction"]), str(held["scale"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ProbeError(f"{marker} is damaged (expected the reproduction and its scale)") from None
        if (held_name, held_scale) != (rec.name, scale):
            raise ProbeError(f"--out {root} holds the reproduction {held_name!r} at scale {held_scale!r}, not "
                             f"{rec.name!r} at {scale!r}; give another directory", param="out")
    return root


def comparison_frame(rows: Any) -> "Any":
    import pandas as pd

    return pd.DataFrame([asdict(r) for r in rows], columns=list(COLUMNS))


def write_comparison(analysis: Analysis, out: Path) -> list[str]:
    df = comparison_frame(analysis.rows)
    df.to_csv(out / "comparison.csv", index=False)
    (out / "comparison.md").write_text(df.to_markdown(index=False) + "\n")
    analysis.runs.to_csv(out / "runs.csv", index=False)
    return [str(out / "comparison.csv"), str(out / "comparison.md"), str(out / "runs.csv")]


def write_figure(fig: "Figure", stem: Path) -> list[str]:
    """Write a reproduction's figure as ``STEM.png`` and ``STEM.pdf`` (the bounding box fitted to
    everything drawn, legends outside the axes included) and close it."""
    from probe.analyses import plots

    files = [str(stem.with_suffix(".png")), str(stem.with_suffix(".pdf"))]
    try:
        for path in files:
            fig.savefig(path, dpi=150, bbox_inches="tight")
    except OSError as exc:
        raise ProbeError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plots._plt().close(fig)
    return files


def reproduce(name: str, out: str | os.PathLike[str], scale: str = "quick", jobs: int = 1,
              executor: str = "local", partition: str | None = None, time_min: int | None = None,
              mem: str | None = None, progress: bool = False, vectorize: str = "auto") -> Result:
    """Train, analyse and write one reproduction at one scale into ``out`` (see the module doc)."""
    rec = get_reproduction(name)
    if scale not in SCALES:
        rec.scale(scale)  # raises the one-line error naming the scales
    sc = rec.scale(scale)
    from probe.train import sweep

    opts = sweep.ExecutorOptions(executor, jobs, partition, time_min, mem, vectorize)  # validated before writing
    spec = sweep.parse_spec(sc.spec)
    for st in sc.stages:  # every stage's spec checked before anything is written
        sweep.parse_spec(st.spec)
    root = check_out(rec, scale, out)
    root.mkdir(parents=True, exist_ok=True)
    (root / RECORD).write_text(json.dumps({"reproduction": rec.name, "scale": scale}, indent=2) + "\n")
    for stage in ((SWEEP, spec), *((s.name, s.spec) for s in sc.stages)):
        name, stage_spec = stage
        if isinstance(stage_spec, str):  # a later stage: expanded once the runs it starts from exist
            stage_spec = sweep.parse_spec(stage_spec, where=root / f"{name}.yaml")
        counts = sweep.run_sweep(stage_spec, root / name, opts, progress=progress)
        unfinished = {k: v for k, v in counts.items() if k != "done" and v}
        if unfinished:
            raise ProbeError(f"the sweep in {root / name} did not finish ("
                             + ", ".join(f"{k} {v}" for k, v in unfinished.items())
                             + f"); see 'probe sweep status {root / name}' and run the same command again")
    analysis = rec.analyse(str(root / SWEEP), scale)
    files = write_comparison(analysis, root)
    files += write_figure(rec.draw(analysis), root / "figure")
    return Result(rec, scale, root, analysis, tuple(files), counts)
