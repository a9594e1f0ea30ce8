"""The training loop: writes a dense HDF5 checkpoint series that ``probe.load_run`` reads.

Per step ``s`` the loop (1) snapshots the RNG states, (2) runs the training forward pass on the
parameters at ``s``, (3) records metrics of those parameters, (4) writes checkpoint ``s`` if the
schedule says so, together with the optimizer state and RNG snapshot, then (5) updates to ``s+1``.
Resuming from checkpoint ``s`` therefore replays step ``s`` exactly, so a run killed and resumed on
CPU ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import os
import shutil
import signal
import sys
import threading
import warnings
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from probe.config import TrainConfig
from probe.devices import resolve_device
from probe.errors import ProbeError
from probe.runfile import (ResumeState, RunFile, RunHeader, RunLayout, RunWriter, package_versions,
                           run_file_path)
from probe.schema import ATTRS_BY_NAME, shape_problem
from probe.schedules import STATE_SIZE, Schedule, make_schedule
from probe.tasks import GrokkingSquaredStream, Split, Task, make_split, make_task, subset_split
from probe.train.interventions import (STAGES, Intervention, build_interventions, load_resume, resume_shapes,
                                       resume_state)
from probe.train.steps import StepRecorder, committed_history

ADAM_KEYS = ("step", "exp_avg", "exp_avg_sq")
CONFIG_COPY = "config.yaml"
PARENT_COPY = "parent.npz"  # a fine-tuned run's starting weights, until its run file holds a resume point


def optim_keys(cfg: TrainConfig) -> tuple[str, ...]:
    """The per-parameter optimizer state ``cfg``'s optimizer keeps (resume slots hold ``NAME/KEY``)."""
    if cfg.optimizer in ("adam", "adamw"):
        return ADAM_KEYS
    return ("momentum_buffer",) if cfg.momentum > 0 else ()


@dataclass(frozen=True)
class ParentCheckpoint:
    """Where a fine-tuned run starts: another run's weights at one checkpoint (float32 arrays by
    parameter name), optionally its optimizer state there, and the lineage the new run records."""

    params: dict[str, np.ndarray]
    optim: dict[str, np.ndarray] | None
    lineage: dict[str, Any]


def parse_from(spec: str) -> tuple[Path, str]:
    """``RUN[:STEP]`` -> (run directory, step selector: an integer, ``first`` or ``last``)."""
    run, sep, step = spec.rpartition(":")
    if not sep or not step or "/" in step or not (step.isdigit() or step in ("first", "last")):
        return Path(spec), "last"
    return Path(run), step


def parent_checkpoint(spec: str, cfg: TrainConfig, optimizer: bool = False) -> ParentCheckpoint:
    """Read checkpoint ``RUN[:STEP]`` (default: the last) of another run to start ``cfg`` from. The
    run must have saved every parameter at that step and hold the same model and task as ``cfg``;
    its optimizer state (``optimizer=True``) exists only at the step of its resume state."""
    from probe.run import Run

    run_dir, step = parse_from(spec)
    run = Run(run_dir)
    try:
        steps = run.steps
        if len(steps) == 0:
            raise ProbeError(f"{run_dir} has no checkpoint yet", param="from")
        if step.isdigit() and int(step) not in set(steps.tolist()):
            near = steps[np.argsort(np.abs(steps - int(step)))[:3]]
            raise ProbeError(f"{run_dir} has no checkpoint at step {step} (nearest: "
                             f"{', '.join(str(int(s)) for s in sorted(near))})", param="from")
        parent_cfg = run.config
        check_same_model(parent_cfg, cfg, run_dir)
        index = run._index(step)
        at = int(steps[index])
        missing = [n for n in run.file.parameters if n not in run.tensor_names]
        if missing:
            raise ProbeError(f"{run_dir} saved only {', '.join(run.tensor_names)} (checkpoint.tensors), so its "
                             f"weights cannot be restored (missing: {', '.join(missing)})", param="from")
        params = {n: run.read_tensor(index, n, np.float32) for n in run.file.parameters}
        optim = None
        if optimizer:
            state = run.file.resume_state()
            if state is None or state.step != at or not state.has_optim:
                where = f"step {state.step}" if state is not None and state.has_optim else "no step"
                raise ProbeError(f"{run_dir} keeps its optimizer state only at its last resume point ({where}), "
                                 f"not at step {at}", param="from")
            if parent_cfg.optimizer != cfg.optimizer:
                raise ProbeError(f"the optimizer state of {run_dir} is {parent_cfg.optimizer}'s; the new config uses "
                                 f"{cfg.optimizer}", param="from")
            optim = {k: v for k, v in state.optim.items() if k.rsplit("/", 1)[-1] in optim_keys(cfg)}
            params = {n: np.asarray(state.params[n], np.float32) for n in run.file.parameters}
        lineage = {"run": str(run.dir.resolve()), "step": at, "optimizer": bool(optimizer),
                   "config": parent_cfg.to_dict()}
        return ParentCheckpoint(params=params, optim=optim, lineage=lineage)
    finally:
        run.close()


