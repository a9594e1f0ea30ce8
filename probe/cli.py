"""The ``probe`` command line: the top layer. It parses arguments, calls library functions in
:mod:`probe`, :mod:`probe.train`, :mod:`probe.analyses` and :mod:`probe.reproduce`, and prints; no
library work happens here. Subcommands import their heavy dependencies only when they run. Metric
options, figure names and preset names come from the registries.

Every user error ends as one line ``probe: error: ...`` on stderr and exit code 2; Ctrl-C ends with
exit code 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from probe.errors import ProbeError, RunWriteError

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    def wrap(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn

    return wrap


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        raise ProbeError(f"{message} (see '{self.prog} --help')")


#: the commands whose options come from the registries (metric parameters, figures): the parser loads the
#: registries, and with them numpy, only to build these
REGISTRY_COMMANDS = ("analyze", "export", "plot")


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand an argument list names (its first word that is not an option), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def _io_registries(command: str | None) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """The source kinds and export formats (names; one line each) for the help of ``import`` and
    ``export-checkpoints``, read from their registries only when that command is parsed (they import
    numpy)."""
    kinds = formats = None
    if command == "import":
        from probe.train.importers import SOURCE_KINDS

        kinds = (", ".join(SOURCE_KINDS.names()), "; ".join(f"{k.name}: {k.layout}" for _, k in SOURCE_KINDS.items()))
    if command == "export-checkpoints":
        from probe.train.exporters import EXPORT_FORMATS

        formats = (", ".join(EXPORT_FORMATS.names()),
                   "; ".join(f"{f.name}: {f.description}" for _, f in EXPORT_FORMATS.items()))
    return kinds, formats


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser. The options of the registry commands (``REGISTRY_COMMANDS``) are built
    only for ``command`` (the one being parsed), so ``probe --help`` and every other command start
    without importing the analyses, numpy or anything heavier."""
    full = command in REGISTRY_COMMANDS

    def all_metrics() -> list[Any]:
        from probe.analyses.registry import all_metrics as metrics

        return metrics() if full else []

    parser = _Parser(prog="probe", description="Train grokking runs into HDF5 checkpoint series and analyse them.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("train", help="train a run (preset or YAML config), or resume one",
                       description="Train a new run, or continue an interrupted one with --resume.")
    p.add_argument("config", nargs="?", help="YAML config file (may name a 'preset:' to start from)")
    p.add_argument("--preset", help="start from a named preset (see 'probe presets')")
    p.add_argument("--out", help="run directory to create")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override a config value, e.g. --set lr=1e-3 --set model.d_model=64 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--steps", type=int, help="with --resume: train to this many steps in total")
    p.add_argument("--from", dest="from_run", metavar="RUN[:STEP]", help="start from a checkpoint of another run "
                   "(default: its last) with its config, changed by --set (e.g. train_subset=0.5); the new run "
                   "records its parent and step")
    p.add_argument("--with-optimizer", action="store_true", help="with --from: also take the optimizer state "
                   "(stored at the run's last checkpoint)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")

    p = sub.add_parser("sweep", help="train a grid of runs from a YAML spec (or: probe sweep status SWEEP_DIR)",
                       description="Train every grid point of SPEC into its own run directory under --out; "
                       "running it again finishes what is missing. 'probe sweep status SWEEP_DIR' shows the "
                       "state of each run.")
    p.add_argument("spec", help="sweep spec (YAML), or 'status'")
    p.add_argument("sweep_dir", nargs="?", help="with 'status': the sweep directory")
    p.add_argument("--out", help="sweep directory to create or complete")
    p.add_argument("--dry-run", action="store_true", help="print the number of runs and their resolved configs")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once (local processes or Slurm array "
                   "parallelism)")
    p.add_argument("--executor", default="local",
                   help="local (the default: worker processes), slurm (through submitit) or inline (in this "
                        "process, one group after another: debugging, profiling)")
    p.add_argument("--partition", help="Slurm partition")
    p.add_argument("--time", type=int, help="Slurm time limit per run, minutes")
    p.add_argument("--mem", help="Slurm memory per run, e.g. 4G")
    p.add_argument("--no-vectorize", action="store_true", help="train every run on its own (by default runs "
                   "that differ only in learning rates, weight decays, init scale, seeds, training fraction or "
                   "batch size train together as one batched model)")
    p.add_argument("--vectorize", action="store_true", help="require one batched model for the whole grid")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("phases", help="learning phase of every run of a sweep (Liu et al. App. A Table 1)")
    p.add_argument("sweep_dir")
    p.add_argument("--threshold", type=float, default=0.9, help="accuracy threshold [0.9]")
    p.add_argument("--budget", type=int, default=100_000, help="step budget [100000]")
    p.add_argument("--delay", type=int, default=1000, help="delay threshold in steps [1000]")
    p.add_argument("--format", default="table", help="table, csv, json, markdown, latex or parquet")
    p.add_argument("--out", help="write to this file instead of stdout")

    kinds, formats = _io_registries(command)
    p = sub.add_parser("import", help="import a checkpoint series written by other code as a probe run",
                       description="Write an ordinary probe run from SOURCE" + (f". Kinds: {kinds[1]}" if kinds else "")
                       + ". Tensor names map onto a probe model (TransformerLens' names one to one, others through "
                       "--map); at every checkpoint whose loss the source records, probe's loss on the stored split "
                       "must agree within a relative 1e-3 (the fidelity check).")
    p.add_argument("source", help="a file or directory of checkpoints")
    p.add_argument("--out", required=True, help="run directory to create (new or empty)")
    p.add_argument("--kind", help="the source's layout" + (f": {kinds[0]}" if kinds else "") + " (detected when "
                   "omitted)")
    p.add_argument("--task", help="the task (e.g. add) when the source does not record it, or to override it")
    p.add_argument("--p", type=int, help="the task's modulus when the source does not record it")
    p.add_argument("--train-indices", metavar="FILE", help="the training split: indices a * p + b (or a,b pairs) "
                   "in .npy, .json or text, one per line; validation is every other sample")
    p.add_argument("--map", metavar="FILE", help="YAML: model (the probe model kind and keys), tensors (probe "
                   "parameter: source tensor, or {from, transpose, permute, reshape, slice}), ignore (globs)")
    p.add_argument("--step-pattern", metavar="REGEX", help="where the step is in each file (or checkpoint "
                   "folder) name: a regex with one group [default: the last number in the name]")
    p.add_argument("--force", action="store_true", help="import even when the fidelity check fails (a warning "
                   "instead of an error)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = sub.add_parser("export-checkpoints", help="write a run's checkpoints in other code's layouts "
                       "(safetensors, TransformerLens' grokking demo)",
                       description=f"Formats: {formats[1]}." if formats else None)
    p.add_argument("run_dir")
    p.add_argument("--format", required=True, help="the layout" + (f": {formats[0]}" if formats else ""))
    p.add_argument("--out", required=True, help="the directory (safetensors) or file (tl-demo) to write")
    p.add_argument("--steps", default="all", help="all, first, last, START:STOP[:STRIDE] (steps, inclusive) or a list")

    p = sub.add_parser("info", help="describe a run: task, model, optimizer, split, checkpoints, accuracy")
    p.add_argument("run_dir")
    p.add_argument("--hooks", action="store_true", help="also list the model's hook names")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")

    sub.add_parser("presets", help="list the training presets")
    sub.add_parser("metrics", help="list the registered metrics")

    metric_help = "metric name (repeatable; see 'probe metrics')"

    def metric_options(q: argparse.ArgumentParser) -> None:
        if not full:
            return
        from probe.analyses.registry import all_params

        g = q.add_argument_group("metric parameters (recorded with the result)")
        for prm in all_params().values():
            g.add_argument(f"--{prm.flag}", dest=f"param_{prm.name}", metavar=prm.type.__name__.upper(),
                           help=f"{prm.help} [default: {prm.default}]")

    p = sub.add_parser("analyze", help="compute metrics over a run's checkpoints (one row per step)",
                       description=f"Metrics: {', '.join(m.name for m in all_metrics())}." if full else None)
    p.add_argument("run_dir")
    p.add_argument("--metric", action="append", required=True, metavar="NAME", help=metric_help)
    p.add_argument("--steps", default="all", help="all, first, last, START:STOP[:STRIDE] (steps, inclusive) or a list")
    p.add_argument("--format", default="table", choices=("table", "csv", "json", "parquet"))
    p.add_argument("--out", help="write to this file instead of stdout")
    p.add_argument("--force", action="store_true", help="recompute instead of reading the cache")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    metric_options(p)

    p = sub.add_parser("events", help="events in a run's training curves: thresholds passed, val loss levels, "
                       "grokking delay, loss spikes, ungrokking",
                       description="Events from the per-step training metrics. Every threshold is a parameter "
                       "and is printed with the result.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--threshold", type=float, action="append", metavar="ACC",
                   help="accuracy threshold passed by train and val accuracy (repeatable) [0.5, 0.9, 0.99]")
    p.add_argument("--loss-level", type=float, action="append", metavar="LOSS",
                   help="validation-loss level first undercut (repeatable) [1, 0.1]")
    p.add_argument("--delay-threshold", type=float, default=0.9, help="accuracy for the grokking delay [0.9]")
    p.add_argument("--spike-factor", type=float, default=10.0, help="a spike: training loss above this factor "
                   "times its minimum over the window before [10]")
    p.add_argument("--spike-window", type=int, default=1000, help="steps of that running minimum [1000]")
    p.add_argument("--ungrok-below", type=float, default=0.5, help="ungrokking: val accuracy below this after "
                   "it passed the delay threshold [0.5]")
    p.add_argument("--format", default="table", choices=("table", "csv", "json"))
    p.add_argument("--out", help="write to this file instead of stdout")

    p = sub.add_parser("export", help="tables for papers: tidy per-step rows or one summary row per run")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--metric", action="append", default=[], metavar="NAME", help=metric_help)
    p.add_argument("--summary", action="store_true", help="one row per run (setup, accuracies, RQI milestones)")
    p.add_argument("--steps", default="all")
    p.add_argument("--format", default="csv", choices=("latex", "markdown", "csv", "parquet"))
    p.add_argument("--out", help="output file (stdout if omitted, except parquet)")
    p.add_argument("--no-progress", action="store_true")
    metric_options(p)

    figure_names: list[str] | None = None
    figures = ""
    if full:
        from probe.analyses.figures import FIGURES
        from probe.analyses.sweeps import SWEEP_FIGURES

        figures = "; ".join(f"{name}: {fig.description}" for name, fig in FIGURES.items())
        figure_names = FIGURES.names() + SWEEP_FIGURES.names()
    p = sub.add_parser("plot", help="figures: a metric over time, PCA pictures and animation, Fourier norms, "
                       "projection accuracy", description=f"Figures. {figures}." if full else None)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run directory (several for the overlay "
                   "figures curves and norms), or a sweep directory for the sweep figures")
    p.add_argument("--figure", default="metric", choices=figure_names)
    p.add_argument("--x", help="sweep figures: the swept key on the x axis (data-fraction: train_fraction or "
                   "n_train, found by itself)")
    p.add_argument("--y", help="sweep figures: the swept key on the y axis")
    p.add_argument("--value", help="phase-diagram: show val_step, train_step or delay as a heat map instead")
    p.add_argument("--threshold", type=float, default=0.9, help="sweep figures: phase accuracy threshold [0.9]")
    p.add_argument("--budget", type=int, default=100_000, help="sweep figures: phase step budget [100000]")
    p.add_argument("--delay", type=int, default=1000, help="sweep figures: phase delay threshold [1000]")
    p.add_argument("--metric", action="append", default=[], metavar="NAME", help=metric_help)
    p.add_argument("--out", required=True, help="figure file (.png, .pdf, .svg; .gif or .mp4 for the animation)")
    p.add_argument("--steps", default=None, help="checkpoints to show (default: all; pca: first, a middle one, "
                   "last; fourier and projection: last)")
    p.add_argument("--fps", type=int, default=8, help="animation frames per second")
    p.add_argument("--no-progress", action="store_true")
    metric_options(p)

    p = sub.add_parser("reproduce", help="re-train a published figure and compare with its authors' numbers",
                       description="Train what a registered reproduction needs (through 'probe sweep'; a second "
                       "call reuses finished runs), write its figure, comparison.csv and comparison.md into "
                       "--out, and print the verdict per reference number. 'probe reproduce --list' lists them.")
    p.add_argument("name", nargs="?", help="the reproduction (see --list)")
    p.add_argument("--list", action="store_true", help="list the registered reproductions")
    p.add_argument("--out", help="directory for the runs, tables and figures (created; reused on a second call)")
    p.add_argument("--scale", default="quick", help="quick (minutes, the qualitative claims) or paper (the "
                   "authors' configuration) [quick]")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    p.add_argument("--executor", default="local",
                   help="local (the default: worker processes), slurm (through submitit) or inline (in this "
                        "process, one group after another: debugging, profiling)")
    p.add_argument("--partition", help="Slurm partition")
    p.add_argument("--time", type=int, help="Slurm time limit per run, minutes")
    p.add_argument("--mem", help="Slurm memory per run, e.g. 4G")
    p.add_argument("--no-vectorize", action="store_true", help="train every run on its own (by default runs "
                   "that differ only in vectorisable keys train together as one batched model, as in 'probe sweep')")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("theory", help="Liu et al.'s effective theory: critical fraction, effective dynamics; Varma "
                       "et al.'s critical dataset size")
    tsub = p.add_subparsers(dest="theory_command", metavar="WHAT", parser_class=_Parser)
    t = tsub.add_parser("critical-fraction", help="P(unique linear representation) per training-set size (Liu Fig. 4a)")
    t.add_argument("--task", default="nonmod-add", help="an abelian probe task: nonmod-add (Liu's non-modular "
                   "addition, the default), add (modular addition), mul, x2+y2, ...")
    t.add_argument("--p", type=int, default=10)
    t.add_argument("--trials", type=int, default=100, help="random splits per training-set size")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--format", default="table", choices=("table", "csv", "json"))
    t.add_argument("--out")
    t.add_argument("--no-progress", action="store_true")
    t = tsub.add_parser("critical-dataset-size", help="Varma et al.'s critical dataset size: where the memorising "
                        "circuit's efficiency falls to the generalising one's, from a sweep of runs on shuffled and "
                        "on the task's labels at several sizes and seeds, all at one constraint.norm")
    t.add_argument("sweep_dir")
    t.add_argument("--min-val-acc", type=float, default=0.9, help="a run on the task's labels counts as a "
                   "generalising network from this final validation accuracy (default 0.9)")
    t.add_argument("--format", default="table", choices=("table", "csv", "json"))
    t.add_argument("--out", help="write the efficiency table (size, seed, memorising, generalising) to this file")
    t = tsub.add_parser("effective-dynamics", help="integrate the effective loss from a run's initial embeddings "
                        "and compare with its real trajectory (Liu Fig. 4c/d)")
    t.add_argument("run_dir")
    t.add_argument("--out", required=True, help="output prefix: writes PREFIX.csv and PREFIX.png")
    t.add_argument("--time-scale", default="fit",
                   help="effective time per (step x embedding lr): 'fit' (least squares against the run, the "
                   "default) or a number")
    return parser


