"""Training throughput: probe's trainer against a plain PyTorch loop, side by side in one run.

Both train the nanda-modadd model (p=113, 1 layer, d_model 128, full batch of 3,830 pairs, AdamW
lr 1e-3, wd 1, betas (0.9, 0.98)) for the same number of steps from the same initial weights, and
both evaluate train and validation loss/accuracy every 10 steps. probe's trainer additionally
writes a checkpoint every 10 steps to an HDF5 run file. The plain loop is what one writes by hand:
the model's full forward pass (every position), logits at the last position, float32 cross-entropy.

    python benchmarks/train_throughput.py [--steps 100]

Prints steps/s of both and their ratio (requirement: >= 1.0, target >= 1.5).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from probe.models import build_model
from probe.tasks import make_split, make_task
from probe.train.config import load_config
from probe.train.loop import train


def plain_loop(steps: int, eval_every: int) -> float:
    cfg = load_config("nanda-modadd")
    task = make_task("add", p=cfg.p)
    split = make_split(task.n_samples, cfg.train_fraction, cfg.split_seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, task)
    x = model.model_inputs(torch.as_tensor(task.inputs))
    y = torch.as_tensor(task.labels)
    xt, yt, xv, yv = x[split.train], y[split.train], x[split.val], y[split.val]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(s / cfg.warmup_steps, 1.0))
    start = time.perf_counter()
    for step in range(steps):
        logits = model(xt)[:, -1]
        loss = F.cross_entropy(logits, yt)
        if step % eval_every == 0:
            with torch.no_grad():
                _ = (logits.argmax(-1) == yt).float().mean().item(), loss.item()
                val_logits = model(xv)[:, -1]
                _ = F.cross_entropy(val_logits, yv).item(), (val_logits.argmax(-1) == yv).float().mean().item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return steps / (time.perf_counter() - start)


def probe_trainer(steps: int, eval_every: int) -> float:
    cfg = load_config("nanda-modadd", overrides={"steps": steps, "checkpoint.schedule": "every",
                                                 "checkpoint.every": 10, "checkpoint.metrics_every": eval_every})
    with tempfile.TemporaryDirectory() as tmp:
        # time only the loop: exclude model construction and file creation, as for the plain loop
        import probe.train.loop as loop

        timings: dict[str, float] = {}
        original_run = loop.Trainer.run

        def timed_run(self, *args, **kwargs):
            timings["start"] = time.perf_counter()
            try:
                return original_run(self, *args, **kwargs)
            finally:
                timings["end"] = time.perf_counter()

        loop.Trainer.run = timed_run
        try:
            train(cfg, Path(tmp) / "run", progress=False)
        finally:
            loop.Trainer.run = original_run
    return steps / (timings["end"] - timings["start"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps each")
    plain = plain_loop(args.steps, 10)
    ours = probe_trainer(args.steps, 10)
    print(f"plain PyTorch loop:             {plain:7.2f} steps/s")
    print(f"probe trainer (+ckpt every 10): {ours:7.2f} steps/s")
    print(f"ratio probe / plain:            {ours / plain:7.2f}x  (required >= 1.0, target >= 1.5)")


if __name__ == "__main__":
    main()
