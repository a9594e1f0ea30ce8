"""Importing long checkpoint series: memory stays flat, whatever the number of checkpoints.

Writes directories of per-step safetensors state dicts of a small TransformerLens-named transformer
(p=53, d_model 32, 4 heads, d_mlp 128: about 15,000 float32 weights, 60 KB per checkpoint) with a
30% training split, then imports each with ``probe import`` (``probe.train.importers.import_series``:
map, shape checks, probe's loss and accuracy on the split at every checkpoint, digests, the run
file) in a fresh child process and prints, per series length, the child's peak resident memory
(``resource.getrusage``: the torch import included; it varies by a few hundred MB between processes
whatever the series, with torch's allocations), how much the resident memory of the last quarter of
the import exceeds that of the second (sampled every 20 ms: what grows with the series), and
checkpoints per second. Checkpoints stream into the run file one commit at a time (at most
``COMMIT_BYTES`` held), so memory does not grow with the series.

    python benchmarks/import_series.py [--checkpoints 500 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, threading, time
from pathlib import Path
from probe.train.importers import ImportRequest, import_series

def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20

samples, done = [], threading.Event()
def sample():
    while not done.is_set():
        samples.append((time.perf_counter(), rss_mb()))
        time.sleep(0.02)

src, out, idx = map(Path, sys.argv[1:4])
threading.Thread(target=sample, daemon=True).start()
t0 = time.perf_counter()
res = import_series(ImportRequest(source=src, out=out, task="add", p=53, train_indices=idx))
dt = time.perf_counter() - t0
done.set()
quarter = [r for t, r in samples if dt / 4 <= t - t0 <= dt / 2]
last = [r for t, r in samples if t - t0 >= 3 * dt / 4]
print(json.dumps({"checkpoints": len(res.steps), "seconds": dt, "checkpoints_per_s": len(res.steps) / dt,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "growth_mb": (max(last) - max(quarter)) if quarter and last else 0.0}))
"""


def write_series(d: Path, n: int, seed: int = 0) -> None:
    """``n`` per-step state dicts (random weights in TransformerLens' names and shapes)."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    p, dm, h, dh, m = 53, 32, 4, 8, 128
    shapes = {"embed.W_E": (p + 1, dm), "pos_embed.W_pos": (3, dm), "blocks.0.attn.W_Q": (h, dm, dh),
              "blocks.0.attn.W_K": (h, dm, dh), "blocks.0.attn.W_V": (h, dm, dh), "blocks.0.attn.W_O": (h, dh, dm),
              "blocks.0.attn.b_Q": (h, dh), "blocks.0.attn.b_K": (h, dh), "blocks.0.attn.b_V": (h, dh),
              "blocks.0.attn.b_O": (dm,), "blocks.0.mlp.W_in": (dm, m), "blocks.0.mlp.b_in": (m,),
              "blocks.0.mlp.W_out": (m, dm), "blocks.0.mlp.b_out": (dm,), "unembed.W_U": (dm, p),
              "unembed.b_U": (p,)}
    d.mkdir(parents=True)
    for i in range(n):
        save_file({k: (rng.standard_normal(s) / np.sqrt(dm)).astype(np.float32) for k, s in shapes.items()},
                  str(d / f"step_{10 * i:07d}.safetensors"))


def measure(n: int, work: Path) -> dict:
    import numpy as np

    src = work / f"series-{n}"
    write_series(src, n)
    idx = work / "train.npy"
    np.save(idx, np.random.default_rng(1).permutation(53 * 53)[: int(0.3 * 53 * 53)])
    res = subprocess.run([sys.executable, "-c", CHILD, str(src), str(work / f"run-{n}"), str(idx)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(n, Path(tmp)) for n in args.checkpoints]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'checkpoints':>12} {'seconds':>9} {'ckpt/s':>9} {'peak RSS (MB)':>14} {'growth (MB)':>12}")
    for r in rows:
        print(f"{r['checkpoints']:>12} {r['seconds']:>9.1f} {r['checkpoints_per_s']:>9.1f} {r['peak_rss_mb']:>14.1f} "
              f"{r['growth_mb']:>12.1f}")


if __name__ == "__main__":
    main()