def check_same_model(parent_cfg: TrainConfig, cfg: TrainConfig, run_dir: str | Path) -> None:
    """A run may start from another's checkpoint only with the same model and task."""
    if parent_cfg.to_dict()["model"] != cfg.to_dict()["model"] or parent_cfg.task_params != cfg.task_params:
        diff = _first_difference(parent_cfg, cfg)
        raise ProbeError(f"{run_dir} holds a different model or task than the new config ({diff}); "
                         "only the optimizer, data and training settings may change", param="from")


def _first_difference(a: TrainConfig, b: TrainConfig) -> str:
    da, db = a.to_dict(), b.to_dict()
    for key in ("task", "p", "n", "group", "ordered"):
        if da.get(key) != db.get(key):
            return f"{key}: {da.get(key)} there, {db.get(key)} here"
    for key in sorted(set(da["model"]) | set(db["model"])):
        if da["model"].get(key) != db["model"].get(key):
            return f"model.{key}: {da['model'].get(key)} there, {db['model'].get(key)} here"
    return "configs differ"


class Trainer:
    """One run's model, data, optimizer and writer; ``run()`` trains to ``cfg.steps``."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, progress: bool = True, task: Task | None = None) -> None:
        import torch

        from probe.models import build_model

        self.cfg = cfg
        self.run_dir = run_dir
        self.progress = progress
        self.device = resolve_device(cfg.device)
        # a resumed run takes its task from the run file (a group table is stored there, so the
        # CSV it came from may have moved)
        self.task = task if task is not None else make_task(**cfg.task_params)
        self.stream: GrokkingSquaredStream | None = None
        if cfg.rng != "probe":
            n_train = cfg.n_train if cfg.n_train is not None else max(
                1, int(math.floor(cfg.train_fraction * self.task.n_samples + 1e-9)))
            d_target = cfg.model.d_out if cfg.model.objective == "mse_targets" else self.task.n_classes
            discard = (self.task.n_symbols, d_target) if cfg.rng == "grokking-squared-phase" else None
            self.stream = GrokkingSquaredStream(self.task.n_samples, n_train, cfg.seed,
                                                (self.task.n_classes, d_target), discard)
            split = self.stream.split
        else:
            split = make_split(self.task.n_samples, cfg.train_fraction, cfg.split_seed, cfg.n_train)
        self.split: Split = subset_split(split, cfg.train_subset, cfg.split_seed)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, self.task).to(self.device)
        if self.stream is not None:
            self.model.init_like_grokking_squared(cfg.seed, torch.as_tensor(self.stream.targets).to(self.device),
                                                  notebook=cfg.rng == "grokking-squared-phase")
        self.model.set_loss(cfg.softmax, cfg.softmax_dtype)
        if cfg.init_alpha != 1.0:
            with torch.no_grad():
                for p in self.model.parameters():
                    if p.ndim >= 2:
                        p.mul_(cfg.init_alpha)
        self.param_names = [n for n, _ in self.model.named_parameters()]
        self.parent: dict[str, Any] | None = None
        self.saved = [n for n in self.param_names if any(fnmatch.fnmatchcase(n, pat) for pat in cfg.checkpoint.tensors)]
        if not self.saved:
            raise ProbeError(f"checkpoint.tensors={list(cfg.checkpoint.tensors)} matches no parameter "
                             f"(parameters: {', '.join(self.param_names)})")
        self.optimizer = self._make_optimizer()
        self.batch_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self._epoch: tuple[int, Any] | None = None  # (epoch, its shuffle of the training rows) with batching=epochs
        inputs = torch.as_tensor(self.task.inputs).to(self.device)
        labels = torch.as_tensor(self.task.labels).to(self.device)
        x = self.model.model_inputs(inputs)
        tr = torch.as_tensor(self.split.train, device=self.device)
        va = torch.as_tensor(self.split.val, device=self.device)
        self.x_train, self.y_train = x[tr], labels[tr]
        self.x_val, self.y_val = x[va], labels[va]
        n_train = self.x_train.shape[0]
        self.full_batch = cfg.batch_size is None or cfg.batch_size >= n_train
        dropout = getattr(cfg.model, "dropout", 0.0)
        # the training metrics come from the update's own forward pass when asked to, or when that pass
        # sees the whole training set without dropout (the numbers an evaluation would give)
        self.update_metrics = cfg.checkpoint.train_metrics == "update"
        self.train_metrics_free = self.update_metrics or (self.full_batch and dropout == 0.0)
        self._interventions()

    def _interventions(self) -> None:
        """The interventions the config turns on (``probe.train.interventions``), built on the current
        weights (the norm constraint's relative target is the norm the run starts from, and it holds
        from step 0), grouped by the stage they act at in registration order. Their resume state goes
        into the resume slots beside the optimizer's."""
        self.interventions: list[Intervention] = build_interventions(
            self.cfg, list(self.model.named_parameters()), self.device)
        self.stages = {stage: [part for part in self.interventions if part.stage == stage] for stage in STAGES}

    def _act(self, stage: str) -> None:
        """Let the interventions of ``stage`` act, in registration order."""
        parts = self.stages[stage]
        if parts:
            named = list(self.model.named_parameters())
            for part in parts:
                part.apply(named)

    def start_from(self, parent: "ParentCheckpoint") -> None:
        """Start from another run's checkpoint: its weights (and, when asked and stored, its optimizer
        state) replace the fresh initialisation; the lineage goes into the run file."""
        import torch

        bad = _start_problem(parent, self)
        if bad:
            raise ProbeError(f"the starting weights do not fit the model: {bad}")
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                param.copy_(torch.from_numpy(parent.params[name]).to(param.dtype))
        if parent.optim is not None:
            self._load_optim(parent.optim)
        self.parent = parent.lineage
        self._interventions()

    # optimizer ----------------------------------------------------------------------------------
    def _make_optimizer(self) -> Any:
        import torch

        cfg = self.cfg
        embed_name = self.model.embed_param
        embed = [p for n, p in self.model.named_parameters() if n == embed_name]
        rest = [p for n, p in self.model.named_parameters() if n != embed_name]
        groups = []
        if embed:
            groups.append({"params": embed, "lr": cfg.resolved_embed_lr,
                           "weight_decay": cfg.resolved_embed_weight_decay, "base_lr": cfg.resolved_embed_lr})
        groups.append({"params": rest, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "base_lr": cfg.lr})
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(groups, betas=cfg.betas, eps=cfg.eps)
        if cfg.optimizer == "adam":
            # Adam with L2-style weight decay, as torch.optim.Adam defines it
            return torch.optim.Adam(groups, betas=cfg.betas, eps=cfg.eps)
        return torch.optim.SGD(groups, momentum=cfg.momentum)

    def ordered_params(self) -> list[tuple[str, Any]]:
        by_id = {id(p): n for n, p in self.model.named_parameters()}
        return [(by_id[id(p)], p) for g in self.optimizer.param_groups for p in g["params"]]

    def lr_factor(self, step: int) -> float:
        """Linear warmup ``min(step / warmup, 1)`` (Nanda et al.'s schedule); 1 without warmup."""
        w = self.cfg.warmup_steps
        return min(step / w, 1.0) if w > 0 else 1.0

    def batch_rows(self, step: int) -> Any:
        """The training rows of step ``step``'s minibatch (``batching``): ``random`` draws batch_size
        distinct rows from the batch generator; ``epochs`` walks epoch ``step // per_epoch``'s shuffle
        in consecutive slices, the last slice of an epoch the remainder. An epoch's shuffle is
        ``numpy.random.default_rng([seed + 1, epoch])``'s permutation, a function of the step alone, so
        a resumed run draws the batches it would have drawn without keeping any state."""
        import torch

        cfg = self.cfg
        n_train = self.x_train.shape[0]
        assert cfg.batch_size is not None
        if self.stream is not None:  # the minibatches of toy/train_add.py's numpy stream
            return torch.from_numpy(self.stream.batch(step, cfg.batch_size))
        if cfg.batching == "random":
            return torch.randperm(n_train, generator=self.batch_gen)[: cfg.batch_size]
        epoch, k = divmod(step, math.ceil(n_train / cfg.batch_size))
        if self._epoch is None or self._epoch[0] != epoch:
            perm = np.random.default_rng([cfg.seed + 1, epoch]).permutation(n_train)
            self._epoch = (epoch, torch.from_numpy(perm))
        return self._epoch[1][k * cfg.batch_size:(k + 1) * cfg.batch_size]

    # state ---------------------------------------------------------------------------------------
    def rng_snapshot(self) -> dict[str, np.ndarray]:
        import torch

        out = {"torch": torch.get_rng_state().numpy().copy(), "batch": self.batch_gen.get_state().numpy().copy()}
        if self.device.startswith("cuda"):
            out["cuda"] = torch.cuda.get_rng_state(self.device).numpy().copy()
        return out

    def _state(self, step: int, rng: dict[str, np.ndarray], schedule: np.ndarray) -> ResumeState:
        params = {n: t.detach().cpu().numpy().copy() for n, t in self.model.state_dict().items()
                  if n in self.param_names}
        optim: dict[str, np.ndarray] = {}
        state = self.optimizer.state
        has = all(p in state and state[p] for _, p in self.ordered_params()) and bool(optim_keys(self.cfg))
        for name, p in self.ordered_params():
            for key in optim_keys(self.cfg):
                value = state.get(p, {}).get(key)
                shape = () if key == "step" else tuple(p.shape)
                optim[f"{name}/{key}"] = (np.zeros(shape) if value is None
                                          else np.asarray(value.detach().cpu().numpy(), dtype=np.float64))
        optim.update(resume_state(self.interventions))
        return ResumeState(step=step, params=params, optim=optim, has_optim=has, rng=rng, schedule=schedule)

    def load_state(self, rs: ResumeState) -> None:
        import torch

        bad = self.layout().resume_problem(rs.params, rs.optim, rs.rng, rs.schedule)
        if bad:
            raise ProbeError(f"the resume state does not fit the model: {bad}")
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                param.copy_(torch.from_numpy(rs.params[name]).to(param.dtype))
        if rs.has_optim:
            self._load_optim(rs.optim)
        load_resume(self.interventions, rs.optim)
        torch.set_rng_state(torch.from_numpy(rs.rng["torch"].copy()))
        self.batch_gen.set_state(torch.from_numpy(rs.rng["batch"].copy()))
        if self.device.startswith("cuda") and "cuda" in rs.rng:
            torch.cuda.set_rng_state(torch.from_numpy(rs.rng["cuda"].copy()), self.device)

    def _load_optim(self, optim: dict[str, np.ndarray]) -> None:
        import torch

        sd = self.optimizer.state_dict()
        new_state = {}
        for idx, (name, p) in enumerate(self.ordered_params()):
            entry = {}
            for key in optim_keys(self.cfg):
                arr = optim[f"{name}/{key}"]
                entry[key] = (torch.tensor(float(np.asarray(arr).reshape(-1)[0]), dtype=torch.float32)
                              if key == "step"
                              else torch.from_numpy(np.asarray(arr)).to(p.dtype))
            new_state[idx] = entry
        sd["state"] = new_state
        self.optimizer.load_state_dict(sd)

    # file ------------------------------------------------------------------------------------------
    def open_writer(self, path: Path, copy_from: RunFile | None = None, resume: ResumeState | None = None) -> RunWriter:
        return RunWriter.create(path, self.layout(copy_from), copy_from=copy_from, resume=resume)

    def layout(self, copy_from: RunFile | None = None) -> RunLayout:
        """What this run's file is laid out from (:class:`probe.schema.RunLayout`); a resume
        (``copy_from``) keeps the run's creation time and lineage."""
        cfg = self.cfg
        optim_shapes = {f"{n}/{k}": (() if k == "step" else tuple(p.shape))
                        for n, p in self.ordered_params() for k in optim_keys(cfg)}
        optim_shapes.update(resume_shapes(self.interventions, taken=optim_shapes))
        rng = self.rng_snapshot()
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        old = copy_from.header if copy_from is not None else None  # a resume keeps the run's origin
        header = RunHeader(
            config=cfg.to_dict(), task=self.task.spec, symbols=tuple(self.task.symbols),
            parameters=tuple(self.param_names), packages=package_versions(), n_classes=self.task.n_classes,
            created=(old.created or now) if old is not None else now, resumed=now if old is not None else None,
            device=self.device, parent=old.parent if old is not None and old.parent is not None else self.parent)
        task_arrays = {"inputs": self.task.inputs, "labels": self.task.labels}
        if self.task.table is not None and self.task.name in ("group", "table"):
            task_arrays["table"] = self.task.table  # the run never needs the CSV again
        buffers = {n: b.detach().cpu().numpy() for n, b in self.model.named_buffers()}
        layout = RunLayout(
            header=header, task_arrays=task_arrays, split={"train": self.split.train, "val": self.split.val},
            static=buffers, param_shapes={n: tuple(p.shape) for n, p in self.model.named_parameters()},
            saved=tuple(self.saved), series_dtype=cfg.checkpoint.dtype, optim_shapes=optim_shapes,
            rng_sizes={k: v.shape[0] for k, v in rng.items()}, schedule_size=STATE_SIZE)
        return layout

    # evaluation --------------------------------------------------------------------------------------
    def _evaluate(self, x: Any, y: Any) -> tuple[float, float]:
        import torch

        if x.shape[0] == 0:
            return float("nan"), float("nan")
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            out = self.model.answer(x, last_only=True)
            loss = float(self.model.loss(out, y))
            acc = float((self.model.predict(out) == y).double().mean())
        self.model.train(was_training)
        return loss, acc

    # loop ----------------------------------------------------------------------------------------------
    def run(self, writer: RunWriter, start: int, schedule: Schedule, last_ckpt: int,
            history: dict[str, Any] | None = None) -> None:
        """Train from ``start`` to ``cfg.steps`` (or to the early stop of ``cfg.stop``; ``history``: the
        metric rows a resumed run committed before ``start``, which decide that stop as they did
        before). The step's bookkeeping (metric row, early stop, checkpoint with its resume state) is
        a :class:`probe.train.steps.StepRecorder`, the one the vectorised ensemble uses."""
        import torch
        from tqdm import tqdm

        cfg = self.cfg
        record = StepRecorder(cfg, writer, schedule, start, last_ckpt, history)
        bar = tqdm(total=record.end, initial=start, desc="train", unit="step", file=sys.stderr,
                   disable=not self.progress, mininterval=0.5, dynamic_ncols=True)
        finished = False
        stop = DeferredInterrupt()
        determinism = Deterministic(self.device)
        try:
            step = start
            self.model.train()
            while True:
                stop.check()
                rng = self.rng_snapshot()
                out = loss = None
                # the last step has no update; with train_metrics=update its metric row still gets the
                # forward pass an update would differentiate (after the step's RNG snapshot: nothing saved moves)
                if not record.finished(step) or (self.update_metrics and record.metrics_due(step)):
                    if self.full_batch:
                        xb, yb = self.x_train, self.y_train
                    else:
                        idx = self.batch_rows(step).to(self.device)
                        xb, yb = self.x_train[idx], self.y_train[idx]
                    out = self.model.answer(xb, last_only=True)
                    loss = self.model.loss(out, yb)
                row = None
                if record.metrics_due(step):
                    if self.train_metrics_free and out is not None:
                        with torch.no_grad():
                            tr = (float(loss), float((self.model.predict(out) == yb).double().mean()))
                    else:
                        tr = self._evaluate(self.x_train, self.y_train)
                    va = self._evaluate(self.x_val, self.y_val)
                    row = record.add_metrics(step, tr, va, cfg.lr * self.lr_factor(step))
                    bar.set_postfix(loss=f"{tr[0]:.3g}", acc=f"{tr[1]:.3f}", val_loss=f"{va[0]:.3g}",
                                    val_acc=f"{va[1]:.3f}", refresh=False)
                record.checkpoint(step, row,
                                  lambda: {n: self.model.get_parameter(n).detach().cpu().numpy() for n in self.saved},
                                  lambda schedule_state: self._state(step, rng, schedule_state))
                if record.finished(step):
                    break
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self._act("grad")
                factor = self.lr_factor(step)
                for group in self.optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
                self.optimizer.step()
                self._act("post")
                step += 1
                bar.update(1)
            finished = True
        finally:
            determinism.restore()
            stop.restore()
            bar.close()
            record.close(finished=finished)


