"""Vectorised ensembles: runs that differ only in hyperparameters that vectorise train together as one
batched model, and each member still writes its own ordinary run file.

Members are built exactly as :class:`probe.train.loop.Trainer` builds a run (its seed, its split, its
model and buffers, its writer and checkpoint schedule); their parameters are stacked along a leading
member axis and one ``torch.func.vmap`` of ``functional_call`` computes every member's loss on its
own training set (a padded index list with weights, so training fractions and split seeds may differ).
The optimizer is AdamW (or Adam) written over the stacked tensors with per-member learning rates and
weight decays, step for step the arithmetic of ``torch.optim.AdamW``. The result matches the members
trained one by one within float tolerance, checkpoint by checkpoint (a test checks it).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from probe.config import TrainConfig
from probe.errors import ProbeError
from probe.runfile import ResumeState, RunWriter, run_file_path
from probe.schedules import Schedule, make_schedule

#: config keys whose values may differ between members of one ensemble
VECTOR_KEYS: tuple[str, ...] = ("lr", "weight_decay", "embed_lr", "embed_weight_decay", "model.init_scale", "seed",
                                "split_seed", "train_fraction", "n_train")
MAX_MEMBERS = 256


def _blank(cfg: TrainConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    for key in VECTOR_KEYS:
        head, _, tail = key.partition(".")
        if tail:
            d.get(head, {}).pop(tail, None)
        else:
            d.pop(head, None)
    return d


def group_key(cfg: TrainConfig) -> str | None:
    """Configs with equal keys can train as one ensemble; None when a config cannot join one."""
    import json

    if cfg.batch_size is not None:
        return None  # minibatches draw per-run random batches
    if cfg.optimizer not in ("adamw", "adam"):
        return None
    if getattr(cfg.model, "dropout", 0.0):
        return None
    return json.dumps(_blank(cfg), sort_keys=True, default=str)


def why_not(configs: Sequence[TrainConfig]) -> str | None:
    """None when ``configs`` can train as one ensemble, else the reason in words."""
    if len(configs) < 1:
        return "no runs"
    for cfg in configs:
        if cfg.batch_size is not None:
            return "minibatch training (batch_size) draws random batches per run; only full-batch runs vectorise"
        if cfg.optimizer not in ("adamw", "adam"):
            return f"optimizer {cfg.optimizer} does not vectorise (adamw and adam do)"
        if getattr(cfg.model, "dropout", 0.0):
            return "dropout does not vectorise"
    keys = {group_key(c) for c in configs}
    if len(keys) > 1:
        first = _blank(configs[0])
        for c in configs[1:]:
            other = _blank(c)
            diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
            if diff:
                return (f"the runs differ in {diff[0]!r}, which does not vectorise (only "
                        f"{', '.join(VECTOR_KEYS)} may differ)")
    return None


def _wrapper(model: Any) -> Any:
    import torch

    class Member(torch.nn.Module):
        """One member's loss on its own training samples, and its outputs on every sample."""

        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: Any, labels: Any, idx: Any, weight: Any, count: Any) -> tuple[Any, Any]:
            out = self.m.answer(x)
            losses = self.m.sample_losses(out[idx], labels[idx])
            return (losses * weight).sum() / count, out

    return Member(model)


