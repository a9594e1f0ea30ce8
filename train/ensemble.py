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
from typing import Any, Callable, Sequence

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


def _cannot_join(cfg: TrainConfig) -> str | None:
    """Why one config cannot train in an ensemble (None: it can)."""
    if cfg.batch_size is not None:
        return "minibatch training (batch_size) draws random batches per run; only full-batch runs vectorise"
    if cfg.optimizer not in ("adamw", "adam"):
        return f"optimizer {cfg.optimizer} does not vectorise (adamw and adam do)"
    if getattr(cfg.model, "dropout", 0.0):
        return "dropout does not vectorise"
    knobs = cfg.interventions()
    if knobs:
        return f"{'; '.join(knobs)}: applied by the one-run trainer only"
    return None


def group_key(cfg: TrainConfig) -> str | None:
    """Configs with equal keys can train as one ensemble; None when a config cannot join one."""
    import json

    if _cannot_join(cfg) is not None:
        return None
    return json.dumps(_blank(cfg), sort_keys=True, default=str)


def why_not(configs: Sequence[TrainConfig]) -> str | None:
    """None when ``configs`` can train as one ensemble, else the reason in words."""
    if len(configs) < 1:
        return "no runs"
    for cfg in configs:
        reason = _cannot_join(cfg)
        if reason is not None:
            return reason
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


def _wrappers(model: Any) -> tuple[Any, Any]:
    """Two views of one member: its mean loss on its own training rows (what it trains on, as the
    ordinary trainer does), and its outputs on every sample (for the metric rows)."""
    import torch

    class Loss(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: Any, labels: Any, idx: Any, weight: Any, count: Any) -> Any:
            losses = self.m.sample_losses(self.m.answer(x[idx]), labels[idx])
            return (losses * weight).sum() / count

    class Outputs(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: Any) -> Any:
            return self.m.answer(x)

    return Loss(model), Outputs(model)