def _warn(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    print(f"probe: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    warnings.showwarning = _warn  # one line per warning, no source echo
    try:
        from probe.plugins import load_plugins

        load_plugins()  # extensions named in PROBE_PLUGINS register before any config or run is read
        arguments = list(sys.argv[1:] if argv is None else argv)
        parser = build_parser(command_of(arguments))
        args = parser.parse_args(arguments)
        if args.version:
            from probe import __version__

            print(__version__)
            return 0
        if args.command is None:
            parser.print_help()
            return 0
        return int(COMMANDS[args.command](args) or 0)
    except RunWriteError as exc:
        print(f"probe: error: {exc.for_cli()}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)  # the HDF5 library must not tear down a file whose writes failed
    except ProbeError as exc:
        print(f"probe: error: {exc.for_cli()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("probe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# helpers ------------------------------------------------------------------------------------------
def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {k[len("param_"):]: v for k, v in vars(args).items() if k.startswith("param_") and v is not None}


def _print_notes(df: Any) -> None:
    for name, info in (df.attrs.get("probe", {}) if df is not None else {}).items():
        for note in info.get("notes", []):
            print(f"probe: note ({name}): {note}", file=sys.stderr)


def _emit(text: str | None) -> None:
    if text is not None:
        sys.stdout.write(text)


def _interrupted(run_dir: str) -> int:
    print(f"probe: interrupted; continue with: probe train --resume {run_dir}", file=sys.stderr)
    return 130


# training -------------------------------------------------------------------------------------------
@command("train")
def cmd_train(args: argparse.Namespace) -> int:
    from probe.train.config import load_config, parse_sets

    if args.resume:
        if args.config or args.preset or args.set:
            raise ProbeError("--resume continues a run with its stored config; drop CONFIG, --preset and --set "
                             "(use --steps N to train further)")
        from probe.train.loop import resume

        try:
            path = resume(args.resume, steps=args.steps, progress=not args.no_progress)
        except KeyboardInterrupt:
            return _interrupted(args.resume)
        print(f"resumed and finished {path}")
        return 0
    if args.steps is not None:
        raise ProbeError("--steps goes with --resume; for a new run use --set steps=N")
    if args.with_optimizer and not args.from_run:
        raise ProbeError("--with-optimizer goes with --from RUN[:STEP]")
    if not args.config and not args.preset and not args.from_run:
        raise ProbeError("give a preset (--preset NAME) or a YAML config file; 'probe presets' lists presets")
    parent = None
    if args.from_run:
        from probe.run import load_run
        from probe.train.loop import parent_checkpoint, parse_from

        with load_run(parse_from(args.from_run)[0]) as prun:
            base = prun.config
        cfg = load_config(args.preset, args.config, parse_sets(args.set), base=base)
        parent = parent_checkpoint(args.from_run, cfg, optimizer=args.with_optimizer)
    else:
        cfg = load_config(args.preset, args.config, parse_sets(args.set))
    if args.dry_run:
        import yaml

        from probe.train.config import check_data

        check_data(cfg)  # what training would refuse first (a group table that is not there, n_train too large)
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    if not args.out:
        raise ProbeError("--out RUN_DIR is required")
    from probe.train.loop import train

    try:
        path = train(cfg, args.out, progress=not args.no_progress, parent=parent)
    except KeyboardInterrupt:
        return _interrupted(args.out)
    print(f"wrote {path}")
    return 0


@command("sweep")
def cmd_sweep(args: argparse.Namespace) -> int:
    if args.spec == "status":
        from probe.sweep import load_sweep

        if not args.sweep_dir:
            raise ProbeError("give the sweep directory: probe sweep status SWEEP_DIR")
        status = load_sweep(args.sweep_dir).status()
        counts = status["state"].value_counts()
        print(", ".join(f"{s}: {int(counts.get(s, 0))}" for s in ("done", "running", "failed", "interrupted",
                                                                  "pending")) + f" (of {len(status)})")
        for _, row in status.iterrows():
            print(f"{row['state']:12s} {row['run']}" + (f"  -- {row['reason']}" if row["reason"] else ""))
        return 0
    from probe.train import sweep

    if args.sweep_dir:
        raise ProbeError(f"unexpected argument {args.sweep_dir!r} (the sweep directory goes with --out)")
    spec = sweep.load_spec(args.spec)
    if args.dry_run:  # streamed: each run is printed as soon as its config is resolved and checked
        import yaml

        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        print(f"{sweep.grid_size(spec)} runs; swept: {', '.join(spec.swept)}", flush=True)
        for pt in sweep.iter_grid(spec):
            sys.stdout.write(f"--- {pt.name}\n" + yaml.dump(pt.config.to_dict(), Dumper=dumper, sort_keys=False))
        return 0
    if not args.out:
        raise ProbeError("--out SWEEP_DIR is required")
    if args.vectorize and args.no_vectorize:
        raise ProbeError("give --vectorize or --no-vectorize, not both")
    mode = "force" if args.vectorize else "off" if args.no_vectorize else "auto"
    opts = sweep.ExecutorOptions(args.executor, args.jobs, args.partition, args.time, args.mem, mode)
    try:
        counts = sweep.run_sweep(spec, args.out, opts, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"probe: interrupted; run the same command again to finish the sweep in {args.out}", file=sys.stderr)
        return 130
    print(f"{args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    # exit 1 when a run failed or was left unfinished (runs another driver holds are its business)
    return 1 if any(counts.get(s, 0) for s in ("failed", "interrupted", "pending")) else 0


@command("phases")
def cmd_phases(args: argparse.Namespace) -> int:
    from probe.analyses.export import check_writable, write_table
    from probe.phases import PhaseRule
    from probe.sweep import load_sweep

    rule = PhaseRule(args.threshold, args.budget, args.delay)
    if args.out:
        check_writable(args.out)
    df = load_sweep(args.sweep_dir).phases(rule)
    print(f"# phases (Liu App. A Table 1): threshold {rule.threshold}, budget {rule.budget}, delay {rule.delay}",
          file=sys.stderr)
    _emit(write_table(df, args.format, args.out))
    return 0


@command("presets")
def cmd_presets(args: argparse.Namespace) -> int:
    from probe.train.config import preset_rows

    for name, task, model, steps in preset_rows():
        print(f"{name:28s} {task:18s} model={model:12s} steps={steps}")
    return 0


def _fmt(x: Any) -> str:
    return "n/a" if x is None or x != x else f"{x:.4g}"


def _early_stop_text(rule: dict[str, Any] | None) -> str:
    if rule is None:
        return ""
    when = (f"stopped early at step {rule['stopped_at']}" if rule["stopped_at"] is not None
            else "no early stop taken")
    return (f"; early stop {rule['after_generalization']} steps after train and val acc pass "
            f"{rule['threshold']:g}: {when}")


@command("import")
def cmd_import(args: argparse.Namespace) -> int:
    from probe.train.importers import ImportRequest, import_series

    req = ImportRequest(source=Path(args.source), out=Path(args.out), kind=args.kind, task=args.task, p=args.p,
                        train_indices=Path(args.train_indices) if args.train_indices else None,
                        map=Path(args.map) if args.map else None, step_pattern=args.step_pattern, force=args.force,
                        progress=not args.no_progress)
    res = import_series(req)
    for note in res.notes:
        print(f"probe: note: {note}", file=sys.stderr)
    rec, fid = res.record, res.record["fidelity"]
    worst = fid.get("worst")
    check = (f"{fid['compared']} checkpoints compared with the source's losses, largest relative difference "
             f"{worst['relative']:.2g} (step {worst['step']}, {worst['loss']}; tolerance {fid['rtol']:g})"
             if fid["compared"] and worst else "nothing to compare (the source records no losses)")
    print(f"imported {len(res.steps)} checkpoints (steps {res.steps[0]}..{res.steps[-1]}) from {args.source} "
          f"({res.kind}) into {res.run_dir}")
    print(f"mapping: {rec['mapping']['name']}; model from {rec['model_from']}; task from {rec['task_from']}; "
          f"split from {rec['split_from']}")
    print(f"fidelity: {check}" + (f"; {fid['failed']} failed (--force)" if fid["failed"] else ""))
    if rec["duplicates"]:
        print(f"repeated checkpoints: {len(rec['duplicates'])} hold exactly an earlier checkpoint's tensors")
    return 0


@command("export-checkpoints")
def cmd_export_checkpoints(args: argparse.Namespace) -> int:
    from probe.train.exporters import export_checkpoints

    res = export_checkpoints(args.run_dir, args.format, args.out, steps=args.steps)
    print(f"wrote {len(res.steps)} checkpoints (steps {res.steps[0]}..{res.steps[-1]}) of {args.run_dir} as "
          f"{res.format} to {res.out}")
    return 0


def _imported_text(imp: dict[str, Any]) -> str:
    fid = imp["fidelity"]
    worst = fid.get("worst")
    if fid.get("compared") and worst:
        check = (f"fidelity: {fid['compared']} checkpoints agree with the source's losses within "
                 f"{worst['relative']:.2g} (tolerance {fid['rtol']:g})" if not fid.get("failed") else
                 f"fidelity: {fid['failed']} of {fid['compared']} checkpoints disagree with the source's losses "
                 "(imported with --force)")
    else:
        check = "fidelity: nothing compared (the source records no losses)"
    files = f"{imp['files']} file(s) hashed" + (f", sha256 {imp['sha256'][0][:16]}..." if imp["files"] == 1 else "")
    return (f"{imp['kind']} from {imp['source']} on {imp['imported']} ({files}); tensors {imp['mapping']}; model "
            f"from {imp['model_from']}; task from {imp['task_from']}; {check}"
            + (f"; {imp['duplicates']} repeated checkpoint(s)" if imp["duplicates"] else ""))


@command("info")
def cmd_info(args: argparse.Namespace) -> int:
    from probe.run import describe_run, load_run

    with load_run(args.run_dir) as run:
        info = describe_run(run)
        if args.hooks:
            info["hooks"] = run.hook_names()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    opt, ck, fin, sp = info["optimizer"], info["checkpoints"], info["final"], info["split"]
    model = ", ".join(f"{k}={v}" for k, v in info["model"].items() if k != "kind")
    sched = ck["schedule"]
    sched_txt = {"every": f"every {sched['every']} steps",
                 "geometric": f"geometric, {sched['count']} log-spaced",
                 "adaptive": f"adaptive (min_every {sched['min_every']}, max_every {sched['max_every']}, "
                             f"threshold {sched['threshold']})"}.get(sched["schedule"], sched["schedule"])
    ckpts = (f"{ck['count']} at steps {ck['first']}..{ck['last']}" if ck["count"] else "none yet")
    final = ("no metrics recorded yet" if fin.get("step") is None else
             f"step {int(fin['step'])}: train acc {_fmt(fin['train_acc'])} loss {_fmt(fin['train_loss'])}, "
             f"val acc {_fmt(fin['val_acc'])} loss {_fmt(fin['val_loss'])}")
    imp = info["imported"]
    if imp is not None and imp["split_from"] == "none":
        split_txt = "none (imported without a split: metrics that need one refuse)"
    elif imp is not None:
        split_txt = f"{sp['train']} train / {sp['val']} val (from {imp['split_from']})"
    else:
        split_txt = (f"{sp['train']} train / {sp['val']} val (train_fraction {sp['train_fraction']}"
                     + (f", n_train {sp['n_train']}" if sp["n_train"] else "") + ")")
    unknown = "not recorded by the source (imported run)"
    lines = [
        ("run", f"{info['run']} ({info['status']})"),
        ("task", f"{info['task']}: {info['samples']} samples, {info['n_symbols']} symbols, {info['n_classes']} classes"),
        ("split", split_txt),
        ("seeds", f"seed {info['seeds']['seed']}, split_seed {info['seeds']['split_seed']}"
                  if info["training_recorded"] else unknown),
        ("model", f"{info['model']['kind']} ({model})"),
        ("optimizer", f"{opt['name']} lr {opt['lr']:g} wd {opt['weight_decay']:g}; embeddings lr "
                      f"{opt['embed_lr']:g} wd {opt['embed_weight_decay']:g}; betas {tuple(opt['betas'])}; "
                      f"warmup {opt['warmup_steps']}; batch {opt['batch_size']}" if info["training_recorded"]
         else unknown),
        *([("imported", _imported_text(imp))] if imp is not None else []),
        ("steps", f"{info['steps']} configured" + _early_stop_text(info["early_stop"])),
        *([("training", info["training"])] if info["training"] else []),
        *([("parent", f"{info['parent']['run']} at step {info['parent']['step']}"
                      + (" (weights and optimizer state)" if info["parent"]["optimizer"] else " (weights)")
                      + (f"; changed: {info['parent']['changed']}" if info["parent"]["changed"] else ""))]
          if info["parent"] else []),
        ("checkpoints", f"{ckpts}; schedule {sched_txt}; tensors {len(ck['tensors'])} ({', '.join(ck['tensors'])})"),
        ("metrics", f"{info['metrics_rows']} rows, every {sched['metrics_every']} steps"),
        ("final", final),
        ("file", f"{info['file']['path']} ({info['file']['bytes'] / 1e6:.2f} MB, schema v{info['file']['schema_version']}, "
                 f"created {info['file']['created']})"),
        ("packages", ", ".join(f"{k} {v}" for k, v in info["file"]["packages"].items())),
    ]
    for key, value in lines:
        print(f"{key + ':':13s}{value}")
    if args.hooks:
        print("hooks:")
        for name in info["hooks"]:
            print(f"  {name}")
    return 0


# analysis -------------------------------------------------------------------------------------------
@command("metrics")
def cmd_metrics(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from probe.analyses.registry import all_metrics

    rows = [(m.name, "+".join(sorted(m.needs)), m.tasks, m.description,
             ", ".join(p.name for p in m.params) or "-") for m in all_metrics()]
    print(tabulate(rows, headers=("metric", "needs", "applies to", "description", "parameters"),
                   tablefmt="simple", maxcolwidths=[None, None, 24, 60, 24]))
    return 0


@command("analyze")
def cmd_analyze(args: argparse.Namespace) -> int:
    from probe.analyses.export import check_writable, write_table
    from probe.analyses.runner import compute
    from probe.run import load_run

    if args.out:
        check_writable(args.out)
    run = load_run(args.run_dir)
    df = compute(run, args.metric, steps=args.steps, force=args.force, progress=not args.no_progress,
                 device=args.device, **_params(args))
    _print_notes(df)
    _emit(write_table(df, args.format, args.out))
    return 0


@command("events")
def cmd_events(args: argparse.Namespace) -> int:
    import pandas as pd

    from probe.analyses.events import EventRule, find_events
    from probe.analyses.export import check_writable, write_table
    from probe.run import load_run, run_labels

    rule = EventRule(thresholds=tuple(args.threshold or (0.5, 0.9, 0.99)),
                     loss_levels=tuple(args.loss_level or (1.0, 0.1)), delay_threshold=args.delay_threshold,
                     spike_factor=args.spike_factor, spike_window=args.spike_window, ungrok_below=args.ungrok_below)
    if args.out:
        check_writable(args.out)
    runs = [load_run(d) for d in args.run_dirs]
    tables = []
    for label, run in zip(run_labels([r.dir for r in runs]), runs):
        t = find_events(run.metrics, rule).table()
        if len(runs) > 1:
            t.insert(0, "run", label)
        tables.append(t)
    df = pd.concat(tables, ignore_index=True)
    params = ", ".join(f"{k}={v}" for k, v in vars(rule).items())
    print(f"# events: {params}", file=sys.stderr)
    _emit(write_table(df, args.format, args.out))
    return 0


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    from probe.analyses import export
    from probe.run import load_run

    if not args.summary and not args.metric:
        raise ProbeError("give --metric NAME (repeatable) or --summary")
    if args.out:
        export.check_writable(args.out)
    from probe.sweep import INDEX_FILE, load_sweep

    if any((Path(d) / INDEX_FILE).is_file() for d in args.run_dirs):
        if len(args.run_dirs) != 1:
            raise ProbeError("a sweep directory is exported alone (its runs are the rows)")
        from probe.analyses.sweeps import sweep_summary, sweep_tidy

        sweep = load_sweep(args.run_dirs[0])
        if args.summary:
            df = sweep_summary(sweep, progress=not args.no_progress)
        else:
            df = sweep_tidy(sweep, args.metric, steps=args.steps, progress=not args.no_progress, **_params(args))
        _emit(export.write_table(df, args.format, args.out))
        return 0
    runs = [load_run(d) for d in args.run_dirs]
    if len({r.dir.resolve() for r in runs}) != len(runs):
        raise ProbeError("the same run is given twice")
    if args.summary:
        df = export.summary(runs, progress=not args.no_progress)
    else:
        df = export.tidy(runs, args.metric, steps=args.steps, progress=not args.no_progress, **_params(args))
    _emit(export.write_table(df, args.format, args.out))
    return 0


@command("plot")
def cmd_plot(args: argparse.Namespace) -> int:
    from probe.analyses.figures import FigureRequest, make_figure
    from probe.analyses.sweeps import SWEEP_FIGURES, SweepFigureRequest, make_sweep_figure
    from probe.run import load_run
    from probe.sweep import INDEX_FILE, load_sweep

    args.run_dir = args.run_dirs[0]
    is_sweep = (Path(args.run_dir) / INDEX_FILE).is_file()
    if args.figure in SWEEP_FIGURES.names() or is_sweep:
        if len(args.run_dirs) > 1:
            raise ProbeError("a sweep figure shows one sweep directory")
        if args.figure not in SWEEP_FIGURES.names():
            raise ProbeError(f"{args.run_dir} is a sweep; sweep figures: {', '.join(SWEEP_FIGURES.names())}",
                             param="figure")
        if not is_sweep:
            raise ProbeError(f"--figure {args.figure} needs a sweep directory; {args.run_dir} is not one")
        from probe.phases import PhaseRule

        req = SweepFigureRequest(args.out, args.x, args.y, args.value, PhaseRule(args.threshold, args.budget,
                                                                                 args.delay),
                                 progress=not args.no_progress,
                                 convention=_params(args).get("convention", "liu"))
        make_sweep_figure(args.figure, load_sweep(args.run_dir), req)
        print(f"wrote {args.out}")
        return 0
    request = FigureRequest(out=args.out, metrics=tuple(args.metric), steps=args.steps, params=_params(args),
                            fps=args.fps, progress=not args.no_progress)
    runs = [load_run(d) for d in args.run_dirs]
    df = make_figure(args.figure, runs if len(runs) > 1 else runs[0], request)
    _print_notes(df)
    print(f"wrote {args.out}")
    return 0


@command("reproduce")
def cmd_reproduce(args: argparse.Namespace) -> int:
    from probe.reproduce.registry import all_reproductions, recorded_verdict

    if args.list:
        if args.name or args.out:
            raise ProbeError("--list takes no reproduction name and no --out")
        for rec in all_reproductions():
            print(f"{rec.name}: {rec.paper}, {rec.figure}")
            print(f"  compared with: {rec.artefact.repository} {rec.artefact.path} (commit "
                  f"{rec.artefact.commit[:7]}): {rec.artefact.description}")
            print(f"  trains: {rec.trains}")
            for sc in rec.scales.values():
                print(f"  scale {sc.name}: {sc.time} on 2 CPU cores; {sc.purpose}")
            print(f"  last recorded verdict: {recorded_verdict(rec)}")
        return 0
    from probe.reproduce.registry import get_reproduction

    if not args.name:
        names = ", ".join(r.name for r in all_reproductions())
        raise ProbeError(f"give a reproduction name (one of: {names}) or --list")
    get_reproduction(args.name)
    if not args.out:
        raise ProbeError("--out DIR is required")
    from probe.reproduce.runner import reproduce

    try:
        res = reproduce(args.name, args.out, args.scale, args.jobs, args.executor, args.partition, args.time,
                        args.mem, progress=not args.no_progress, vectorize="off" if args.no_vectorize else "auto")
    except KeyboardInterrupt:
        print(f"probe: interrupted; run the same command again to finish {args.out}", file=sys.stderr)
        return 130
    for path in res.files:
        print(f"wrote {path}")
    rows = res.analysis.rows
    for row in rows:
        print(f"{row.verdict:8s} {row.quantity}: paper {row.paper}; probe {row.probe}")
    agree = sum(r.verdict == "agrees" for r in rows)
    print(f"{res.reproduction.name} ({res.scale} scale): {agree} of {len(rows)} numbers agree")
    return 0


@command("theory")
def cmd_theory(args: argparse.Namespace) -> int:
    if args.theory_command is None:
        raise ProbeError("give a theory command: critical-fraction, critical-dataset-size or effective-dynamics")
    if args.theory_command == "critical-dataset-size":
        from probe.analyses.export import check_writable, write_table
        from probe.analyses.theory import critical_dataset_size_table

        if args.out:
            check_writable(args.out)
        res = critical_dataset_size_table(args.sweep_dir, args.min_val_acc)  # refuses before anything is written
        counts = res.runs["circuit"].value_counts()
        print(f"# {args.sweep_dir}: {counts.get('memorising', 0)} memorising and {counts.get('generalising', 0)} "
              f"generalising runs at parameter norm {res.norm:.4g}; efficiency = logit scale (correct logit minus "
              "the mean of the others) at that norm", file=sys.stderr)
        for note in res.notes:
            print(f"probe: note: {note}", file=sys.stderr)
        _emit(write_table(res.curves, args.format, args.out))
        print(f"critical dataset size: {res.estimate.describe()}",
              file=sys.stderr if args.format != "table" and not args.out else sys.stdout)
        return 0
    if args.theory_command == "critical-fraction":
        from probe.analyses.export import write_table
        from probe.analyses.theory import critical_fraction_table

        res = critical_fraction_table(args.task, args.p, args.trials, args.seed, progress=not args.no_progress)
        print(f"# task {res.task.describe()}: {res.label}; {res.task.n_samples} samples; 'unique' = dof "
              f"{res.full_dof} (nullity of the full table's constraints); {args.trials} random splits per size",
              file=sys.stderr)
        for note in res.notes:
            print(f"probe: note: {note}", file=sys.stderr)
        _emit(write_table(res.table, args.format, args.out))
        crit = res.critical
        print(f"critical fraction (P = 0.5): {crit:.3f}" if crit == crit else
              "critical fraction: P(unique) never reaches 0.5", file=sys.stderr if args.format != "table" else sys.stdout)
        return 0
    from probe.analyses import plots
    from probe.analyses.export import check_writable
    from probe.analyses.theory import effective_dynamics_table
    from probe.run import load_run

    run = load_run(args.run_dir)
    check_writable(args.out + ".csv")
    res = effective_dynamics_table(run, args.time_scale)
    res.table.to_csv(args.out + ".csv", index=False)
    how = "fitted by least squares" if res.fitted else "given"
    title = f"{run.dir.name}: effective theory (time scale {res.time_scale:.3g}, {how}) vs training"
    plots.save(plots.trajectories(run.steps, res.predicted, res.real, title=title), args.out + ".png")
    print(f"time scale {res.time_scale:.4g} ({how}): rms difference {res.rms:.4f} (at time scale 1: {res.rms_unit:.4f})")
    print(f"wrote {args.out}.csv and {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
