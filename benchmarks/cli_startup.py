"""Start-up time of the command line: ``probe --help`` and ``probe metrics`` (requirement: < 0.5 s).

Heavy imports (torch, TransformerLens, matplotlib, h5py) are lazy; this prints the median wall time
of several runs of each, in fresh processes, and which heavy modules a bare ``import probe.cli``
pulls in (none should).

    python benchmarks/cli_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "transformer_lens", "matplotlib", "h5py", "pandas", "numpy", "sklearn", "umap")


def wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    for argv in (["--help"], ["metrics"]):
        t = wall([sys.executable, "-m", "probe.cli", *argv], args.repeat)
        print(f"probe {' '.join(argv):10s} median {t:.2f} s over {args.repeat} runs (requirement < 0.5 s): "
              f"{'met' if t < 0.5 else 'NOT met'}")
    code = "import sys, probe.cli; probe.cli.build_parser(); print(','.join(m for m in %r if m in sys.modules))" % (HEAVY,)
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    print(f"heavy modules loaded by building the parser: {loaded or 'none'}")


if __name__ == "__main__":
    main()
