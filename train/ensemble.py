"""Vectorised ensembles: runs that differ only in hyperparameters that vectorise train together as one
batched model, and each member still writes its own ordinary run file.

Members are built exactly as :class:`probe.train.loop.Trainer` builds a run (its seed, its split, its
model and buffers, its writer and checkpoint schedule); their parameters are stacked along a leading
member axis and one ``torch.func.vmap`` of ``functional_call`` computes every member's loss on its
own training rows (a padded index list with weights, so training fractions, split seeds and batch sizes
may differ). A member that trains on minibatches draws each step's batch from its own trainer
(:meth:`probe.train.loop.Trainer.batch_rows`: its batch generator, epoch shuffle or the authors' random
stream), so its batches are the ones it draws trained alone.
The optimizer is torch's fused AdamW (or Adam) kernel, called on each member's slices of the stacked
tensors with its own learning rates and weight decays. The result matches the members
trained one by one within float tolerance, checkpoint by checkpoint (a test checks it). Each
member's bookkeeping (metric rows, early stop, checkpoints and their commits) is the one-run
trainer's :class:`probe.train.steps.StepRecorder`.

An interrupted ensemble is finished as an ensemble (``train_ensemble(..., resume=True)``): each
member continues from its own run file, and the result is the uninterrupted ensemble's, bit for bit
on the CPU (:meth:`Ensemble.run` says how; docs/design.md, "Sweeps").
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from probe.config import TrainConfig
from probe.errors import ProbeError
from probe.runfile import ResumeState, RunWriter, run_file_path
from probe.schedules import make_schedule
from probe.tasks import Task
from probe.train.steps import CommitClock, StepRecorder, committed_history
from probe.train.interventions import build_stacked, refused_by_ensembles

#: config keys whose values may differ between members of one ensemble
VECTOR_KEYS: tuple[str, ...] = ("lr", "weight_decay", "embed_lr", "embed_weight_decay", "model.init_scale", "seed",
                                "split_seed", "train_fraction", "n_train", "batch_size")
MAX_MEMBERS = 256


def _member_keys(cfg: TrainConfig) -> tuple[str, ...]:
    """The keys of ``cfg`` that may differ between members: :data:`VECTOR_KEYS` and its model's knobs."""
    return (*VECTOR_KEYS, *(f"model.{k}" for k in type(cfg.model).knobs))


def _blank(cfg: TrainConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    for key in _member_keys(cfg):
        head, _, tail = key.partition(".")
        if tail:
            d.get(head, {}).pop(tail, None)
        else:
            d.pop(head, None)
    return d


def _cannot_join(cfg: TrainConfig) -> str | None:
    """Why one config cannot train in an ensemble (None: it can)."""
    if cfg.optimizer not in ("adamw", "adam"):
        return f"optimizer {cfg.optimizer} does not vectorise (adamw and adam do)"
    if getattr(cfg.model, "dropout", 0.0):
        return "dropout does not vectorise"
    knobs = refused_by_ensembles(cfg)
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
                        f"{', '.join(_member_keys(configs[0]))} may differ)")
    return None


def _wrappers(model: Any) -> tuple[Any, Any]:
    """Two views of one member: its mean loss on its own training rows (what it trains on, as the
    ordinary trainer does), and its outputs on every sample (for the metric rows)."""
    import torch

    class Loss(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: Any, labels: Any, idx: Any, weight: Any, count: Any, knobs: dict[str, Any]) -> Any:
            for name, value in knobs.items():
                self.m.set_knob(name, value)
            losses = self.m.sample_losses(self.m.answer(x[idx]), labels[idx])
            return (losses * weight).sum() / count

    class Outputs(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: Any, knobs: dict[str, Any]) -> Any:
            for name, value in knobs.items():
                self.m.set_knob(name, value)
            return self.m.answer(x)

    return Loss(model), Outputs(model)


def _pad(groups: list[np.ndarray], device: str) -> tuple[Any, Any, Any]:
    """Each member's rows as one padded, left-aligned index tensor, its 0/1 weights and the row counts
    (at least 1), on ``device``."""
    import torch

    width = max(1, max(len(g) for g in groups))
    idx = np.zeros((len(groups), width), dtype=np.int64)
    w = np.zeros((len(groups), width), dtype=np.float64)
    for i, g in enumerate(groups):
        idx[i, : len(g)] = g
        w[i, : len(g)] = 1.0
    n = np.array([max(len(g), 1) for g in groups], dtype=np.float64)
    return tuple(torch.from_numpy(a).to(device) for a in (idx, w, n))  # type: ignore[return-value]


