"""``probe metrics | analyze | export | plot | theory``: the analysis side of the command line."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from probe.errors import ProbeError


def add_parsers(sub: Any) -> None:
    """Register the analysis subcommands on ``probe``'s subparser set (options come from the registry)."""
    from analyses.registry import all_metrics, all_params

    names = [m.name for m in all_metrics()]
    metric_help = "metric name (repeatable; see 'probe metrics')"

    def metric_options(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("metric parameters (recorded with the result)")
        for prm in all_params().values():
            g.add_argument(f"--{prm.flag}", dest=f"param_{prm.name}", metavar=prm.type.__name__.upper(),
                           help=f"{prm.help} [default: {prm.default}]")

    sub.add_parser("metrics", help="list the registered metrics")

    p = sub.add_parser("analyze", help="compute metrics over a run's checkpoints (one row per step)",
                       description=f"Metrics: {', '.join(names)}.")
    p.add_argument("run_dir")
    p.add_argument("--metric", action="append", required=True, metavar="NAME", help=metric_help)
    p.add_argument("--steps", default="all", help="all, first, last, START:STOP[:STRIDE] (steps, inclusive) or a list")
    p.add_argument("--format", default="table", choices=("table", "csv", "json", "parquet"))
    p.add_argument("--out", help="write to this file instead of stdout")
    p.add_argument("--force", action="store_true", help="recompute instead of reading the cache")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    metric_options(p)

    p = sub.add_parser("export", help="tables for papers: tidy per-step rows or one summary row per run")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--metric", action="append", default=[], metavar="NAME", help=metric_help)
    p.add_argument("--summary", action="store_true", help="one row per run (setup, accuracies, RQI milestones)")
    p.add_argument("--steps", default="all")
    p.add_argument("--format", default="csv", choices=("latex", "markdown", "csv", "parquet"))
    p.add_argument("--out", help="output file (stdout if omitted, except parquet)")
    p.add_argument("--no-progress", action="store_true")
    metric_options(p)

    p = sub.add_parser("plot", help="figures: a metric over time, PCA pictures and animation, Fourier norms, "
                       "projection accuracy", description="--figure metric (default): the metrics over log "
                       "steps with train/val accuracy. pca: embeddings on PC1/PC2 at --steps (--axes refit|final). "
                       "animation: the same over the whole series (.gif or .mp4). fourier: W_E/W_U norms per "
                       "frequency at --steps (one step). projection: accuracy against PCs kept at --steps (one step).")
    p.add_argument("run_dir")
    p.add_argument("--figure", default="metric", choices=("metric", "pca", "animation", "fourier", "projection"))
    p.add_argument("--metric", action="append", default=[], metavar="NAME", help=metric_help)
    p.add_argument("--out", required=True, help="figure file (.png, .pdf, .svg; .gif or .mp4 for the animation)")
    p.add_argument("--steps", default=None, help="checkpoints to show (default: all; pca: first, a middle one, "
                   "last; fourier and projection: last)")
    p.add_argument("--fps", type=int, default=8, help="animation frames per second")
    p.add_argument("--no-progress", action="store_true")
    metric_options(p)

    p = sub.add_parser("theory", help="Liu et al.'s effective theory: critical fraction, effective dynamics")
    tsub = p.add_subparsers(dest="theory_command", metavar="WHAT", parser_class=type(p))
    t = tsub.add_parser("critical-fraction", help="P(unique linear representation) per training-set size (Liu Fig. 4a)")
    t.add_argument("--task", default="add", help="'add' = Liu's (non-modular) addition, the default; or an "
                   "abelian probe task (nonmod-add, mod-add for modular addition, mul, x2+y2, ...)")
    t.add_argument("--p", type=int, default=10)
    t.add_argument("--trials", type=int, default=100, help="random splits per training-set size")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--format", default="table", choices=("table", "csv", "json"))
    t.add_argument("--out")
    t.add_argument("--no-progress", action="store_true")
    t = tsub.add_parser("effective-dynamics", help="integrate the effective loss from a run's initial embeddings "
                        "and compare with its real trajectory (Liu Fig. 4c/d)")
    t.add_argument("run_dir")
    t.add_argument("--out", required=True, help="output prefix: writes PREFIX.csv and PREFIX.png")
    t.add_argument("--time-scale", type=float, default=1.0,
                   help="effective time per (step x embedding lr) [default: 1]")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {k[len("param_"):]: v for k, v in vars(args).items() if k.startswith("param_") and v is not None}


def _print_notes(df: Any) -> None:
    for name, info in df.attrs.get("probe", {}).items():
        for note in info.get("notes", []):
            print(f"probe: note ({name}): {note}", file=sys.stderr)


def _open(run_dir: str) -> Any:
    from probe.run import load_run

    return load_run(run_dir)


def cmd_metrics(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from analyses.registry import all_metrics

    rows = [(m.name, "+".join(sorted(m.needs)), m.tasks, m.description,
             ", ".join(p.name for p in m.params) or "-") for m in all_metrics()]
    print(tabulate(rows, headers=("metric", "needs", "applies to", "description", "parameters"),
                   tablefmt="simple", maxcolwidths=[None, None, 24, 60, 24]))
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from analyses.export import check_writable, write_table
    from analyses.runner import compute

    if args.out:
        check_writable(args.out)
    run = _open(args.run_dir)
    df = compute(run, args.metric, steps=args.steps, force=args.force, progress=not args.no_progress,
                 device=args.device, **_params(args))
    _print_notes(df)
    text = write_table(df, args.format, args.out)
    if text is not None:
        sys.stdout.write(text)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from analyses import export

    if not args.summary and not args.metric:
        raise ProbeError("give --metric NAME (repeatable) or --summary")
    if args.out:
        export.check_writable(args.out)
    runs = [_open(d) for d in args.run_dirs]
    names = [r.dir.resolve() for r in runs]
    if len(set(names)) != len(names):
        raise ProbeError("the same run is given twice")
    if args.summary:
        df = export.summary(runs, progress=not args.no_progress)
    else:
        df = export.tidy(runs, args.metric, steps=args.steps, progress=not args.no_progress, **_params(args))
    text = export.write_table(df, args.format, args.out)
    if text is not None:
        sys.stdout.write(text)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from analyses import plots
    from analyses.runner import compute

    run = _open(args.run_dir)
    params = _params(args)
    progress = not args.no_progress
    kind = args.figure
    if kind == "metric":
        if not args.metric:
            raise ProbeError("--figure metric needs --metric NAME (or choose another --figure)")
        plots.check_figure_path(args.out)
        df = compute(run, args.metric, steps=args.steps or "all", progress=progress, **params)
        _print_notes(df)
        cols = [m for m in args.metric if m in df.columns] or [c for c in df.columns if c != "step"]
        numeric = [c for c in cols if np.issubdtype(df[c].dtype, np.number)]
        plots.save(plots.metric_over_time(df, numeric, run=run), args.out)
    elif kind in ("pca", "animation"):
        steps = args.steps or ("all" if kind == "animation" else _spread(run.steps))
        if kind == "animation" and len(run.steps) < 2:
            raise ProbeError("an animation needs a run with at least two checkpoints")
        if kind == "pca":
            plots.check_figure_path(args.out)
        else:
            plots.check_animation_path(args.out)
        df = compute(run, "pca2d", steps=steps, progress=progress,
                     **{k: v for k, v in params.items() if k in ("axes", "reference")})
        n = run.task.n_symbols
        coords = np.stack([np.stack([df[f"pca2d_x{k}"], df[f"pca2d_y{k}"]], 1) for k in range(n)], 1)  # [T, n, 2]
        axes = params.get("axes", "refit")
        if kind == "pca":
            plots.save(plots.pca_scatter(list(coords), df["step"].tolist(), axes, title=f"{run.dir.name}"), args.out)
        else:
            plots.animate_pca(coords, df["step"].to_numpy(), args.out, axes, fps=args.fps)
    elif kind == "fourier":
        plots.check_figure_path(args.out)
        step = args.steps or "last"
        kf = compute(run, "key_freqs", steps=step, progress=progress,
                     **{k: v for k, v in params.items() if k in ("key_threshold", "reference")})
        if len(kf) != 1:
            raise ProbeError("--figure fourier shows one checkpoint: give --steps STEP")
        fn = compute(run, "fourier_norms", steps=step, progress=progress, parts="we,wu")
        p = run.task.n_symbols
        norms = {part: np.array([fn[f"{part}_{k}"].iloc[0] for k in range(1, p // 2 + 1)]) for part in ("we", "wu")}
        keys = [int(k) for k in str(kf["key_freqs"].iloc[0]).split(",") if k]
        plots.save(plots.fourier_bars({"W_E": norms["we"], "W_U": norms["wu"]}, keys, int(kf["step"].iloc[0])),
                   args.out)
    else:
        plots.check_figure_path(args.out)
        df = compute(run, "pca_projection_accuracy", steps=args.steps or "last", progress=progress,
                     **{k: v for k, v in params.items() if k in ("n_components", "reference")})
        if len(df) != 1:
            raise ProbeError("--figure projection shows one checkpoint: give --steps STEP")
        plots.save(plots.projection_curves(df.iloc[0], int(df["step"].iloc[0])), args.out)
    print(f"wrote {args.out}")
    return 0


def _spread(steps: np.ndarray) -> str:
    picks = sorted({0, len(steps) // 4, len(steps) // 2, (3 * len(steps)) // 4, len(steps) - 1})
    return ",".join(str(int(steps[i])) for i in picks)


def _theory_task(name: str, p: int) -> Any:
    from probe.tasks import make_task

    if name == "add":
        return make_task("nonmod-add", p=p), "Liu et al.'s addition (non-modular, unordered pairs)"
    if name == "mod-add":
        return make_task("add", p=p), "modular addition"
    return make_task(name, p=p), name


def cmd_theory(args: argparse.Namespace) -> int:
    if args.theory_command is None:
        raise ProbeError("give a theory command: critical-fraction or effective-dynamics")
    if args.theory_command == "critical-fraction":
        return _critical_fraction(args)
    return _effective_dynamics(args)


def _critical_fraction(args: argparse.Namespace) -> int:
    import pandas as pd

    from analyses.effective import critical_fraction
    from analyses.export import write_table

    if args.p < 2:
        raise ProbeError(f"--p must be >= 2, got {args.p}")
    task, label = _theory_task(args.task, args.p)
    sizes, prob, crit, full = critical_fraction(task, trials=args.trials, seed=args.seed, progress=not args.no_progress)
    df = pd.DataFrame({"train_size": sizes, "train_fraction": sizes / task.n_samples, "p_unique": prob})
    print(f"# task {task.describe()}: {label}; {task.n_samples} samples; 'unique' = dof {full} "
          f"(nullity of the full table's constraints); {args.trials} random splits per size", file=sys.stderr)
    if task.modulus:
        print("probe: note: modular task: sum-aggregation structure is degenerate (dof 1 = collapsed "
              "solution); Liu's linear-representation criterion is for non-modular addition", file=sys.stderr)
    text = write_table(df, args.format, args.out)
    if text is not None:
        sys.stdout.write(text)
    print(f"critical fraction (P = 0.5): {crit:.3f}" if np.isfinite(crit) else
          "critical fraction: P(unique) never reaches 0.5", file=sys.stderr if args.format != "table" else sys.stdout)
    return 0


def _effective_dynamics(args: argparse.Namespace) -> int:
    import pandas as pd

    from analyses import plots
    from analyses.effective import check_abelian, effective_dynamics
    from analyses.parallelograms import Parallelograms, hessian, normalize
    from analyses.export import check_writable

    if not args.time_scale > 0:
        raise ProbeError(f"--time-scale must be positive, got {args.time_scale}")
    run = _open(args.run_dir)
    check_abelian(run.task, "the effective theory")
    steps = np.asarray(run.steps)
    if len(steps) < 2:
        raise ProbeError("the effective dynamics need a run with at least two checkpoints")
    check_writable(args.out + ".csv")
    cfg = run.config
    eta = cfg.embed_lr if cfg.embed_lr is not None else cfg.lr
    p0 = Parallelograms.from_labels(run.task.labels)
    h = hessian(run.task.inputs, p0, run.split.train, run.task.n_symbols)
    real_raw = run.series("embed.W_E")[:, : run.task.n_symbols].astype(np.float64)
    if real_raw.ndim != 3:
        raise ProbeError("the effective dynamics are defined for vector embeddings (sum aggregation)")
    times = (steps - steps[0]) * eta * args.time_scale
    pred = effective_dynamics(real_raw[0], h, int(p0.within(run.split.train).sum()), times)
    real = np.stack([normalize(e) for e in real_raw])
    t_idx, k_idx, d_idx = np.meshgrid(np.arange(len(steps)), np.arange(real.shape[1]), np.arange(real.shape[2]),
                                      indexing="ij")
    df = pd.DataFrame({"step": steps[t_idx.ravel()], "t_eff": times[t_idx.ravel()], "symbol": k_idx.ravel(),
                       "dim": d_idx.ravel(), "predicted": pred.ravel(), "real": real.ravel()})
    df.to_csv(args.out + ".csv", index=False)
    plots.save(plots.trajectories(steps, pred, real, title=f"{run.dir.name}: effective theory vs training"),
               args.out + ".png")
    print(f"wrote {args.out}.csv and {args.out}.png")
    return 0


COMMANDS = {"metrics": cmd_metrics, "analyze": cmd_analyze, "export": cmd_export, "plot": cmd_plot,
            "theory": cmd_theory}
