"""Reading runs: schema 2 (checksums, digests, validation on opening) against schema-1-style reads.

Builds two run files from the same 2,000-checkpoint series of p=97 d=128 embeddings (plus a decoder):
one written by probe's trainer (Fletcher-32 on every dataset, validated when opened), and a copy of
the same data in schema 1's layout (no filter) read with plain h5py and no validation. Prints, side
by side in one run:

1. opening a run: ``probe.load_run`` (full validation) against a bare ``h5py.File`` open plus the
   attributes schema 1 parsed (requirement: under 50 ms);
2. reading one tensor (``embed.W_E``) across all 2,000 checkpoints: ``Run.series`` against plain
   h5py on the unfiltered copy (requirement: checksum overhead under 10%). The first read of a file
   state goes through HDF5's Fletcher-32 filter and records the rows it verified
   (``RUN_DIR/analysis/verified.json``); later reads of the unchanged file take the raw chunks.
   Both are printed: the first read in a fresh process after every write, and every read after it.

    python benchmarks/run_io.py [--checkpoints 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

import probe
from probe.train.config import load_config
from probe.train.loop import train


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def unfiltered_copy(src: Path, dst: Path) -> None:
    """The same data in schema 1's layout: chunked series without a checksum filter."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w", libver="latest") as g:
        for k, v in f.attrs.items():
            g.attrs[k] = v

        def copy(name: str, obj) -> None:
            if isinstance(obj, h5py.Dataset):
                g.create_dataset(name, data=obj[...], chunks=obj.chunks, maxshape=obj.maxshape)

        f.visititems(copy)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("liu-toy-add", overrides={
            "task": "add", "p": "97", "ordered": "true", "train_fraction": "0.3",
            "steps": str(args.checkpoints - 1), "model.d_embed": "128", "model.decoder": "32",
            "model.objective": "cross_entropy", "checkpoint.schedule": "every", "checkpoint.every": "1",
            "checkpoint.metrics_every": "50"})
        t0 = time.perf_counter()
        train(cfg, Path(tmp) / "run", progress=True)
        made = time.perf_counter() - t0
        path = Path(tmp) / "run" / "run.h5"
        plain = Path(tmp) / "plain.h5"
        unfiltered_copy(path, plain)

        def open_v2() -> None:
            probe.load_run(path).close()

        def open_plain() -> None:
            with h5py.File(plain, "r") as f:
                json.loads(f.attrs["config"])
                json.loads(f.attrs["task"])
                f["checkpoints/steps"][:]

        record = path.parent / "analysis" / "verified.json"
        bare = h5py.File(plain, "r")

        def read_first() -> None:  # a fresh reader of a file state nobody has verified yet
            record.unlink(missing_ok=True)
            with probe.load_run(path) as fresh:
                fresh.series("embed.W_E")

        run = probe.load_run(path)

        def read_v2() -> None:
            run.series("embed.W_E")

        def read_plain() -> None:
            n = len(bare["checkpoints/steps"])
            bare["checkpoints/params/embed.W_E"][:n]

        open_plain(), open_v2(), read_plain(), read_first()  # warm the page cache
        o2, o1 = best(open_v2, args.repeat), best(open_plain, args.repeat)
        r0 = best(read_first, args.repeat) - best(open_v2, args.repeat)
        read_v2()  # the record now covers the series
        r2, r1 = best(read_v2, args.repeat), best(read_plain, args.repeat)
        same = np.array_equal(run.series("embed.W_E"), bare["checkpoints/params/embed.W_E"][:])
        run.close()
        bare.close()
        size = path.stat().st_size / 2**20
        print(f"[run io] {args.checkpoints} checkpoints, p=97 d=128 embeddings + decoder ({size:.0f} MB file, "
              f"trained in {made:.0f} s)")
        print(f"      open:  probe.load_run (validated) {o2 * 1e3:.1f} ms; bare h5py open + attributes "
              f"{o1 * 1e3:.1f} ms (required < 50 ms)")
        print(f"      read embed.W_E x {args.checkpoints}: plain h5py, no filter {r1 * 1e3:.1f} ms; probe, checksums "
              f"verified for this file state {r2 * 1e3:.1f} ms -> overhead {100 * (r2 / r1 - 1):+.1f}% "
              f"(required < 10%); values identical: {same}")
        print(f"      first read of a new file state (through the Fletcher-32 filter) {r0 * 1e3:.1f} ms "
              f"-> {100 * (r0 / r1 - 1):+.1f}%")


if __name__ == "__main__":
    main()