class Deterministic:
    """Deterministic kernels while a run trains on the CPU: with several threads, the backward of an
    embedding lookup (``W_E[tokens]``) otherwise accumulates in a varying order, and two runs of one
    config (or a run and its resumed copy) drift apart. The caller's setting is restored after."""

    def __init__(self, device: str) -> None:
        import torch

        self.previous = torch.are_deterministic_algorithms_enabled()
        self.previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        self.active = device == "cpu" and not self.previous
        if self.active:
            torch.use_deterministic_algorithms(True, warn_only=True)

    def restore(self) -> None:
        import torch

        if self.active:
            torch.use_deterministic_algorithms(self.previous, warn_only=self.previous_warn)
            self.active = False


class DeferredInterrupt:
    """The first Ctrl-C stops training at the next step boundary (a KeyboardInterrupt raised inside
    a library call or a finaliser could be swallowed there); a second one interrupts at once."""

    def __init__(self) -> None:
        self.pending = False
        self.previous: Any = None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):  # leave custom or ignored as is
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.pending = True
        self.restore()

    def check(self) -> None:
        if self.pending:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


def train(cfg: TrainConfig, run_dir: str | Path, progress: bool = True, parent: ParentCheckpoint | None = None) -> Path:
    """Train a new run into ``run_dir`` (which must not already hold a run); with ``parent`` (see
    :func:`parent_checkpoint`), from another run's checkpoint instead of a fresh initialisation.

    Nothing is left behind when training cannot start: a directory this call created is removed
    again, and so are the files it wrote into one that existed (a config or starting-weights copy
    that was there before, as when ``resume`` starts a run killed before its run file, is kept). Once the run file exists, an error or interruption leaves a run that ``resume`` continues.
    """
    run_dir = Path(run_dir)
    path = run_file_path(run_dir)
    if path.exists():
        raise ProbeError(f"{run_dir} already holds a run; continue it with --resume or choose a new directory")
    created = make_run_dir(run_dir)
    kept = [name for name in (CONFIG_COPY, PARENT_COPY) if (run_dir / name).exists()]  # a resume's: never lost
    try:
        trainer = Trainer(cfg, run_dir, progress=progress)
        if parent is not None:
            trainer.start_from(parent)
            _write_parent_copy(run_dir, parent)
        write_config_copy(run_dir, cfg)
        writer = trainer.open_writer(path)
    except BaseException:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            for name in (CONFIG_COPY, PARENT_COPY):
                if name not in kept:
                    (run_dir / name).unlink(missing_ok=True)
        raise
    trainer.run(writer, start=0, schedule=make_schedule(cfg.checkpoint, cfg.steps), last_ckpt=-1)
    return path


