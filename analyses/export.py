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
from probe.phases import first_step, phase
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


def representation_measure(run: Run) -> tuple[str, dict[str, Any], str] | None:
    """The representation measure a summary reports for ``run``'s task: Liu's RQI on the embeddings
    for non-modular tables, circular RQI on the embeddings for modular addition, and the
    threshold-free RQI of the readout (``--hook logits``) for other modular tasks. Returns
    ``(metric, parameters, description)``, or None when none applies."""
    from probe.analyses.registry import get_metric

    task = run.task
    has_emb = run.config.model.embed_param is not None
    if not task.is_table:
        return None
    if task.modulus and task.name == "add" and has_emb and get_metric("rqi_circular").applies(task) is None:
        return "rqi_circular", {}, "circular RQI (embeddings, key-frequency plane of the final checkpoint, pi/10)"
    if task.modulus:
        return "rqi", {"hook": "logits"}, "threshold-free RQI of the readout (hook logits)"
    if has_emb:
        return "rqi", {}, "RQI (Liu eq. 3, embeddings, delta 0.01)"
    return "rqi", {"hook": "logits"}, "threshold-free RQI of the readout (hook logits)"


def summary(runs: Sequence[Run], progress: bool = False) -> "pd.DataFrame":
    """One row per run: setup, final accuracies, when validation accuracy passes 90% / 99% and the
    task's representation measure passes 0.95, the learning phase (Liu App. A: 90%, 1,000-step delay,
    the run's own length as the budget), that measure's final value, Acc-hat, and RQI-bar and Acc-bar
    where the Alexander bound means something.

    Each task gets the measures that suit it (:func:`representation_measure`, named in the column
    ``rqi_measure``); a value that does not apply is missing and the ``notes`` column says why (one
    entry ``column: reason`` per note; Markdown and LaTeX turn them into footnote markers)."""
    import pandas as pd

    from probe.analyses.registry import get_metric

    rows = []
    for run, label in zip(runs, run_labels([r.dir for r in runs])):
        cfg = run.config
        m = run.metrics
        ms = m["step"].to_numpy() if not m.empty else np.array([])
        notes: list[str] = []
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
        if len(ms):
            notes.append(f"phase: Liu App. A Table 1 at 90%, delay 1000, budget {int(ms[-1])} (the run's length)")
        measure = representation_measure(run) if len(run.steps) else None
        row["rqi_measure"] = measure[2] if measure else "none"
        row["step_rqi_95"] = row["final_rqi"] = row["acc_hat"] = math.nan
        if measure is None:
            notes.append("final_rqi: no representation measure applies to this task or model")
        else:
            name, params, _ = measure
            r = compute(run, name, steps="all", progress=progress, **params)
            col = "rqi_circular" if name == "rqi_circular" else "rqi"
            row["step_rqi_95"] = first_step(r["step"].to_numpy(), r[col].to_numpy(), 0.95)
            row["final_rqi"] = float(r[col].iloc[-1])
            if name == "rqi_circular":
                notes.append("acc_hat: Liu's Acc-hat needs Euclidean parallelograms; not defined for circular RQI")
            else:
                a = compute(run, "acc_hat", steps="last", progress=progress, **params)
                row["acc_hat"] = float(a["acc_hat"].iloc[-1])
        row["rqi_bar"] = row["acc_bar"] = math.nan
        if run.task.modulus:
            notes.append("rqi_bar: the Alexander bound is vacuous for modular tasks (sum aggregation admits only "
                         "the collapsed solution)")
        elif get_metric("rqi_bar").applies(run.task) is None and len(run.steps):
            row["rqi_bar"] = float(compute(run, "rqi_bar", steps="last")["rqi_bar"].iloc[-1])
            row["acc_bar"] = float(compute(run, "acc_bar", steps="last")["acc_bar"].iloc[-1])
        else:
            notes.append(f"rqi_bar: {get_metric('rqi_bar').applies(run.task) or 'no checkpoints'}")
        row["notes"] = " | ".join(notes)
        rows.append(row)
    return pd.DataFrame(rows)


def _footnoted(df: "pd.DataFrame") -> tuple["pd.DataFrame", list[str]]:
    """Move a ``notes`` column (``column: text | ...``) into numbered markers on the named cells and
    a list of footnotes (for Markdown and LaTeX)."""
    if "notes" not in df.columns:
        return df, []
    out = df.drop(columns=["notes"]).astype(object)
    texts: list[str] = []
    for i, cell in enumerate(df["notes"].fillna("")):
        for part in [x for x in str(cell).split(" | ") if x]:
            col, _, text = part.partition(": ")
            if text not in texts:
                texts.append(text)
            n = texts.index(text) + 1
            j = out.columns.get_loc(col if col in out.columns else out.columns[0])
            value = out.iat[i, j]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                value = "--"
            elif isinstance(value, float):
                value = f"{value:.4g}"
            out.iat[i, j] = f"{value} [{n}]"
    return out, [f"[{n + 1}] {t}" for n, t in enumerate(texts)]


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
        shown, notes = _footnoted(df)
        text = to_markdown(shown) + "".join(f"\n{n}" for n in notes) + ("\n" if notes else "")
    elif fmt == "latex":
        shown, notes = _footnoted(df)
        text = to_latex(shown)
        if notes:
            text += "".join(f"\\par\\footnotesize {latex_escape(n)}\n" for n in notes)
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
