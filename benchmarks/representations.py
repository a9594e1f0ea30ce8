"""Representation metrics over 200 checkpoints of the nanda-modadd model: the batched shared passes
beside the per-checkpoint form, in one run.

Batched (the default, docs/design.md "Batched passes"): one ``analyses.compute`` call with every
metric of the family; the runner hands the shared passes chunks of checkpoints, whose parameters are
read once and stacked, and the model is applied to windows of them in one call (for this model, the
one-block "tables" forward: per (token, position) tables and each sample's attention-weighted sum of
their rows). Per checkpoint (``PROBE_PASSES=checkpoint``, the form before): each checkpoint's
weights loaded into the model and TransformerLens hooks.

Printed:

1. the whole family in one call (fresh processes): batched over the first half and over all of the
   series (time, and peak RSS, which must not grow with the series); the per-checkpoint form timed
   on ``--family-reference-checkpoints`` checkpoints and scaled to the series (stated);
2. per metric: checkpoints per second of the per-checkpoint form (timed on ``--metric-checkpoints``
   checkpoints spread over the series: its cost per checkpoint does not depend on how many it is
   given) and of the batched form over the whole series (the workload it is built for: consecutive
   checkpoints read and stacked in chunks), side by side with their ratio, and the
   arithmetic bound of the batched form (the FLOPs of its passes over the float32 matrix-product rate
   measured here) with the share of it reached. Metrics that read only the embeddings use no pass
   (requirement: >= 50 checkpoints/s).

    python benchmarks/representations.py [--run RUN_DIR] [--checkpoints 200]

Without ``--run`` it first trains the nanda-modadd preset for 1,990 steps with a checkpoint every 10
steps (200 checkpoints; about 4 minutes on 2 cores). Torch uses the threads it is given
(``OMP_NUM_THREADS``); both forms run under the same setting.
"""

from __future__ import annotations

import argparse
import os
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
COUNTS = "1,2,4,8,16,32,all"
#: the whole family over these 200 checkpoints before the batched passes (docs/reproductions.md)
BEFORE_FAMILY = 769.0
#: checkpoints/s of each forward metric recorded before the batched passes (docs/reproductions.md,
#: Speed): the baseline the requirement (>= 5x) is stated against
BEFORE_METRIC = {"fourier_norms": 2.0, "restricted_loss": 1.4, "excluded_loss": 1.4, "pca_projection_accuracy": 0.4,
                 "distance_irrelevance": 5.2, "gradient_symmetricity": 45.0}

CHILD = """
import resource, sys, time, probe
from probe import analyses
run = probe.load_run(sys.argv[1])
lo, hi = int(sys.argv[2]), int(sys.argv[3])
steps = ",".join(str(int(s)) for s in run.steps[lo:hi])
t0 = time.perf_counter()
analyses.compute(run, sys.argv[4].split(","), steps=steps, cache=False, n_components="%s")
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
""" % COUNTS


def make_run(root: Path, n: int) -> Path:
    from probe.train.config import load_config
    from probe.train.loop import train

    cfg = load_config("nanda-modadd", overrides={"steps": str(10 * (n - 1)), "checkpoint.every": "10",
                                                 "checkpoint.metrics_every": "10"})
    print(f"training nanda-modadd for {10 * (n - 1)} steps ({n} checkpoints) ...", flush=True)
    return Path(train(cfg, root / "nanda-200", progress=True)).parent


def whole_set(run_dir: Path, lo: int, hi: int, names: list[str], mode: str) -> tuple[float, float]:
    env = dict(os.environ, PROBE_PASSES=mode)
    res = subprocess.run([sys.executable, "-c", CHILD, str(run_dir), str(lo), str(hi), ",".join(names)],
                         capture_output=True, text=True, check=True, env=env)
    seconds, rss = (float(x) for x in res.stdout.split())
    return seconds, rss


def timed(run_dir: Path, name: str, steps: str, mode: str, repeats: int) -> float:
    """Seconds per checkpoint of one metric over ``steps`` in one call, in ``mode`` (after a warm-up;
    the best of ``repeats`` calls, as ``timeit`` reports: the others measure the machine's neighbours)."""
    import probe
    from probe import analyses

    os.environ["PROBE_PASSES"] = mode
    kw = {"n_components": COUNTS} if name == "pca_projection_accuracy" else {}
    best = float("inf")
    with probe.load_run(run_dir) as run:
        analyses.compute(run, name, steps=steps.split(",")[0], cache=False, **kw)  # imports, key frequencies
        for _ in range(repeats):
            t0 = time.perf_counter()
            analyses.compute(run, name, steps=steps, cache=False, **kw)
            best = min(best, time.perf_counter() - t0)
    return best / len(steps.split(","))


def matmul_rate() -> float:
    """Float32 matrix-product rate of this process (FLOP/s), on the shape that dominates the passes."""
    import torch

    a, b = torch.randn(12769, 512), torch.randn(512, 113)
    a @ b
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    return 10 * 2 * a.shape[0] * a.shape[1] * b.shape[1] / (time.perf_counter() - t0)