def _pad(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    width = max(1, max(len(g) for g in groups))
    idx = np.zeros((len(groups), width), dtype=np.int64)
    w = np.zeros((len(groups), width), dtype=np.float64)
    for i, g in enumerate(groups):
        idx[i, : len(g)] = g
        w[i, : len(g)] = 1.0
    return idx, w, np.array([max(len(g), 1) for g in groups], dtype=np.float64)


class Ensemble:
    """Members ``configs`` written to ``run_dirs``; :meth:`run` trains them all to their steps.

    The stacked tensors hold the members still training (``alive``, indices into ``configs``); a member
    that reaches its last step (its budget, or its early stop) leaves the stack, so finished members
    cost nothing while the others go on.
    """

    #: seconds between commits of a member's queued checkpoints (and its resume state) to its run file
    COMMIT_SECONDS = 15.0

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
        self.loss_module, self.output_module = _wrappers(model)
        self.alive = list(range(len(self.members)))
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
        self.lr = [{n: c.resolved_embed_lr if n == self.embed_name else c.lr for n in self.names}
                   for c in self.configs]
        self.wd = [{n: c.resolved_embed_weight_decay if n == self.embed_name else c.weight_decay
                    for n in self.names} for c in self.configs]
        self.exp_avg = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.adam_steps = 0
        self._index()

    # the batched model ------------------------------------------------------------------------------
    def _train_losses(self) -> Any:
        """Each stacked member's mean training loss on its own training rows, ``[len(alive)]``."""
        from torch.func import functional_call, vmap

        def one(p: dict, b: dict, idx: Any, w: Any, n: Any) -> Any:
            return functional_call(self.loss_module, {**p, **b}, (self.x, self.labels, idx, w, n))

        return vmap(one)(self.params, self.buffers, self.train_idx, self.train_w, self.train_n)

    def _outputs(self) -> Any:
        """Each stacked member's outputs on every sample, ``[len(alive), n_samples, ...]``."""
        import torch
        from torch.func import functional_call, vmap

        def one(p: dict, b: dict) -> Any:
            return functional_call(self.output_module, {**p, **b}, (self.x,))

        with torch.no_grad():
            return vmap(one)({k: v.detach() for k, v in self.params.items()}, self.buffers)

    # the optimizer: torch's fused AdamW / Adam kernel, one call per member and parameter group ---------
    def _adam_step(self, factor: float) -> None:
        import torch

        cfg = self.configs[0]
        b1, b2 = cfg.betas
        self.adam_steps += 1
        kernel = torch._fused_adamw_ if cfg.optimizer == "adamw" else torch._fused_adam_
        with torch.no_grad():
            step_t = torch.tensor(float(self.adam_steps), dtype=torch.float32, device=self.device)
            grads = {k: p.grad.unbind(0) for k, p in self.params.items()}
            for j, i in enumerate(self.alive):
                for (lr, wd), keys in self._groups[i]:
                    kernel([self._views[k][0][j] for k in keys], [grads[k][j] for k in keys],
                           [self._views[k][1][j] for k in keys], [self._views[k][2][j] for k in keys], [],
                           [step_t] * len(keys), lr=lr * factor, beta1=b1, beta2=b2, weight_decay=wd,
                           eps=cfg.eps, amsgrad=False, maximize=False)
            for p in self.params.values():
                p.grad = None

    def _index(self) -> None:
        """Per-member views of the stacked parameters and moments (what the fused kernel updates in
        place), and each member's parameter groups by learning rate and weight decay."""
        import torch

        with torch.no_grad():
            self._views = {k: (p.detach().unbind(0), self.exp_avg[k].unbind(0), self.exp_avg_sq[k].unbind(0))
                           for k, p in self.params.items()}
        self._groups: dict[int, list[tuple[tuple[float, float], list[str]]]] = {}
        for i in self.alive:
            groups: dict[tuple[float, float], list[str]] = {}
            for key in self.params:
                groups.setdefault((self.lr[i][key[2:]], self.wd[i][key[2:]]), []).append(key)
            self._groups[i] = list(groups.items())

    def _keep(self, positions: list[int]) -> None:
        """Keep only the stacked members at ``positions`` (the others have finished)."""
        import torch

        pick = torch.as_tensor(positions, dtype=torch.long, device=self.device)
        with torch.no_grad():
            kept = {}
            for k, v in self.params.items():
                kept[k] = v.detach()[pick].clone().requires_grad_(True)
                if v.grad is not None:
                    kept[k].grad = v.grad[pick].clone()
            self.params = kept
            self.exp_avg = {k: v[pick].clone() for k, v in self.exp_avg.items()}
            self.exp_avg_sq = {k: v[pick].clone() for k, v in self.exp_avg_sq.items()}
            self.buffers = {k: v[pick].clone() for k, v in self.buffers.items()}
        self.train_idx, self.train_w, self.train_n = self.train_idx[pick], self.train_w[pick], self.train_n[pick]
        self.alive = [self.alive[j] for j in positions]
        self._index()

    # one member's view ------------------------------------------------------------------------------------
    def _series(self, j: int, i: int) -> dict[str, np.ndarray]:
        return {n: self.params[f"m.{n}"][j].detach().cpu().numpy() for n in self.members[i].saved}

    def _state(self, j: int, i: int, step: int, schedule: Schedule) -> ResumeState:
        from probe.train.loop import _optim_keys

        trainer = self.members[i]
        params = {n: self.params[f"m.{n}"][j].detach().cpu().numpy().copy() for n in self.names}
        optim: dict[str, np.ndarray] = {}
        has = self.adam_steps > 0
        for name, p in trainer._ordered_params():
            for key in _optim_keys(trainer.cfg):
                if key == "step":
                    optim[f"{name}/step"] = np.asarray(float(self.adam_steps))
                else:
                    src = (self.exp_avg if key == "exp_avg" else self.exp_avg_sq)[f"m.{name}"][j]
                    optim[f"{name}/{key}"] = np.asarray(src.detach().cpu().numpy(), dtype=np.float64)
        return ResumeState(step=step, params=params, optim=optim, has_optim=has, rng=self.rng[i],
                           schedule=schedule.state.copy())

    def _metrics(self, step: int, due: list[tuple[int, int]], loss: Any) -> dict[int, dict[str, float]]:
        """The metric rows of the members due at ``step`` (``(position, member)`` pairs), as the
        ordinary trainer writes them."""
        import torch

        out = self._outputs()
        nan = float("nan")
        rows = {}
        with torch.no_grad():
            for j, i in due:
                trainer = self.members[i]
                o = out[j]
                correct = (trainer.model.predict(o) == self.labels).double()
                tr, va = self.train_sets[i], self.val_sets[i]
                rows[i] = {"step": step,
                           "train_loss": float(loss[j]) if len(tr) else nan,
                           "train_acc": float(correct[tr].mean()) if len(tr) else nan,
                           "val_loss": float(trainer.model.loss(o[va], self.labels[va])) if len(va) else nan,
                           "val_acc": float(correct[va].mean()) if len(va) else nan,
                           "lr": self.configs[i].lr * trainer.lr_factor(step)}
        return rows

    def run(self, writers: Sequence[RunWriter], on_finish: Callable[[int], None] | None = None) -> None:
        import time

        import torch
        from tqdm import tqdm

        from probe.train.loop import _DeferredInterrupt, _Deterministic

        schedules = [make_schedule(c.checkpoint, c.steps) for c in self.configs]
        last = [-1] * len(self.members)
        ends = [c.steps for c in self.configs]  # each member's last step (its early stop may come sooner)
        seen: list[dict[str, list[float]]] = [{"step": [], "train_acc": [], "val_acc": []} for _ in self.members]
        committed = [time.monotonic()] * len(self.members)
        closed = [False] * len(self.members)
        bar = tqdm(total=self.steps, desc=f"ensemble x{len(self.members)}", unit="step",
                   disable=not self.progress, mininterval=0.5, dynamic_ncols=True)
        finished = False
        determinism = _Deterministic(self.device)
        stop = _DeferredInterrupt()
        try:
            step = 0
            while self.alive:
                stop.check()
                training = any(step < ends[i] for i in self.alive)
                with torch.enable_grad() if training else torch.no_grad():
                    loss = self._train_losses()
                due = [(j, i) for j, i in enumerate(self.alive)
                       if step % self.metrics_every == 0 or step == ends[i]]
                rows = self._metrics(step, due, loss) if due else {}
                for i, row in rows.items():
                    writers[i].add_metrics(row)
                    cfg = self.configs[i]
                    if cfg.stop.after_generalization is not None and ends[i] == cfg.steps:
                        for k in seen[i]:
                            seen[i][k].append(row[k])
                        stop_at = cfg.stop.stop_step(seen[i]["step"], seen[i]["train_acc"], seen[i]["val_acc"])
                        if stop_at is not None and stop_at < ends[i]:
                            ends[i] = max(stop_at, step)
                            schedules[i].total = ends[i]
                now = time.monotonic()
                for j, i in enumerate(self.alive):
                    sched = schedules[i]
                    if step > last[i] and sched.due(step, rows.get(i)):
                        sched.record(step, rows.get(i))
                        writers[i].queue_checkpoint(step, self._series(j, i))
                        last[i] = step
                        if step >= ends[i] or now - committed[i] >= self.COMMIT_SECONDS:
                            writers[i].commit(self._state(j, i, step, sched))
                            committed[i] = now
                done = [i for i in self.alive if step >= ends[i]]
                for i in done:
                    writers[i].close(finished=True)
                    closed[i] = True
                    if on_finish is not None:
                        on_finish(i)
                if not training:
                    break
                loss.sum().backward()
                if done:  # finished members leave the stack (their gradients go with them)
                    self._keep([j for j, i in enumerate(self.alive) if not closed[i]])
                self._adam_step(self.members[0].lr_factor(step))
                step += 1
                bar.update(1)
            finished = True
        finally:
            determinism.restore()
            stop.restore()
            bar.close()
            for i, w in enumerate(writers):
                if not closed[i]:
                    w.close(finished=finished)


def train_ensemble(configs: Sequence[TrainConfig], run_dirs: Sequence[str | Path], progress: bool = True,
                   on_finish: Callable[[int], None] | None = None) -> list[Path]:
    """Train ``configs`` as one batched model; member ``i`` is written to ``run_dirs[i]`` as an ordinary
    run (resumable and analysable one by one). ``on_finish(i)`` is called as soon as member ``i``'s run
    file is closed as finished (members that stop early finish before the others). Directories this
    call created are removed if training cannot start."""
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
    ens.run(writers, on_finish=on_finish)
    return [run_file_path(d) for d in dirs]


