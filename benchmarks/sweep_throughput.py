"""Sweep throughput: a vectorised ensemble against the same runs trained one by one, in one process.

64 liu-toy-add members differing in decoder learning rate (8 values, 1e-4..1e-2, log) and decoder
weight decay (8 values, 0..10), 2,000 steps, checkpoints as the preset writes them. The ensemble
trains all 64 at once; the ordinary trainer trains ``--sample`` of them one by one, and the time per
run is scaled to 64 (every run does the same work). Prints both, the ratio (requirement >= 10x,
target >= 30x) and the peak memory of each part (measured in child processes). ``--batch-size N``
trains every member on minibatches of N of its training pairs (each member draws its own).

    python benchmarks/sweep_throughput.py [--steps 2000] [--members 64] [--sample 8] [--batch-size N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
import numpy as np
from probe.train.config import load_config
from probe.train.ensemble import train_ensemble
from probe.train.loop import train

mode, steps, members, sample = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
batch = {"batch_size": int(sys.argv[5])} if sys.argv[5] != "full" else {}
side = int(round(members ** 0.5))
lrs = np.logspace(-4, -2, side)
wds = np.linspace(0, 10, members // side)
configs = [load_config("liu-toy-add", overrides={"steps": steps, "lr": float(lr), "weight_decay": float(wd), **batch})
           for lr in lrs for wd in wds][:members]
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    if mode == "ensemble":
        train_ensemble(configs, [Path(tmp) / f"m{i}" for i in range(len(configs))], progress=False)
        n = len(configs)
    else:
        pick = np.linspace(0, len(configs) - 1, sample).round().astype(int)
        for i in pick:
            train(configs[i], Path(tmp) / f"r{i}", progress=False)
        n = len(pick)
    seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "runs": n,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(mode: str, steps: int, members: int, sample: int, batch: str) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, mode, str(steps), str(members), str(sample), batch],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--members", type=int, default=64)
    ap.add_argument("--sample", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=None, help="minibatches of this size (default: full batch)")
    args = ap.parse_args()
    batch = str(args.batch_size) if args.batch_size else "full"
    ens = child("ensemble", args.steps, args.members, args.sample, batch)
    one = child("single", args.steps, args.members, args.sample, batch)
    per_run = one["seconds"] / one["runs"]
    serial = per_run * ens["runs"]
    how = f"minibatches of {args.batch_size}" if args.batch_size else "full batch"
    print(f"[sweep] {ens['runs']} liu-toy-add members, {args.steps} steps each, {how}")
    print(f"      vectorised ensemble: {ens['seconds']:.1f} s ({ens['seconds'] / ens['runs']:.2f} s per run), "
          f"peak RSS {ens['rss_mb']:.0f} MB")
    print(f"      one by one: {per_run:.2f} s per run (timed on {one['runs']}), {serial:.0f} s for all "
          f"{ens['runs']}, peak RSS {one['rss_mb']:.0f} MB")
    print(f"      speed-up: {serial / ens['seconds']:.1f}x (required >= 10x, target >= 30x)")


if __name__ == "__main__":
    main()