@dataclass(frozen=True)
class MemberStart:
    """How one member enters :meth:`Ensemble.run`: fresh (``writer`` a new run file, ``state`` None),
    resumed from its resume slot (``state``, with ``history``: its committed metric rows before
    ``state.step``), or finished already (``writer`` None; ``end``: its last step)."""

    writer: RunWriter | None
    state: ResumeState | None = None
    history: dict[str, np.ndarray] | None = None
    end: int = -1

    @property
    def start(self) -> int:
        return self.state.step if self.state is not None else 0


class Ensemble:
    """Members ``configs`` written to ``run_dirs``; :meth:`run` trains them all to their steps.

    The stacked tensors hold the members still training (``alive``, indices into ``configs``); a member
    that reaches its last step (its budget, or its early stop) leaves the stack, so finished members
    cost nothing while the others go on. ``tasks``: each member's task as its run file stores it
    (resumed members), else built from its config.
    """

    #: the longest the members' queued checkpoints (and resume states) wait for a commit round, seconds
    COMMIT_SECONDS = 15.0
    #: rounds come sooner while commits are cheap: about 1 / COMMIT_RATIO of the time goes to them
    COMMIT_RATIO = 10.0

    def __init__(self, configs: Sequence[TrainConfig], run_dirs: Sequence[Path], progress: bool = True,
                 tasks: Sequence[Task | None] | None = None) -> None:
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
        for i, (cfg, d) in enumerate(zip(self.configs, self.dirs)):
            trainer = Trainer(cfg, d, progress=False, task=tasks[i] if tasks is not None else None)
            self.members.append(trainer)  # its seed, split, model and buffers
            self.rng.append(trainer.rng_snapshot())  # no dropout: only a minibatch member's batch generator draws
        first = self.members[0]
        self.device = first.device
        self.task = first.task
        self.steps = self.configs[0].steps
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
        # model config values that differ between members but are no parameters (ModelConfig.knobs):
        # one float64 value per member, handed to the model inside the batched call
        values = {k: [getattr(c.model, k) for c in self.configs] for k in type(self.configs[0].model).knobs}
        self.knobs = {k: torch.tensor(v, dtype=torch.float64, device=self.device)
                      for k, v in values.items() if len(set(v)) > 1}
        inputs = torch.as_tensor(self.task.inputs).to(self.device)
        self.x = model.model_inputs(inputs)
        self.labels = torch.as_tensor(self.task.labels).to(self.device)
        self.train_idx, self.train_w, self.train_n = _pad([t.split.train for t in self.members], self.device)
        self.val_sets = [torch.as_tensor(t.split.val, device=self.device) for t in self.members]
        self.train_sets = [torch.as_tensor(t.split.train, device=self.device) for t in self.members]
        # members on minibatches: each step's rows come from their own trainer (batch_rows), and their
        # batch generator's state before the step's draw goes into their resume state
        self.drawing = {i for i, t in enumerate(self.members) if not t.full_batch}
        self.batch_rng = {i: self.rng[i]["batch"] for i in self.drawing}
        self.batches: dict[int, np.ndarray] = {}  # member -> its rows (sample indices) of the current step
        self.lr = [{n: c.resolved_embed_lr if n == self.embed_name else c.lr for n in self.names}
                   for c in self.configs]
        self.wd = [{n: c.resolved_embed_weight_decay if n == self.embed_name else c.weight_decay
                    for n in self.names} for c in self.configs]
        self.exp_avg = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.adam_steps = 0
        self._index()
        self.stacked = build_stacked(self.configs[0], self._named(), str(self.device))

    def _named(self) -> list[tuple[str, Any]]:
        """The stacked parameters under the model's names."""
        return [(n, self.params[f"m.{n}"]) for n in self.names]

    # the batched model ------------------------------------------------------------------------------
    def _draw(self, step: int) -> tuple[Any, Any, Any]:
        """The rows each stacked member trains on at ``step`` (padded index list, weights, counts): its
        training set, or, on minibatches, the batch its trainer draws for the step (as it would trained
        alone; the generator's state before the draw is kept for the step's resume state)."""
        import torch

        if not any(i in self.drawing for i in self.alive):
            return self.train_idx, self.train_w, self.train_n
        rows = []
        for i in self.alive:
            split = self.members[i].split.train
            if i in self.drawing:
                trainer = self.members[i]
                self.batch_rng[i] = trainer.batch_gen.get_state().numpy().copy()
                self.batches[i] = split[trainer.batch_rows(step).numpy()]
                rows.append(self.batches[i])
            else:
                rows.append(split)
        return _pad(rows, self.device)

    def _train_losses(self, rows: tuple[Any, Any, Any]) -> Any:
        """Each stacked member's mean training loss on its rows (:meth:`_draw`), ``[len(alive)]``."""
        from torch.func import functional_call, vmap

        def one(p: dict, b: dict, idx: Any, w: Any, n: Any, knobs: dict) -> Any:
            return functional_call(self.loss_module, {**p, **b}, (self.x, self.labels, idx, w, n, knobs))

        try:
            return vmap(one)(self.params, self.buffers, *rows, self.knobs)
        finally:
            self._reset_knobs()

    def _outputs(self) -> Any:
        """Each stacked member's outputs on every sample, ``[len(alive), n_samples, ...]``."""
        import torch
        from torch.func import functional_call, vmap

        def one(p: dict, b: dict, knobs: dict) -> Any:
            return functional_call(self.output_module, {**p, **b}, (self.x, knobs))

        try:
            with torch.no_grad():
                return vmap(one)({k: v.detach() for k, v in self.params.items()}, self.buffers, self.knobs)
        finally:
            self._reset_knobs()

    def _reset_knobs(self) -> None:
        """The shared model back on the first member's config values (floats), after a batched call."""
        model = self.members[0].model
        for name in self.knobs:
            model.set_knob(name, float(getattr(self.configs[0].model, name)))

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
            self.knobs = {k: v[pick] for k, v in self.knobs.items()}
        # the padded rows shrink to the largest training set left in the stack (rows are left-aligned)
        width = int(self.train_n[pick].max())  # counts are at least 1
        self.train_idx, self.train_w = self.train_idx[pick, :width], self.train_w[pick, :width]
        self.train_n = self.train_n[pick]
        self.alive = [self.alive[j] for j in positions]
        self._index()

    # one member's view ------------------------------------------------------------------------------------
    def _series(self, j: int, i: int) -> dict[str, np.ndarray]:
        return {n: self.params[f"m.{n}"][j].detach().cpu().numpy() for n in self.members[i].saved}

    def _state(self, j: int, i: int, step: int, schedule: np.ndarray) -> ResumeState:
        """Member ``i`` (stacked at ``j``) at ``step``, as the one-run trainer stores a resume state."""
        from probe.train.loop import optim_keys

        trainer = self.members[i]
        params = {n: self.params[f"m.{n}"][j].detach().cpu().numpy().copy() for n in self.names}
        optim: dict[str, np.ndarray] = {}
        has = self.adam_steps > 0
        for name, p in trainer.ordered_params():
            for key in optim_keys(trainer.cfg):
                if key == "step":
                    optim[f"{name}/step"] = np.asarray(float(self.adam_steps))
                else:
                    src = (self.exp_avg if key == "exp_avg" else self.exp_avg_sq)[f"m.{name}"][j]
                    optim[f"{name}/{key}"] = np.asarray(src.detach().cpu().numpy(), dtype=np.float64)
        rng = {**self.rng[i], "batch": self.batch_rng[i]} if i in self.drawing else self.rng[i]
        return ResumeState(step=step, params=params, optim=optim, has_optim=has, rng=rng, schedule=schedule)

    def _load(self, j: int, i: int, state: ResumeState) -> None:
        """Put member ``i``'s resume state into its place ``j`` in the stack: its weights and Adam
        moments (the step count is the ensemble's, ``state.step``, as for every member), and a minibatch
        member's batch generator, which draws the step's batch next."""
        import torch

        if i in self.drawing and "batch" in state.rng:
            self.members[i].batch_gen.set_state(torch.from_numpy(np.asarray(state.rng["batch"]).copy()))
        with torch.no_grad():
            for n in self.names:
                key = f"m.{n}"
                target = self.params[key].detach()
                target[j].copy_(torch.from_numpy(np.asarray(state.params[n])).to(target.dtype))
                for moment, store in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
                    if state.has_optim:
                        store[key][j].copy_(torch.from_numpy(np.asarray(state.optim[f"{n}/{moment}"]))
                                            .to(store[key].dtype))
                    else:
                        store[key][j].zero_()

    def _metrics(self, step: int, due: list[tuple[int, int]], loss: Any) -> dict[int, Any]:
        """The metric values of the members due at ``step`` (``(position, member)`` pairs), as the
        ordinary trainer computes them: member -> ((train loss, acc), (val loss, acc), lr)."""
        import torch

        out = self._outputs()
        nan = float("nan")
        values = {}
        with torch.no_grad():
            for j, i in due:
                trainer = self.members[i]
                o = out[j]
                correct = (trainer.model.predict(o) == self.labels).double()
                tr, va = self.train_sets[i], self.val_sets[i]
                if i not in self.drawing:  # the step's loss is on the whole training set
                    train = (float(loss[j]) if len(tr) else nan, float(correct[tr].mean()) if len(tr) else nan)
                elif trainer.update_metrics:  # the update's own batch (train_metrics=update)
                    train = (float(loss[j]), float(correct[torch.from_numpy(self.batches[i]).to(self.device)].mean()))
                else:  # the whole training set, as the one-run trainer evaluates it
                    train = (float(trainer.model.loss(o[tr], self.labels[tr])), float(correct[tr].mean()))
                values[i] = (train,
                             (float(trainer.model.loss(o[va], self.labels[va])) if len(va) else nan,
                              float(correct[va].mean()) if len(va) else nan),
                             self.configs[i].lr * trainer.lr_factor(step))
        return values

    def run(self, starts: Sequence[MemberStart], on_finish: Callable[[int], None] | None = None) -> None:
        """Train every member from its start (:class:`MemberStart`, one per member) to its last step.

        Resumed members continue as if never interrupted (on the CPU, bit for bit). What a member
        computes depends only on its own numbers and on the shape of the stack (a batched kernel may
        choose its blocking by batch size), so the ensemble starts at the earliest resume step of
        the members still to train, with the stack the uninterrupted run had there: every member
        whose last step is not before it, finished ones included. A member whose own resume step is
        later, or that finished already, holds its place in the stack without recording anything
        until its resume step (its state is loaded there) or its last step (it leaves the stack as
        it did before). Members commit their checkpoints in rounds (:class:`CommitClock`), each to
        its own file, so after a kill they may be at different steps (killed during a round, or with
        schedules that checkpoint at different steps); each file stays complete."""
        import torch
        from tqdm import tqdm

        from probe.train.loop import DeferredInterrupt, Deterministic

        n = len(self.members)
        if len(starts) != n:
            raise ValueError(f"{len(starts)} starts for {n} members")
        clock = CommitClock(self.COMMIT_SECONDS, self.COMMIT_RATIO)
        records: list[StepRecorder | None] = []
        for cfg, s in zip(self.configs, starts):
            if s.writer is None:
                records.append(None)
                continue
            schedule = make_schedule(cfg.checkpoint, cfg.steps, s.state.schedule if s.state is not None else None)
            records.append(StepRecorder(cfg, s.writer, schedule, s.start, s.start if s.state is not None else -1,
                                        s.history, clock))

        def end(i: int) -> int:
            record = records[i]
            return record.end if record is not None else starts[i].end

        closed = [r is None for r in records]
        for i in range(n):
            if closed[i] and on_finish is not None:
                on_finish(i)
        training = [i for i in range(n) if records[i] is not None]
        if not training:
            return
        first = min(starts[i].start for i in training)
        stacked = [i for i in range(n) if end(i) >= first]
        if len(stacked) < n:
            self._keep(stacked)
        self.adam_steps = first
        waiting = {i: starts[i].start for i in training if starts[i].start > first}
        for j, i in enumerate(self.alive):
            state = starts[i].state
            if state is not None and i not in waiting:
                self._load(j, i, state)
        bar = tqdm(total=self.steps, initial=first, desc=f"ensemble x{n}", unit="step",
                   disable=not self.progress, mininterval=0.5, dynamic_ncols=True)
        finished = False
        determinism = Deterministic(self.device)
        stop = DeferredInterrupt()
        try:
            step = first
            while self.alive:
                stop.check()
                for j, i in enumerate(self.alive):
                    if waiting.get(i) == step:  # its resume step: from here on it is itself
                        state = starts[i].state
                        assert state is not None
                        self._load(j, i, state)
                        del waiting[i]
                going = any(step < end(i) for i in self.alive)
                rows = self._draw(step)
                with torch.enable_grad() if going else torch.no_grad():
                    loss = self._train_losses(rows)
                active = [(j, i) for j, i in enumerate(self.alive) if not closed[i] and i not in waiting]
                due = [(j, i) for j, i in active if records[i].metrics_due(step)]  # type: ignore[union-attr]
                values = self._metrics(step, due, loss) if due else {}
                rows = {i: records[i].add_metrics(step, *v) for i, v in values.items()}  # type: ignore[union-attr]
                clock.tick()
                for j, i in active:
                    records[i].checkpoint(  # type: ignore[union-attr]
                        step, rows.get(i), lambda j=j, i=i: self._series(j, i),
                        lambda schedule, j=j, i=i: self._state(j, i, step, schedule))
                done = [i for i in self.alive if step >= end(i)]
                for i in done:
                    if not closed[i]:
                        records[i].close(finished=True)  # type: ignore[union-attr]
                        closed[i] = True
                        if on_finish is not None:
                            on_finish(i)
                if not going:
                    break
                loss.sum().backward()
                if done:  # finished members leave the stack (their gradients go with them)
                    self._keep([j for j, i in enumerate(self.alive) if i not in done])
                for part in self.stacked:  # the vectorising interventions, on the gradients
                    part.apply_stacked(self._named())
                self._adam_step(self.members[0].lr_factor(step))
                step += 1
                bar.update(1)
            finished = True
        finally:
            determinism.restore()
            stop.restore()
            bar.close()
            for i, record in enumerate(records):
                if record is not None and not closed[i]:
                    record.close(finished=finished)


