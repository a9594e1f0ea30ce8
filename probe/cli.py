"""The ``probe`` command line. Subcommands import their heavy dependencies only when they run.

Every user error ends as one line ``probe: error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn, Sequence

from probe.errors import ProbeError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        raise ProbeError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")

    p = sub.add_parser("info", help="describe a run: task, model, optimizer, split, checkpoints, accuracy")
    p.add_argument("run_dir")
    p.add_argument("--hooks", action="store_true", help="also list the model's hook names")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")

    sub.add_parser("presets", help="list the training presets")

    from analyses.commands import add_parsers  # the analysis subcommands (options come from the registry)

    add_parsers(sub)
    return parser


def _warn(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    print(f"probe: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    warnings.showwarning = _warn  # one line per warning, no source echo
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.version:
            from probe import __version__

            print(__version__)
            return 0
        if args.command is None:
            parser.print_help()
            return 0
        if args.command in _COMMANDS:
            return int(_COMMANDS[args.command](args) or 0)
        from analyses.commands import COMMANDS

        return int(COMMANDS[args.command](args) or 0)
    except ProbeError as exc:
        print(f"probe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("probe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# commands --------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from train.config import load_config, parse_sets

    if args.resume:
        if args.config or args.preset or args.set:
            raise ProbeError("--resume continues a run with its stored config; drop CONFIG, --preset and --set "
                             "(use --steps N to train further)")
        from train.loop import resume

        try:
            path = resume(args.resume, steps=args.steps, progress=not args.no_progress)
        except KeyboardInterrupt:
            raise ProbeError(f"interrupted; continue with: probe train --resume {args.resume}") from None
        print(f"resumed and finished {path}")
        return 0
    if args.steps is not None:
        raise ProbeError("--steps goes with --resume; for a new run use --set steps=N")
    if not args.config and not args.preset:
        raise ProbeError("give a preset (--preset NAME) or a YAML config file; 'probe presets' lists presets")
    cfg = load_config(args.preset, args.config, parse_sets(args.set))
    if args.dry_run:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    if not args.out:
        raise ProbeError("--out RUN_DIR is required")
    from train.loop import train

    try:
        path = train(cfg, args.out, progress=not args.no_progress)
    except KeyboardInterrupt:
        raise ProbeError(f"interrupted; continue with: probe train --resume {args.out}") from None
    print(f"wrote {path}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from train.config import PRESETS

    for name, data in PRESETS.items():
        model = data["model"]["kind"]
        task = data["task"] + (f" p={data['p']}" if data.get("p") else "") + (f" n={data['n']}" if data.get("n") else "")
        print(f"{name:28s} {task:18s} model={model:12s} steps={data['steps']}")
    return 0


def _fmt(x: float) -> str:
    return "n/a" if x != x else f"{x:.4g}"


def run_info(run: Any) -> dict[str, Any]:
    """The facts ``probe info`` prints, as a JSON-able dict."""
    cfg = run.config
    steps = run.steps
    metrics = run.metrics
    last = metrics.iloc[-1].to_dict() if len(metrics) else {}
    n_train, n_val = run.split.sizes
    attrs = run.attrs
    return {
        "run": str(run.dir),
        "status": "finished" if run.finished else "in progress or interrupted",
        "task": run.task.describe(),
        "samples": run.task.n_samples,
        "n_symbols": run.task.n_symbols,
        "n_classes": run.task.n_classes,
        "model": cfg.to_dict()["model"],
        "optimizer": {"name": cfg.optimizer, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
                      "embed_lr": cfg.resolved_embed_lr, "embed_weight_decay": cfg.resolved_embed_weight_decay,
                      "betas": list(cfg.betas), "warmup_steps": cfg.warmup_steps,
                      "batch_size": cfg.batch_size if cfg.batch_size else "full"},
        "split": {"train": n_train, "val": n_val, "train_fraction": cfg.train_fraction, "n_train": cfg.n_train},
        "seeds": {"seed": cfg.seed, "split_seed": cfg.split_seed},
        "steps": cfg.steps,
        "checkpoints": {"count": int(len(steps)), "first": int(steps[0]) if len(steps) else None,
                        "last": int(steps[-1]) if len(steps) else None,
                        "schedule": cfg.to_dict()["checkpoint"], "tensors": run.tensor_names},
        "metrics_rows": int(len(metrics)),
        "final": {k: last.get(k) for k in ("step", "train_loss", "train_acc", "val_loss", "val_acc")},
        "file": {"path": str(run.path), "bytes": os.path.getsize(run.path),
                 "schema_version": int(attrs.get("schema_version", -1)), "created": attrs.get("created"),
                 "packages": json.loads(attrs.get("packages", "{}"))},
    }


def cmd_info(args: argparse.Namespace) -> int:
    from probe.run import load_run

    with load_run(args.run_dir) as run:
        info = run_info(run)
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
                             f"threshold {sched['threshold']})"}[sched["schedule"]]
    lines = [
        ("run", f"{info['run']} ({info['status']})"),
        ("task", f"{info['task']}: {info['samples']} samples, {info['n_symbols']} symbols, {info['n_classes']} classes"),
        ("split", f"{sp['train']} train / {sp['val']} val (train_fraction {sp['train_fraction']}"
                  + (f", n_train {sp['n_train']}" if sp["n_train"] else "") + ")"),
        ("seeds", f"seed {info['seeds']['seed']}, split_seed {info['seeds']['split_seed']}"),
        ("model", f"{info['model']['kind']} ({model})"),
        ("optimizer", f"{opt['name']} lr {opt['lr']:g} wd {opt['weight_decay']:g}; embeddings lr "
                      f"{opt['embed_lr']:g} wd {opt['embed_weight_decay']:g}; betas {tuple(opt['betas'])}; "
                      f"warmup {opt['warmup_steps']}; batch {opt['batch_size']}"),
        ("steps", f"{info['steps']} configured"),
        ("checkpoints", f"{ck['count']} at steps {ck['first']}..{ck['last']}; schedule {sched_txt}; "
                        f"tensors {len(ck['tensors'])} ({', '.join(ck['tensors'])})"),
        ("metrics", f"{info['metrics_rows']} rows, every {sched['metrics_every']} steps"),
        ("final", f"step {fin.get('step') and int(fin['step'])}: train acc {_fmt(fin.get('train_acc', float('nan')))} "
                  f"loss {_fmt(fin.get('train_loss', float('nan')))}, val acc {_fmt(fin.get('val_acc', float('nan')))} "
                  f"loss {_fmt(fin.get('val_loss', float('nan')))}"),
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


_COMMANDS = {"train": cmd_train, "info": cmd_info, "presets": cmd_presets}

if __name__ == "__main__":
    sys.exit(main())