def _pad(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    width = max(1, max(len(g) for g in groups))
    idx = np.zeros((len(groups), width), dtype=np.int64)
    w = np.zeros((len(groups), width), dtype=np.float64)
    for i, g in enumerate(groups):
        idx[i, : len(g)] = g
        w[i, : len(g)] = 1.0
    return idx, w, np.array([max(len(g), 1) for g in groups], dtype=np.float64)


class Ensemble:
    """Members ``configs`` written to ``run_dirs``; :meth:`run` trains them all to their steps."""

    def __init__(self, configs: Sequence[TrainConfig], run_dirs: Sequence[Path], progress: bool = True) -> None:
        import torch

        from probe.train.loop import Trainer

        reason = why_not(configs)
        if reason:
            raise ProbeError(f"these runs cannot train as one ensemble: {reason}")
        if len(configs) > MAX_MEMBERS:
            raise ProbeError(f"at most {MAX_MEMBERS} members per ensemble, got {len(configs)}")
        self.configs = list(configs)
        self.dirs = [Path(d) for d in run_dirs]
        self.progress = progress
        self.members = []
        self.rng = []
        for cfg, d in zip(self.configs, self.dirs):
            trainer = Trainer(cfg, d, progress=False)  # its seed, split, model and buffers
            self.members.append(trainer)
            self.rng.append(trainer._rng_snapshot())  # full batch, no dropout: nothing draws after this
        first = self.members[0]
        self.device = first.device
        self.task = first.task
        self.steps = self.configs[0].steps
        self.metrics_every = self.configs[0].checkpoint.metrics_every
        model = first.model
        self.embed_name = model.embed_param
        self.names = [n for n, _ in model.named_parameters()]
        self.module = _wrapper(model)
        self.params = {f"m.{n}": torch.stack([t.model.get_parameter(n).detach() for t in self.members]).clone()
                       for n in self.names}
        for p in self.params.values():
            p.requires_grad_(True)
        self.buffers = {f"m.{n}": torch.stack([dict(t.model.named_buffers())[n].detach() for t in self.members])
                        for n, _ in model.named_buffers()}
        inputs = torch.as_tensor(self.task.inputs).to(self.device)
        self.x = model.model_inputs(inputs)
        self.labels = torch.as_tensor(self.task.labels).to(self.device)
        tidx, tw, tn = _pad([t.split.train for t in self.members])
        self.train_idx = torch.as_tensor(tidx, device=self.device)
        self.train_w = torch.as_tensor(tw, device=self.device)
        self.train_n = torch.as_tensor(tn, device=self.device)
        self.val_sets = [torch.as_tensor(t.split.val, device=self.device) for t in self.members]
        self.train_sets = [torch.as_tensor(t.split.train, device=self.device) for t in self.members]

        def hyper(values: list[float]) -> Any:
            return torch.tensor(values, dtype=torch.float64, device=self.device)

        self.lr = {n: hyper([c.resolved_embed_lr if n == self.embed_name else c.lr for c in self.configs])
                   for n in self.names}
        self.wd = {n: hyper([c.resolved_embed_weight_decay if n == self.embed_name else c.weight_decay
                             for c in self.configs]) for n in self.names}
        self.exp_avg = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.adam_steps = 0

    # the batched model ------------------------------------------------------------------------------
    def _losses(self) -> tuple[Any, Any]:
        from torch.func import functional_call, vmap

        def one(p: dict, b: dict, idx: Any, w: Any, n: Any) -> tuple[Any, Any]:
            return functional_call(self.module, {**p, **b}, (self.x, self.labels, idx, w, n))

        return vmap(one)(self.params, self.buffers, self.train_idx, self.train_w, self.train_n)

    def _predict(self, out: Any) -> list[Any]:
        """Each member's predictions from its own model object (its own buffers, e.g. regression
        targets; prediction reads no parameters)."""
        return [t.model.predict(out[i]) for i, t in enumerate(self.members)]

    # the optimizer (torch.optim.AdamW's arithmetic, per-member lr and weight decay) ----------------------
    def _adam_step(self, factor: float, active: Any) -> None:
        import torch

        cfg = self.configs[0]
        b1, b2 = cfg.betas
        self.adam_steps += 1
        t = self.adam_steps
        bc1 = 1 - b1 ** t
        bc2_sqrt = (1 - b2 ** t) ** 0.5
        with torch.no_grad():
            for key, p in self.params.items():
                name = key[2:]
                g = p.grad
                shape = (-1,) + (1,) * (p.ndim - 1)
                lr = (self.lr[name] * factor * active).to(p.dtype).view(shape)
                wd = self.wd[name].to(p.dtype).view(shape)
                if cfg.optimizer == "adamw":
                    p.mul_(1 - lr * wd)
                else:
                    g = g.add(p * wd)
                m, v = self.exp_avg[key], self.exp_avg_sq[key]
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / bc2_sqrt).add_(cfg.eps)
                p.add_(-(lr / bc1) * m / denom)
                p.grad = None

    # one member's view ------------------------------------------------------------------------------------
    def _state(self, i: int, step: int, schedule: Schedule) -> ResumeState:
        from probe.train.loop import _optim_keys

        trainer = self.members[i]
        params = {n: self.params[f"m.{n}"][i].detach().cpu().numpy().copy() for n in self.names}
        optim: dict[str, np.ndarray] = {}
        has = self.adam_steps > 0
        for name, p in trainer._ordered_params():
            for key in _optim_keys(trainer.cfg):
                if key == "step":
                    optim[f"{name}/step"] = np.asarray(float(self.adam_steps))
                else:
                    src = (self.exp_avg if key == "exp_avg" else self.exp_avg_sq)[f"m.{name}"][i]
                    optim[f"{name}/{key}"] = np.asarray(src.detach().cpu().numpy(), dtype=np.float64)
        return ResumeState(step=step, params=params, optim=optim, has_optim=has, rng=self.rng[i],
                           schedule=schedule.state.copy())

    def run(self, writers: Sequence[RunWriter]) -> None:
        import torch
        from tqdm import tqdm

        schedules = [make_schedule(c.checkpoint, c.steps) for c in self.configs]
        last = [-1] * len(self.members)
        total = self.steps
        ends = [c.steps for c in self.configs]  # each member's last step (its early stop may come sooner)
        seen: list[dict[str, list[float]]] = [{"step": [], "train_acc": [], "val_acc": []} for _ in self.members]
        active = torch.ones(len(self.members), dtype=torch.float64, device=self.device)
        bar = tqdm(total=total, desc=f"ensemble x{len(self.members)}", unit="step", disable=not self.progress,
                   mininterval=0.5, dynamic_ncols=True)
        finished = False
        from probe.train.loop import _Deterministic

        determinism = _Deterministic(self.device)
        try:
            step = 0
            while True:
                if step < total:
                    loss, out = self._losses()
                else:
                    with torch.no_grad():
                        loss, out = self._losses()
                rows: list[dict[str, float] | None] = [None] * len(self.members)
                due = [step <= ends[i] and (step % self.metrics_every == 0 or step == ends[i])
                       for i in range(len(self.members))]
                if any(due):
                    with torch.no_grad():
                        preds = self._predict(out.detach())
                        for i, trainer in enumerate(self.members):
                            if not due[i]:
                                continue
                            o = out[i].detach()
                            tr, va = self.train_sets[i], self.val_sets[i]
                            correct = (preds[i] == self.labels).double()
                            row = {"step": step,
                                   "train_loss": float(loss[i]) if len(tr) else float("nan"),
                                   "train_acc": float(correct[tr].mean()) if len(tr) else float("nan"),
                                   "val_loss": float(trainer.model.loss(o[va], self.labels[va])) if len(va)
                                   else float("nan"),
                                   "val_acc": float(correct[va].mean()) if len(va) else float("nan"),
                                   "lr": self.configs[i].lr * self.members[i].lr_factor(step)}
                            writers[i].add_metrics(row)
                            rows[i] = row
                            cfg = self.configs[i]
                            if cfg.stop.after_generalization is not None and ends[i] == cfg.steps:
                                for k in seen[i]:
                                    seen[i][k].append(row[k])
                                stop_at = cfg.stop.stop_step(seen[i]["step"], seen[i]["train_acc"],
                                                             seen[i]["val_acc"])
                                if stop_at is not None and stop_at < ends[i]:
                                    ends[i] = max(stop_at, step)
                                    schedules[i].total = ends[i]
                for i, sched in enumerate(schedules):
                    if step <= ends[i] and step > last[i] and sched.due(step, rows[i]):
                        sched.record(step, rows[i])
                        series = {n: self.params[f"m.{n}"][i].detach().cpu().numpy() for n in self.members[i].saved}
                        writers[i].write_checkpoint(step, series, self._state(i, step, sched))
                        last[i] = step
                for i in range(len(self.members)):
                    if step >= ends[i] and active[i] > 0:
                        active[i] = 0.0  # this member is finished: its parameters stay as they are
                        writers[i].close(finished=True)
                if step >= total or not bool(active.any()):
                    break
                loss.sum().backward()
                self._adam_step(self.members[0].lr_factor(step), active)
                step += 1
                bar.update(1)
            finished = True
        finally:
            determinism.restore()
            bar.close()
            for i, w in enumerate(writers):
                if active[i] > 0:
                    w.close(finished=finished)


