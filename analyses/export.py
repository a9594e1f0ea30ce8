"""Tables for papers: tidy per-step tables across runs and one-row-per-run summaries.

Formats: csv, parquet, markdown (via tabulate), LaTeX (booktabs rules, escaped names, numbers
formatted for print: accuracies and indices to 3 decimals, steps as integers, missing as ``--``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from probe.analyses.runner import compute
from probe.errors import ProbeError, valid
from probe.run import Run, run_labels

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("csv", "parquet", "markdown", "latex")


def tidy(runs: Sequence[Run], metrics: Sequence[str], steps: Any = "all", progress: bool = False,
         **params: Any) -> "pd.DataFrame":
    """One row per (run, checkpoint step): run name, step, train/val accuracy there, metric columns."""
    import pandas as pd

    frames = []
    for run, label in zip(runs, run_labels([r.dir for r in runs])):
        df = compute(run, metrics, steps=steps, progress=progress, **params)
        acc = _accuracy_at(run, df["step"].to_numpy())
        df.insert(0, "run", label)
        df.insert(2, "train_acc", acc[0])
        df.insert(3, "val_acc", acc[1])
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _accuracy_at(run: Run, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = run.metrics
    if m.empty:
        return np.full(len(steps), np.nan), np.full(len(steps), np.nan)
    ms = m["step"].to_numpy()
    i = np.clip(np.searchsorted(ms, steps, side="right") - 1, 0, len(ms) - 1)  # last record at or before
    return m["train_acc"].to_numpy()[i], m["val_acc"].to_numpy()[i]


def first_step(steps: np.ndarray, values: np.ndarray, threshold: float) -> float:
    """First step where ``values >= threshold`` (NaN if never)."""
    hit = np.flatnonzero(np.asarray(values) >= threshold)
    return float(steps[hit[0]]) if hit.size else float("nan")


def phase(steps: np.ndarray, train_acc: np.ndarray, val_acc: np.ndarray, threshold: float = 0.9,
          budget: int | None = None, delay: int = 1000) -> str:
    """Liu et al. App. A, Table 1: comprehension, grokking, memorization or confusion, from the steps
    at which train and validation accuracy first exceed ``threshold`` within ``budget`` steps, and
    whether validation follows training within ``delay`` steps."""
    steps = np.asarray(steps)
    keep = steps <= budget if budget is not None else np.ones(len(steps), dtype=bool)
    t = first_step(steps[keep], np.asarray(train_acc)[keep], threshold + 1e-12)
    v = first_step(steps[keep], np.asarray(val_acc)[keep], threshold + 1e-12)
    if math.isnan(t):
        return "confusion"
    if math.isnan(v):
        return "memorization"
    return "comprehension" if v - t < delay else "grokking"


def summary(runs: Sequence[Run], progress: bool = False) -> "pd.DataFrame":
    """One row per run: setup, final accuracies, when validation accuracy passes 90% / 99% and RQI
    passes 0.95, the learning phase (Liu App. A: 90%, 1,000-step delay, the run's own length as the
    budget), final RQI, RQI-bar, Acc-hat and Acc-bar (NaN where a metric does not apply)."""
    import pandas as pd

    from probe.analyses.registry import get_metric

    rows = []
    for run, label in zip(runs, run_labels([r.dir for r in runs])):
        cfg = run.config
        m = run.metrics
        ms = m["step"].to_numpy() if not m.empty else np.array([])
        row: dict[str, Any] = {
            "run": label, "task": run.task.describe(), "model": cfg.model.kind,
            "train_fraction": len(run.split.train) / run.task.n_samples,
            "seed": cfg.seed, "split_seed": cfg.split_seed,
            "final_train_acc": float(m["train_acc"].iloc[-1]) if len(ms) else math.nan,
            "final_val_acc": float(m["val_acc"].iloc[-1]) if len(ms) else math.nan,
            "step_val_acc_90": first_step(ms, m["val_acc"], 0.9) if len(ms) else math.nan,
            "step_val_acc_99": first_step(ms, m["val_acc"], 0.99) if len(ms) else math.nan,
            "phase": phase(ms, m["train_acc"].to_numpy(), m["val_acc"].to_numpy()) if len(ms) else "n/a",
        }
        wanted = {"rqi": None, "acc_hat": None, "rqi_bar": None, "acc_bar": None}
        for name in wanted:
            if get_metric(name).applies(run.task) is None and len(run.steps):
                wanted[name] = compute(run, name, steps="all" if name == "rqi" else "last", progress=progress)
        r = wanted["rqi"]
        row["step_rqi_95"] = first_step(r["step"].to_numpy(), r["rqi"].to_numpy(), 0.95) if r is not None else math.nan
        row["final_rqi"] = float(r["rqi"].iloc[-1]) if r is not None else math.nan
        row["rqi_bar"] = float(wanted["rqi_bar"]["rqi_bar"].iloc[-1]) if wanted["rqi_bar"] is not None else math.nan
        row["acc_hat"] = float(wanted["acc_hat"]["acc_hat"].iloc[-1]) if wanted["acc_hat"] is not None else math.nan
        row["acc_bar"] = float(wanted["acc_bar"]["acc_bar"].iloc[-1]) if wanted["acc_bar"] is not None else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------
_INT_HINTS = ("step", "seed", "parallelograms", "dof", "violations")


def _fmt_value(col: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "--" if (v is None or math.isnan(v)) else ("$\\infty$" if v > 0 else "$-\\infty$")
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}".replace(",", "{,}")
    if isinstance(v, (float, np.floating)):
        if any(h in col for h in _INT_HINTS) and float(v).is_integer():
            return f"{int(v):,}".replace(",", "{,}")
        a = abs(float(v))
        if a != 0 and (a < 1e-3 or a >= 1e5):
            mant, exp = f"{float(v):.2e}".split("e")
            return f"${mant} \\times 10^{{{int(exp)}}}$"
        return f"{float(v):.3f}"
    return latex_escape(str(v))


def latex_escape(text: str) -> str:
    out = text
    for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("$", "\\$"), ("#", "\\#"),
                 ("_", "\\_"), ("{", "\\{"), ("}", "\\}"), ("~", "\\textasciitilde{}"), ("^", "\\^{}")):
        out = out.replace(a, b)
    return out


def to_latex(df: "pd.DataFrame", caption: str | None = None) -> str:
    """A booktabs ``tabular`` (numbers right-aligned), ready for ``\\input`` in a paper."""
    cols = list(df.columns)
    from pandas.api.types import is_numeric_dtype

    align = "".join("r" if is_numeric_dtype(df[c].dtype) else "l" for c in cols)
    lines = [f"\\begin{{tabular}}{{{align}}}", "\\toprule",
             " & ".join(latex_escape(str(c)) for c in cols) + " \\\\", "\\midrule"]
    for _, row in df.iterrows():
        lines.append(" & ".join(_fmt_value(str(c), row[c]) for c in cols) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    body = "\n".join(lines)
    if caption:
        body = f"\\begin{{table}}[t]\n\\centering\n{body}\n\\caption{{{latex_escape(caption)}}}\n\\end{{table}}"
    return body + "\n"


def to_markdown(df: "pd.DataFrame") -> str:
    from tabulate import tabulate

    clean = df.astype(object).where(df.notna(), None)
    return tabulate(clean, headers="keys", tablefmt="github", showindex=False, floatfmt=".4g", missingval="--") + "\n"


def write_table(df: "pd.DataFrame", fmt: str, out: str | None) -> str | None:
    """Write ``df`` as ``fmt`` to ``out`` (stdout when ``out`` is None; parquet needs a file)."""
    if fmt not in FORMATS + ("json", "table"):
        raise ProbeError(f"unknown format {fmt!r}{valid(FORMATS)}", param="format")
    if fmt == "parquet":
        if not out:
            raise ProbeError("--format parquet needs --out FILE")
        check_writable(out)
        import json

        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        if df.attrs.get("probe"):  # metric parameters and notes travel with the table
            meta[b"probe"] = json.dumps(df.attrs["probe"], default=str).encode()
        pq.write_table(table.replace_schema_metadata(meta), out)
        return None
    if fmt == "csv":
        text = df.to_csv(index=False)
    elif fmt == "json":
        text = df.to_json(orient="records", indent=1) + "\n"
    elif fmt == "markdown":
        text = to_markdown(df)
    elif fmt == "latex":
        text = to_latex(df)
    else:
        from tabulate import tabulate

        text = tabulate(df, headers="keys", tablefmt="simple", showindex=False, floatfmt=".4g", missingval="--") + "\n"
    if out:
        check_writable(out)
        Path(out).write_text(text)
        return None
    return text


def check_writable(out: str) -> None:
    path = Path(out)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ProbeError(f"--out {out} is a directory; give a file name")
    if not parent.is_dir():
        raise ProbeError(f"cannot write {out}: directory {parent} does not exist")
    import os

    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ProbeError(f"cannot write {out}: permission denied")
