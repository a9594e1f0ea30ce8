"""Irreducible representations: decomposition time per group and ``irrep_norms`` over a long series,
side by side in one run.

1. Time to compute the irreps (and the adapted basis of ``R^G``) of S3, D4, Q8, A4 (the shipped
   tables), S4 and S5 from their Cayley tables, each from a cold cache (best of ``--repeats``;
   requirement: S5, order 120, under 1 s).
2. ``irrep_norms`` (W_E and W_U) over ``--checkpoints`` checkpoints of the concatenating MLP on S5
   (d_embed 128, a run trained here with a checkpoint every step, saving W_E and W_U): checkpoints/s
   of the runner's batched form (chunks of 64, W_U read once per chunk) and of its per-checkpoint form,
   next to a straightforward loop (each checkpoint read on its own, each irrep's norm as
   ``sqrt(tr(W^T P_rho W))`` with the irrep's projector ``P_rho``). The values are compared; the ratio
   is printed (requirement: >= 50 checkpoints/s for the batched form).

    python benchmarks/irreps.py [--checkpoints 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import probe
from probe.analyses import compute
from probe.analyses import irreps as ir
from probe.tasks import make_task
from probe.train.config import load_config
from probe.train.loop import train

GROUPS = [("S3", "group", {"group": "S3"}), ("D4", "group", {"group": "D4"}), ("Q8", "group", {"group": "Q8"}),
          ("A4", "group", {"group": "A4"}), ("S4", "perm", {"n": 4}), ("S5", "perm", {"n": 5})]


def decomposition(repeats: int) -> None:
    for name, kind, kw in GROUPS:
        table = make_task(kind, **kw).table
        best = float("inf")
        for _ in range(repeats):
            for cached in (ir._irreps, ir._basis, ir._axioms):
                cached.cache_clear()
            t0 = time.perf_counter()
            rec = ir.irreps(table)
            ir.irrep_basis(table)
            best = min(best, time.perf_counter() - t0)
        dims = ",".join(map(str, rec.dims))
        note = f" (requirement < 1 s: {'met' if best < 1 else 'NOT met'})" if name == "S5" else ""
        print(f"  {name:3s} order {rec.order:3d}: irrep dimensions {dims:15s} {best * 1e3:7.1f} ms{note}")


def reference_norms(run: probe.Run, steps: np.ndarray) -> np.ndarray:
    """A straightforward loop: every checkpoint read on its own, each irrep's projector applied."""
    table = run.task.table
    rec = ir.irreps(table)
    b, labels = ir.irrep_basis(table)
    projectors = []
    for lab in rec.labels:
        rows = b[[i for i, r in enumerate(labels) if r == lab]]
        projectors.append(rows.T @ rows)
    out = []
    for step in steps:
        ck = run.checkpoint(int(step))
        we = ck.embeddings()
        wu = ck.tensor(run.config.model.unembed_param).T  # [classes, d]
        out.append([np.sqrt(np.trace(w.T @ p @ w)) for w in (we, wu) for p in projectors])
    return np.array(out)


def norms_over_a_series(tmp: Path, n_ckpt: int) -> None:
    cfg = load_config("kitouni-mlp", overrides={
        "task": "perm", "n": "5", "p": None, "train_fraction": "0.4", "steps": str(n_ckpt - 1),
        "model.d_embed": "128", "model.hidden": "128", "checkpoint.schedule": "every", "checkpoint.every": "1",
        "checkpoint.metrics_every": "50", "checkpoint.tensors": "embed.W_E,unembed.W_U"})
    t0 = time.perf_counter()
    train(cfg, tmp / "s5", progress=False)
    print(f"  trained the MLP on S5 for {n_ckpt - 1} steps with a checkpoint every step "
          f"({time.perf_counter() - t0:.0f} s)")
    with probe.load_run(tmp / "s5") as run:
        assert len(run.steps) == n_ckpt
        compute(run, "irrep_norms", steps="first", cache=False)  # imports and the decomposition outside the timing
        rates, frames = {}, {}
        for label, chunk in (("batched (chunks of 64)", 64), ("per checkpoint", 1)):
            t0 = time.perf_counter()
            frames[label] = compute(run, "irrep_norms", cache=False, chunk=chunk)
            dt = time.perf_counter() - t0
            rates[label] = n_ckpt / dt
            print(f"  irrep_norms, {label:22s}: {n_ckpt} checkpoints in {dt:6.2f} s = "
                  f"{rates[label]:7.1f} checkpoints/s")
        t0 = time.perf_counter()
        ref = reference_norms(run, run.steps)
        dt = time.perf_counter() - t0
        rates["straightforward loop"] = n_ckpt / dt
        print(f"  irrep_norms, {'straightforward loop':22s}: {n_ckpt} checkpoints in {dt:6.2f} s = "
              f"{rates['straightforward loop']:7.1f} checkpoints/s")
        fast = frames["batched (chunks of 64)"].drop(columns="step").to_numpy()
        same = np.array_equal(fast, frames["per checkpoint"].drop(columns="step").to_numpy())
        err = float(np.max(np.abs(fast - ref) / np.maximum(np.abs(ref), 1e-12)))
    batched = rates["batched (chunks of 64)"]
    print(f"  batched / per checkpoint: {batched / rates['per checkpoint']:.1f}x "
          f"(values {'identical' if same else 'DIFFERENT'}); batched / straightforward loop: "
          f"{batched / rates['straightforward loop']:.1f}x (largest relative difference {err:.1e})")
    print(f"  requirement >= 50 checkpoints/s: {'met' if batched >= 50 else 'NOT met'} ({batched:.0f}/s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print("1. decomposition (irreps and the adapted basis, cold cache, best of repeats)")
    decomposition(args.repeats)
    print("2. irrep_norms over a long series")
    with tempfile.TemporaryDirectory() as tmp:
        norms_over_a_series(Path(tmp), args.checkpoints)


if __name__ == "__main__":
    main()