def train_ensemble(configs: Sequence[TrainConfig], run_dirs: Sequence[str | Path], progress: bool = True) -> list[Path]:
    """Train ``configs`` as one batched model; member ``i`` is written to ``run_dirs[i]`` as an ordinary
    run (resumable and analysable one by one). Directories this call created are removed if training
    cannot start."""
    from probe.train.loop import CONFIG_COPY, _make_dir, _write_config_copy

    dirs = [Path(d) for d in run_dirs]
    if len(dirs) != len(configs):
        raise ProbeError("one run directory per config")
    for d in dirs:
        if run_file_path(d).exists():
            raise ProbeError(f"{d} already holds a run")
    created = []
    writers: list[RunWriter] = []
    try:
        for d in dirs:
            created.append(_make_dir(d))
        ens = Ensemble(configs, dirs, progress=progress)
        for d, cfg, member in zip(dirs, configs, ens.members):
            _write_config_copy(d, cfg)
            writers.append(member._writer(run_file_path(d)))
    except BaseException:
        for w in writers:
            w.close(finished=False)
        for d, made in zip(dirs, created):
            if made:
                shutil.rmtree(d, ignore_errors=True)
            else:
                (d / CONFIG_COPY).unlink(missing_ok=True)
                run_file_path(d).unlink(missing_ok=True)
        raise
    ens.run(writers)
    return [run_file_path(d) for d in dirs]


