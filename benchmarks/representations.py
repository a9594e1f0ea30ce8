"""Representation metrics over 200 checkpoints of the nanda-modadd model, against a straightforward
version, in one run.

probe: one ``analyses.compute`` call with every metric of the family; the runner loops over the
checkpoints once, loads each checkpoint's weights into one model, and the metrics that need the
neuron activations (Fourier norms of the neurons, restricted and excluded loss) share one cached
forward pass per checkpoint. Projection accuracy is computed at n in {1, 2, 4, 8, 16, 32, all} for
both bases (current and final principal components).

Straightforward: one metric at a time, one checkpoint at a time, nothing shared: the run is opened
afresh, a fresh model is built and the forward passes are redone for every (metric, checkpoint).
It runs on a sample of the checkpoints (``--reference-checkpoints``); checkpoints per second are
compared per metric.

    python benchmarks/representations.py [--run RUN_DIR] [--checkpoints 200]

Without ``--run`` it first trains the nanda-modadd preset for 1,990 steps with a checkpoint every
10 steps (200 checkpoints; several minutes on 2 cores). Prints per metric: checkpoints/s for both,
the ratio, the embedding-only requirement (>= 50 checkpoints/s), the total time (< 15 minutes) and
peak memory for the first half and the whole series (it must not grow with the series).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EMBEDDING_ONLY = ["fourier_gini", "key_freq_energy", "key_freqs", "pca_variance", "effective_dim",
                  "lottery_ticket", "circularity", "pca2d"]
FORWARD = ["fourier_norms", "restricted_loss", "excluded_loss", "pca_projection_accuracy",
           "distance_irrelevance", "gradient_symmetricity"]
PARAMS = {"n_components": "1,2,4,8,16,32,all"}

CHILD = """
import resource, sys, time, probe
from probe import analyses
run = probe.load_run(sys.argv[1])
n = int(sys.argv[2])
steps = ",".join(str(int(s)) for s in run.steps[:n])
t0 = time.perf_counter()
analyses.compute(run, sys.argv[3].split(","), steps=steps, cache=False, n_components="1,2,4,8,16,32,all")
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def make_run(root: Path, n: int) -> Path:
    from probe.train.config import load_config
    from probe.train.loop import train

    cfg = load_config("nanda-modadd", overrides={"steps": str(10 * (n - 1)), "checkpoint.every": "10",
                                                 "checkpoint.metrics_every": "10"})
    print(f"training nanda-modadd for {10 * (n - 1)} steps ({n} checkpoints) ...", flush=True)
    return Path(train(cfg, root / "nanda-200", progress=True)).parent


def per_metric_fast(run_dir: Path, steps: str) -> dict[str, float]:
    """Each metric's own time inside probe's runner (still sharing its loop), for the per-metric table."""
    from probe import analyses
    import probe

    out = {}
    run = probe.load_run(run_dir)
    first = steps.split(",")[0]
    analyses.compute(run, EMBEDDING_ONLY + FORWARD, steps=first, cache=False)  # warm-up: imports, first model
    for name in EMBEDDING_ONLY + FORWARD:
        t0 = time.perf_counter()
        analyses.compute(run, name, steps=steps, cache=False, **({"n_components": PARAMS["n_components"]}
                                                                 if name == "pca_projection_accuracy" else {}))
        out[name] = time.perf_counter() - t0
    return out


def straightforward(run_dir: Path, name: str, steps: list[int]) -> float:
    from probe import analyses
    import probe

    analyses.compute(probe.load_run(run_dir), name, steps=str(steps[0]), cache=False)  # warm-up: imports
    t0 = time.perf_counter()
    for s in steps:
        run = probe.load_run(run_dir)  # nothing shared: a fresh run, context and model every time
        analyses.compute(run, name, steps=str(s), cache=False,
                         **({"n_components": PARAMS["n_components"]} if name == "pca_projection_accuracy" else {}))
        run.close()
    return (time.perf_counter() - t0) / len(steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a nanda-modadd run (default: train one with 200 checkpoints)")
    ap.add_argument("--checkpoints", type=int, default=200)
    ap.add_argument("--reference-checkpoints", type=int, default=5)
    ap.add_argument("--per-metric-checkpoints", type=int, default=20,
                    help="checkpoints for the per-metric timings (spread over the series)")
    args = ap.parse_args()
    import probe

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or make_run(Path(tmp), args.checkpoints)
        run = probe.load_run(run_dir)
        n = min(args.checkpoints, len(run.steps))
        all_steps = run.steps[:n]
        names = EMBEDDING_ONLY + FORWARD
        print(f"run {run_dir}: {run.task.describe()}, {len(run.steps)} checkpoints; analysing the first {n}")

        # the whole set in one call, in fresh processes: half the series, then all of it (memory)
        results = {}
        for count in (n // 4, n):
            res = subprocess.run([sys.executable, "-c", CHILD, str(run_dir), str(count), ",".join(names)],
                                 capture_output=True, text=True, check=True)
            results[count] = tuple(float(x) for x in res.stdout.split())
        total, rss = results[n]
        print(f"whole set ({len(names)} metrics) over {n} checkpoints in one call: {total:.0f} s "
              f"({'within' if total < 900 else 'OVER'} the 15-minute requirement); peak RSS "
              f"{results[n // 4][1]:.0f} MB at {n // 4} checkpoints, {rss:.0f} MB at {n}")

        pick = np.unique(np.linspace(0, n - 1, min(args.per_metric_checkpoints, n)).round().astype(int))
        m_steps = ",".join(str(int(s)) for s in all_steps[pick])
        fast = {k: v * n / len(pick) for k, v in per_metric_fast(run_dir, m_steps).items()}
        print(f"the same metrics one call each (timed on {len(pick)} checkpoints, scaled to {n}): "
              f"{sum(fast.values()):.0f} s in all (the single call shares "
              f"checkpoint loading and forward passes: {sum(fast.values()) / total:.2f}x)")
        sample = [int(s) for s in all_steps[np.linspace(0, n - 1, args.reference_checkpoints).round().astype(int)]]
        print(f"\n{'metric':26s} {'probe ckpt/s':>13s} {'straightforward':>16s} {'ratio':>7s}   requirement")
        for name in names:
            rate = n / fast[name]
            ref = 1.0 / straightforward(run_dir, name, sample)
            req = ">= 50 ckpt/s: " + ("met" if rate >= 50 else "NOT met") if name in EMBEDDING_ONLY else ""
            print(f"{name:26s} {rate:13.1f} {ref:16.2f} {rate / ref:6.1f}x   {req}")
        print(f"\n(straightforward timed on checkpoints {sample}; this process peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