def make_run_dir(run_dir: Path) -> bool:
    """Create ``run_dir`` (and parents); True if it did not exist before."""
    existed = run_dir.exists()
    if existed and not run_dir.is_dir():
        raise ProbeError(f"{run_dir} exists and is not a directory", param="out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe_file = run_dir / ".probe-write-test"
        probe_file.touch()
        probe_file.unlink()
    except OSError as exc:
        if not existed:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise ProbeError(f"cannot write to run directory {run_dir}: {exc.strerror or exc}", param="out") from None
    return not existed


def resume(run_dir: str | Path, steps: int | None = None, progress: bool = True) -> Path:
    """Continue an interrupted run from its last complete checkpoint (optionally to more ``steps``).

    Whatever instant training or an earlier resume was killed at, the run continues: the file at
    ``run.h5`` is always complete; a directory killed before its run file existed starts again from
    its config copy; a file with no usable resume slot is retrained from step 0 (on CPU this
    reproduces it bit for bit).
    """
    run_dir = Path(run_dir)
    path = run_file_path(run_dir)
    if not path.exists() and (run_dir / CONFIG_COPY).is_file() and path.parent == run_dir:
        from probe.train.config import load_config

        cfg = load_config(path=run_dir / CONFIG_COPY)
        if steps is not None:
            cfg = dataclasses.replace(cfg, steps=steps)
        return train(cfg, run_dir, progress=progress, parent=_read_parent_copy(run_dir))
    from probe.run import Run

    run = Run(path)  # the same validation every reader applies: a damaged file is refused unchanged
    rf = run.file
    try:
        if run.imported_from is not None:
            raise ProbeError(f"{run_dir} was imported ({run.imported_from.get('kind')}), not trained here: it has "
                             "no optimizer state or training history to resume; start a new run from one of its "
                             f"checkpoints with 'probe train --from {run_dir}:STEP --out NEW_DIR'")
        cfg, task = run.config, run.task
        if steps is not None:
            if steps < 1:
                raise ProbeError(f"must be >= 1, got {steps}", param="steps")
            last = int(rf.steps[-1]) if len(rf.steps) else 0
            if steps < last:
                raise ProbeError(f"{steps} is before the last checkpoint (step {last}); nothing to resume",
                                 param="steps")
            cfg = dataclasses.replace(cfg, steps=steps)
        state = rf.resume_state()
        if state is not None and rf.finished and (state.step >= cfg.steps or steps is None):
            raise ProbeError(f"{run_dir} already finished at step {state.step}; pass --steps N to train further")
        history = committed_history(rf, state.step if state is not None else None)
        trainer = Trainer(cfg, run_dir, progress=progress, task=task)
        if state is None:
            warnings.warn(f"{path} has no usable resume state; training again from step 0 (on CPU this "
                          "reproduces the committed checkpoints exactly)", stacklevel=2)
            if "parent" in rf.f.attrs:
                parent = _read_parent_copy(run_dir)
                if parent is None:
                    raise ProbeError(f"{run_dir} started from another run's checkpoint and has no resume point; "
                                     f"its starting weights ({PARENT_COPY}) are missing, so it cannot be trained again")
                trainer.start_from(parent)
            writer = trainer.open_writer(path)
            start, schedule, last_ckpt = 0, make_schedule(cfg.checkpoint, cfg.steps), -1
        else:
            trainer.load_state(state)
            writer = trainer.open_writer(path, copy_from=rf, resume=state)
            start, last_ckpt = state.step, state.step
            schedule = make_schedule(cfg.checkpoint, cfg.steps, state.schedule)
    finally:
        rf.close()
    write_config_copy(run_dir, cfg)
    trainer.run(writer, start=start, schedule=schedule, last_ckpt=last_ckpt,
                history=history if state is not None else None)
    return path


def _write_parent_copy(run_dir: Path, parent: ParentCheckpoint) -> None:
    """The weights (and optimizer state) a fine-tuned run starts from, kept beside its run file: a
    resume that must start again from step 0 starts from them, even if the parent run has gone."""
    arrays = {f"params/{k}": v for k, v in parent.params.items()}
    arrays.update({f"optim/{k}": v for k, v in (parent.optim or {}).items()})
    arrays["lineage"] = np.array(json.dumps(parent.lineage))
    tmp = run_dir / (PARENT_COPY + ".tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, run_dir / PARENT_COPY)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ProbeError(f"cannot write {run_dir / PARENT_COPY}: {exc.strerror or exc}") from None


def _read_parent_copy(run_dir: Path) -> ParentCheckpoint | None:
    """The starting weights kept beside a fine-tuned run (None when there are none). Every array's
    npy header is checked before its data are read, so a crafted file cannot make probe allocate
    more than it holds; shapes are checked against the model in :meth:`Trainer.start_from`."""
    path = run_dir / PARENT_COPY
    if not path.is_file():
        return None

    def damaged(what: str) -> ProbeError:
        return ProbeError(f"{path} (the weights this run started from) is damaged: {what}")

    try:
        arrays = _read_npz(path, damaged)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise damaged(str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__) from None
    if "lineage" not in arrays:
        raise damaged("it holds no lineage")
    lineage = ATTRS_BY_NAME["parent"].parse(str(arrays.pop("lineage")), damaged)
    params = {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}
    optim = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")} or None
    if len(params) + len(optim or {}) != len(arrays):
        raise damaged("it holds arrays other than params/*, optim/* and lineage")
    return ParentCheckpoint(params=params, optim=optim, lineage=lineage)


def _read_npz(path: Path, damaged: Any) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed ``.npz`` (as ``numpy.savez`` writes it). Each member's npy header
    is read first (``numpy.lib.format``): numbers or text only, and exactly as many bytes as the
    member stores, which is no more than the file holds."""
    from numpy.lib import format as npy

    size = path.stat().st_size
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else None
            if name is None or name in out:
                raise damaged(f"member {info.filename[:80]!r} is not an array")
            stored = info.compress_type == zipfile.ZIP_STORED and info.file_size == info.compress_size
            if not stored or info.file_size > size:
                raise damaged(f"member {info.filename[:80]!r} is compressed or larger than the file")
            with zf.open(info) as fh:
                version = npy.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = npy.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, fortran, dtype = npy.read_array_header_2_0(fh)
                else:
                    raise damaged(f"member {info.filename[:80]!r} has npy format version {version}")
                if dtype.hasobject or dtype.kind not in "biufU":
                    raise damaged(f"member {info.filename[:80]!r} holds {dtype}, not numbers")
                nbytes = math.prod(shape) * dtype.itemsize
                if nbytes != info.file_size - fh.tell():
                    raise damaged(f"member {info.filename[:80]!r} declares {tuple(shape)} {dtype} ({nbytes} bytes) "
                                  f"but stores {info.file_size - fh.tell()} bytes")
                data = fh.read(nbytes)
            if len(data) != nbytes:
                raise damaged(f"member {info.filename[:80]!r} is truncated")
            out[name] = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()
    return out


def _start_problem(parent: ParentCheckpoint, trainer: Trainer) -> str | None:
    """What keeps ``parent`` from being loaded into ``trainer``'s model and optimizer (None: nothing)."""
    shapes = {n: tuple(p.shape) for n, p in trainer.model.named_parameters()}
    bad = shape_problem({n: np.shape(a) for n, a in parent.params.items()}, shapes, "parameter")
    if bad is not None or parent.optim is None:
        return bad
    sizes = {f"{n}/{k}": (1 if k == "step" else math.prod(shape)) for n, shape in shapes.items()
             for k in optim_keys(trainer.cfg)}
    for key in sorted(set(sizes) | set(parent.optim)):
        if key not in parent.optim or key not in sizes or np.size(parent.optim[key]) != sizes[key]:
            return f"optimizer state {key!r} is missing, unexpected or of the wrong size"
    return None


def write_config_copy(run_dir: Path, cfg: TrainConfig) -> None:
    """A human-readable copy of the config (the run file's JSON attribute is authoritative),
    replaced atomically."""
    import yaml

    tmp = run_dir / (CONFIG_COPY + ".tmp")
    try:
        tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        os.replace(tmp, run_dir / CONFIG_COPY)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ProbeError(f"cannot write {run_dir / CONFIG_COPY}: {exc.strerror or exc}") from None