def _open_members(configs: Sequence[TrainConfig], dirs: Sequence[Path]) -> list[Any]:
    """The run already in each member's directory (a :class:`probe.run.Run`, or None where there is
    none yet); a run of another config than its member's is refused."""
    from probe.run import Run

    runs: list[Any] = []
    try:
        for cfg, d in zip(configs, dirs):
            path = run_file_path(d)
            if not path.exists():
                runs.append(None)
                continue
            run = Run(path)  # the validation every reader applies: a damaged file is refused unchanged
            runs.append(run)
            if run.config.to_dict() != cfg.to_dict():
                raise ProbeError(f"{d} holds a run of another config than this ensemble member; "
                                 "move it away to train the member again")
    except BaseException:
        for run in runs:
            if run is not None:
                run.close()
        raise
    return runs


def train_ensemble(configs: Sequence[TrainConfig], run_dirs: Sequence[str | Path], progress: bool = True,
                   on_finish: Callable[[int], None] | None = None, resume: bool = False) -> list[Path]:
    """Train ``configs`` as one batched model; member ``i`` is written to ``run_dirs[i]`` as an ordinary
    run (resumable and analysable one by one). ``on_finish(i)`` is called as soon as member ``i``'s run
    file is closed as finished (members that stop early finish before the others).

    ``resume=True`` continues an ensemble that was interrupted: each member starts from what its
    directory holds (nothing: from step 0; an unfinished run: from its resume slot; a finished run:
    it stays finished, ``on_finish`` is called for it at once), and the result is the uninterrupted
    ensemble's (on the CPU, bit for bit; :meth:`Ensemble.run`). Without it, a directory that holds a
    run is refused. Directories this call created are removed if training cannot start."""
    from probe.train.loop import CONFIG_COPY, make_run_dir, write_config_copy

    dirs = [Path(d) for d in run_dirs]
    if len(dirs) != len(configs):
        raise ProbeError("one run directory per config")
    if not resume:
        for d in dirs:
            if run_file_path(d).exists():
                raise ProbeError(f"{d} already holds a run")
    created: list[bool] = []
    fresh: list[Path] = []  # run files this call creates from nothing
    writers: list[RunWriter] = []
    runs: list[Any] = []
    try:
        for d in dirs:
            created.append(make_run_dir(d))
        runs = _open_members(configs, dirs) if resume else [None] * len(dirs)
        ens = Ensemble(configs, dirs, progress=progress, tasks=[r.task if r is not None else None for r in runs])
        starts = []
        for d, cfg, member, run in zip(dirs, configs, ens.members, runs):
            path = run_file_path(d)
            if run is not None and run.finished:
                starts.append(MemberStart(None, end=int(run.steps[-1])))
                continue
            state = run.file.resume_state() if run is not None else None
            write_config_copy(d, cfg)
            if state is None:
                if run is None:
                    fresh.append(path)
                writers.append(member.open_writer(path))
                starts.append(MemberStart(writers[-1]))
            else:
                writers.append(member.open_writer(path, copy_from=run.file, resume=state))
                starts.append(MemberStart(writers[-1], state, committed_history(run.file, state.step)))
    except BaseException:
        for w in writers:
            w.close(finished=False)
        for d, made in zip(dirs, created):
            if made:
                shutil.rmtree(d, ignore_errors=True)
            elif run_file_path(d) in fresh or not resume:
                (d / CONFIG_COPY).unlink(missing_ok=True)
                run_file_path(d).unlink(missing_ok=True)
        raise
    finally:
        for run in runs:
            if run is not None:
                run.close()
    ens.run(starts, on_finish=on_finish)
    return [run_file_path(d) for d in dirs]
