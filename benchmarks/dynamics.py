"""Training-dynamics speed, measured side by side in one run.

1. ``param_norm`` and ``weight_spectrum`` over 500 checkpoints of the nanda-modadd model (p=113,
   d_model 128; a run trained here with a checkpoint every step): checkpoints/s of the runner's
   batched form (each tensor read once per chunk of 64 checkpoints, one stacked SVD per matrix)
   against the straightforward per-checkpoint form (requirement: >= 50 checkpoints/s).
2. ``efficiency`` and ``softmax_collapse`` share the forward pass over every sample: forward passes
   counted and seconds measured for each alone and for both in one call.
3. Grokfast (EMA and MA filters) and the norm constraint against the plain trainer on the same
   config, interleaved in the same process (requirement: each costs < 15% of a training step).
4. ``llc`` at its defaults: seconds per checkpoint on the shipped modular-addition run.

    python benchmarks/dynamics.py [--checkpoints 500] [--steps 300] [--skip-llc]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import probe
from probe.analyses import compute
from probe.train.config import load_config
from probe.train.loop import train

ROOT = Path(__file__).resolve().parents[1]


def weights_metrics(tmp: Path, n_ckpt: int) -> None:
    cfg = load_config("nanda-modadd", overrides={"steps": n_ckpt - 1, "checkpoint.schedule": "every",
                                                 "checkpoint.every": 1, "checkpoint.metrics_every": 50})
    t0 = time.perf_counter()
    train(cfg, tmp / "nanda", progress=False)
    print(f"trained nanda-modadd for {n_ckpt - 1} steps with a checkpoint every step ({time.perf_counter() - t0:.0f} s)")
    run = probe.load_run(tmp / "nanda")
    assert len(run.steps) == n_ckpt
    rates = {}
    for label, chunk in (("batched (chunks of 64)", 64), ("per checkpoint", 1)):
        t0 = time.perf_counter()
        df = compute(run, ["param_norm", "weight_spectrum"], cache=False, chunk=chunk)
        dt = time.perf_counter() - t0
        rates[label] = len(df) / dt
        print(f"  param_norm + weight_spectrum, {label:22s}: {len(df)} checkpoints in {dt:6.2f} s = "
              f"{rates[label]:7.1f} checkpoints/s")
    fast, slow = rates["batched (chunks of 64)"], rates["per checkpoint"]
    print(f"  batched / per checkpoint: {fast / slow:.1f}x; requirement >= 50 checkpoints/s: "
          f"{'met' if fast >= 50 else 'NOT met'} ({fast:.0f}/s)")


def shared_forward() -> None:
    run = probe.load_run(ROOT / "data" / "runs" / "modadd-p53")
    calls = {"n": 0}
    cls = type(run.model("last"))
    original = cls.answer

    def counted(self, *a, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return original(self, *a, **kw)

    cls.answer = counted  # type: ignore[method-assign]
    try:
        results = {}
        for names in (["efficiency"], ["softmax_collapse"], ["efficiency", "softmax_collapse"]):
            calls["n"] = 0
            t0 = time.perf_counter()
            compute(run, names, cache=False)
            results["+".join(names)] = (time.perf_counter() - t0, calls["n"])
    finally:
        cls.answer = original  # type: ignore[method-assign]
    n = len(run.steps)
    for name, (dt, c) in results.items():
        print(f"  {name:28s}: {dt:5.2f} s, {c} forward passes over {n} checkpoints")
    alone = results["efficiency"][1] + results["softmax_collapse"][1]
    both = results["efficiency+softmax_collapse"][1]
    print(f"  together: {both} forward passes against {alone} when run apart (the collapse metric's gradient "
          f"takes one pass of its own on the training samples)")


def step_cost(steps: int, repeats: int) -> None:
    base = {"p": "53", "train_fraction": "0.4", "model.d_model": "64", "model.d_mlp": "256", "steps": str(steps),
            "checkpoint.schedule": "geometric", "checkpoint.count": "2", "checkpoint.metrics_every": str(steps)}
    variants = {"plain": {}, "grokfast ema": {"grokfast.filter": "ema"},
                "grokfast ma (window 100)": {"grokfast.filter": "ma"},
                "norm constraint": {"constraint.relative": "1"}}
    times: dict[str, list[float]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for name, sets in variants.items():  # interleaved, so drift affects every variant alike
                cfg = load_config("nanda-modadd", overrides={**base, **sets})
                t0 = time.perf_counter()
                train(cfg, Path(tmp) / f"{r}-{name.replace(' ', '_')}", progress=False)
                times[name].append((time.perf_counter() - t0) / steps)
    plain = statistics.median(times["plain"])
    print(f"  plain trainer: {plain * 1e3:.2f} ms/step (median of {repeats} runs of {steps} steps, p=53 transformer)")
    for name in list(variants)[1:]:
        t = statistics.median(times[name])
        over = t / plain - 1
        print(f"  {name:26s}: {t * 1e3:.2f} ms/step, {100 * over:+.1f}% ({'met' if over < 0.15 else 'NOT met'}: < 15%)")


def llc_cost() -> None:
    run = probe.load_run(ROOT / "data" / "runs" / "modadd-p53")
    t0 = time.perf_counter()
    df = compute(run, "llc", steps="0,3000,last", cache=False)
    dt = time.perf_counter() - t0
    print(f"  llc at its defaults: {dt / len(df):.1f} s per checkpoint ({len(df)} checkpoints of modadd-p53); values "
          + ", ".join(f"{v:.2f}" for v in df["llc"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=500)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-llc", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("1. weight metrics over a long series")
        weights_metrics(Path(tmp), args.checkpoints)
    print("2. shared forward pass")
    shared_forward()
    print("3. cost of the training interventions")
    step_cost(args.steps, args.repeats)
    if not args.skip_llc:
        print("4. local learning coefficient")
        llc_cost()


if __name__ == "__main__":
    main()