def pass_flops(run_dir: Path) -> dict[str, float]:
    """FLOPs per checkpoint of each forward metric's passes in the batched form (matrix products and
    the weighted row sums; the maths after the passes is left out where it is small)."""
    import probe

    with probe.load_run(run_dir) as run:
        cfg, task = run.config.model, run.task
    n, p = task.n_samples, int(task.modulus or 0)
    d, m, h, e, n_out = cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.head_dim, task.n_classes
    pos = cfg.n_ctx
    rows = n_out * 2 + 1  # (token, position) pairs that occur: a and b's symbols, and "="
    nnz = (pos - 1) * h + 1  # table rows a sample sums (its varying positions' heads and its residual row)
    tables = 2 * rows * d * (3 * h * e) + 2 * (rows * h + 1) * d * (m + n_out) + 2 * m * d * n_out
    neurons = tables + 2 * n * nnz * m
    clean = neurons + 2 * n * (m * n_out + nnz * n_out)
    keys = 2 * 6  # cos/sin of about six key frequencies
    project = 2 * n * (keys + 1) * m + 2 * n * keys * n_out
    variants = 2 * (len(COUNTS.split(",")) - 1)
    samples = 256
    dense = 2 * samples * (pos * d * 3 * h * e + h * e * d + 2 * d * m + d * n_out)
    return {"fourier_norms": neurons + 2 * p ** 3 * m, "restricted_loss": clean + project,
            "excluded_loss": clean + project,
            "distance_irrelevance": neurons + 2 * n * (m + nnz * n_out),  # the entries pass: one logit per sample
            "pca_projection_accuracy": (variants + 1) * clean,
            "gradient_symmetricity": 3 * dense}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a nanda-modadd run (default: train one with 200 checkpoints)")
    ap.add_argument("--checkpoints", type=int, default=200)
    ap.add_argument("--family-reference-checkpoints", type=int, default=20,
                    help="checkpoints the per-checkpoint form of the whole family is timed on (then scaled)")
    ap.add_argument("--metric-checkpoints", type=int, default=10,
                    help="checkpoints, spread over the series, of the per-metric timings")
    ap.add_argument("--repeats", type=int, default=3, help="calls per per-metric timing (the best is kept)")
    args = ap.parse_args()
    import probe

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or make_run(Path(tmp), args.checkpoints)
        with probe.load_run(run_dir) as run:
            n = min(args.checkpoints, len(run.steps))
            all_steps = run.steps[:n]
            print(f"run {run_dir}: {run.task.describe()}, {len(run.steps)} checkpoints; analysing the first {n}; "
                  f"torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}; load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        names = EMBEDDING_ONLY + FORWARD

        # 1. the whole family in one call
        half_t, half_rss = whole_set(run_dir, 0, n // 2, names, "batched")
        full_t, full_rss = whole_set(run_dir, 0, n, names, "batched")
        k = min(args.family_reference_checkpoints, n)
        ref_t, _ = whole_set(run_dir, 0, k, names, "checkpoint")
        ref_total = ref_t * n / k
        print(f"\nwhole family ({len(names)} metrics) in one call over {n} checkpoints:")
        print(f"  batched:        {full_t:7.1f} s ({'within' if full_t < 120 else 'OVER'} 120 s); peak RSS "
              f"{half_rss:.0f} MB at {n // 2} checkpoints, {full_rss:.0f} MB at {n} "
              f"({'flat' if full_rss < 1.1 * half_rss else 'GROWS'})")
        print(f"  per checkpoint: {ref_total:7.1f} s (timed on the first {k} checkpoints: {ref_t:.1f} s, scaled)")
        print(f"  {BEFORE_FAMILY / full_t:.1f}x the {BEFORE_FAMILY:.0f} s recorded before the batched passes "
              f"(required >= 6x); "
              f"{ref_total / full_t:.1f}x the per-checkpoint form of this run (which shares loading and passes "
              f"between the metrics)")

        # 2. per metric, side by side
        rate = matmul_rate()
        flops = pass_flops(run_dir)
        pick = np.unique(np.linspace(0, n - 1, min(args.metric_checkpoints, n)).round().astype(int))
        steps = ",".join(str(int(s)) for s in all_steps[pick])
        series = ",".join(str(int(s)) for s in all_steps)
        print(f"\nper metric, one call each: per checkpoint over {len(pick)} checkpoints spread over the series, "
              f"batched over all {n}; float32 matrix products run at {rate / 1e9:.0f} GFLOP/s here")
        print(f"{'metric':26s} {'per-ckpt':>9s} {'batched':>9s} {'ratio':>6s} {'before':>7s} {'ratio':>7s} "
              f"{'bound':>7s} {'of bound':>8s}   requirement (>= 5x the checkpoints/s before)")
        for name in names:
            batched = 1.0 / timed(run_dir, name, series, "batched", args.repeats)
            if name in EMBEDDING_ONLY:
                print(f"{name:26s} {'(no pass)':>9s} {batched:9.1f} {'':>6s} {'':>7s} {'':>7s} {'':>7s} {'':>8s}   "
                      f">= 50 ckpt/s: {'met' if batched >= 50 else 'NOT met'}")
                continue
            reference = 1.0 / timed(run_dir, name, steps, "checkpoint", args.repeats)
            bound = rate / flops[name]
            before = BEFORE_METRIC[name]
            print(f"{name:26s} {reference:9.2f} {batched:9.2f} {batched / reference:5.1f}x {before:7.1f} "
                  f"{batched / before:6.1f}x {bound:7.1f} {batched / bound:8.0%}   "
                  f"{'met' if batched / before >= 5 else 'NOT met'}")
        print("\nper-ckpt: the per-checkpoint form measured here (it shares this run's improvements that are not "
              "batching: the thread pools, the cached bases); before: recorded before the batched passes; "
              "bound: the batched form's FLOPs at the measured rate")
        os.environ.pop("PROBE_PASSES", None)


if __name__ == "__main__":
    main()
