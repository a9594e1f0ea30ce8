"""What the trainer does to gradients and weights between the backward pass and the next step:
Grokfast gradient filters (Lee et al. 2024), Prieto et al.'s (2025) perpendicular gradient (⊥Grad)
and Omnigrok's constrained weight norm (Liu, Michaud and Tegmark 2023), and the protocol and
registry any further one follows (docs/design.md, Training dynamics and Registries).

An intervention is a class registered with :func:`intervention`, in the order it acts: its name, its
config section (a frozen dataclass, registered as a config section of the core), the stage it acts
at (``grad``: on the gradients after the backward pass, before the optimizer step; ``post``: on the
weights after the step), whether a config turns it on and its one-line description (a
:class:`probe.config.TrainingOption`, which ``probe info`` and the vectorised ensemble's refusal
read), and its resume state. The trainer builds the active ones on the weights a run starts from
(where one may act once: the norm constraint projects them at step 0) and calls them by stage.

Each intervention with state exposes it as named float arrays (``state_shapes`` / ``state`` /
``load``), which the trainer stores in the run's resume slots beside the optimizer state, so a
killed run resumes bit-identically with the filter's history intact.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, TypeVar

import numpy as np

from probe.config import (SECTIONS, TRAINING_OPTIONS, ConstraintConfig, GrokfastConfig, L1Config, TrainConfig,
                          register_section, training_option)
from probe.errors import ProbeError
from probe.registry import Registry

if TYPE_CHECKING:
    import torch

Named = list[tuple[str, "torch.Tensor"]]
Stage = Literal["grad", "post"]
STAGES: tuple[Stage, ...] = ("grad", "post")


class Intervention:
    """The protocol of an intervention (subclass it and register the subclass with
    :func:`intervention`; the decorator sets ``name``, ``stage`` and ``config``).

    ``active`` and ``describe`` are the intervention's :class:`probe.config.TrainingOption`: a class
    registering a new name defines both; one registered under the name of an option the core
    declares (``grokfast``, ``constraint``, ``orthogonal_grad``) inherits them from there.
    """

    name: ClassVar[str] = ""
    stage: ClassVar[Stage] = "grad"
    config: ClassVar[type | None] = None  # its config section's dataclass (the section is named after it)
    #: True: it also acts on a vectorised ensemble's stacked parameters (:meth:`apply_stacked`), so runs
    #: using it still train together; False: the ensemble refuses such runs
    vectorises: ClassVar[bool] = False

    def __init__(self, cfg: TrainConfig, named: Named, device: str) -> None:
        """Built by :meth:`build` for a run of ``cfg`` starting from the weights ``named``."""

    @classmethod
    def active(cls, cfg: TrainConfig) -> bool:
        """Whether ``cfg`` turns this intervention on."""
        return TRAINING_OPTIONS.get(cls.name).active(cfg)

    @classmethod
    def describe(cls, cfg: TrainConfig) -> str:
        """What it does under ``cfg``, in one line."""
        return TRAINING_OPTIONS.get(cls.name).describe(cfg)

    @classmethod
    def build(cls, cfg: TrainConfig, named: Named, device: str) -> "Intervention":
        """The intervention for a run starting from the weights ``named`` on ``device``; it may act
        on them once here. Called again when a run starts from another run's weights."""
        return cls(cfg, named, device)

    def apply(self, named: Named) -> None:
        """Act at the stage: on the ``.grad`` of ``named`` (``grad``) or on the weights (``post``)."""
        raise NotImplementedError

    def apply_stacked(self, named: Named) -> None:
        """Act at the stage on a vectorised ensemble's parameters, each stacked along a leading member
        axis (only where :attr:`vectorises`; built from one member's config and stacked weights)."""
        raise NotImplementedError

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Its resume state's arrays by name (keys are stored as paths: prefix them with the name)."""
        return {}

    def state(self) -> dict[str, np.ndarray]:
        """The resume state now (the shapes of :meth:`state_shapes`; stored as float32 or float64)."""
        return {}

    def load(self, state: dict[str, np.ndarray]) -> None:
        """Restore the resume state from the slot's arrays (``state`` holds every key of the slot)."""
        return None


INTERVENTIONS: Registry[type[Intervention]] = Registry("intervention")

InterventionT = TypeVar("InterventionT", bound=type[Intervention])


def intervention(name: str, stage: Stage, config: type | None = None) -> Callable[[InterventionT], InterventionT]:
    """Class decorator: register an :class:`Intervention` subclass as ``name``, acting at ``stage``
    after those registered before it. ``config``: its frozen config dataclass, registered as config
    section ``name`` (unless the core already has it, e.g. ``grokfast``). A name registered twice,
    or a new name without ``active`` and ``describe``, is a programming error (``ValueError``)."""

    def wrap(cls: InterventionT) -> InterventionT:
        if stage not in STAGES:
            raise ValueError(f"intervention {name!r}: stage {stage!r} is not one of {', '.join(STAGES)}")
        if name in INTERVENTIONS:
            raise ValueError(f"intervention {name!r} is registered twice")
        if not (isinstance(cls, type) and issubclass(cls, Intervention)):
            raise ValueError(f"intervention {name!r}: {cls!r} is not an Intervention subclass")
        own = [m for m in ("active", "describe") if m in vars(cls)]
        if name in TRAINING_OPTIONS and own:
            raise ValueError(f"intervention {name!r}: the core already describes it; do not define {', '.join(own)}")
        if name not in TRAINING_OPTIONS and len(own) < 2:
            raise ValueError(f"intervention {name!r} must define active() and describe()")
        if config is not None and name in SECTIONS and SECTIONS.get(name).config is not config:
            raise ValueError(f"intervention {name!r}: config section {name!r} is registered with another class")
        if config is not None and name not in SECTIONS:
            register_section(name, config)
        if name not in TRAINING_OPTIONS:
            training_option(name, cls.active, cls.describe)
        cls.name, cls.stage, cls.config = name, stage, config
        return INTERVENTIONS.add(name, cls)

    return wrap


def refused_by_ensembles(cfg: TrainConfig) -> list[str]:
    """The descriptions of the training options ``cfg`` turns on that a vectorised ensemble cannot
    apply: every active option but the interventions that vectorise and the options each member's own
    trainer applies (``per_member``: the ensemble sets up each member as a run and draws its batches)."""
    return [opt.describe(cfg) for name, opt in TRAINING_OPTIONS.items() if opt.active(cfg) and not opt.per_member
            and not (name in INTERVENTIONS and INTERVENTIONS.get(name).vectorises)]


def build_stacked(cfg: TrainConfig, named: Named, device: str) -> list[Intervention]:
    """The vectorising interventions ``cfg`` turns on, for an ensemble's stacked parameters ``named``
    (every member shares the config's intervention settings)."""
    return [cls(cfg, named, device) for _, cls in INTERVENTIONS.items() if cls.vectorises and cls.active(cfg)]


def build_interventions(cfg: TrainConfig, named: Named, device: str) -> list[Intervention]:
    """The interventions ``cfg`` turns on, built on the starting weights ``named``, in registration
    order (the order they act in within a stage)."""
    return [cls.build(cfg, named, device) for _, cls in INTERVENTIONS.items() if cls.active(cfg)]


def resume_shapes(parts: list[Intervention], taken: dict[str, tuple[int, ...]] | None = None
                  ) -> dict[str, tuple[int, ...]]:
    """The resume-state arrays of ``parts`` together; a name two of them (or ``taken``, the
    optimizer's) both use is a programming error."""
    out: dict[str, tuple[int, ...]] = {}
    for part in parts:
        for key, shape in part.state_shapes().items():
            if key in out or key in (taken or {}):
                raise ValueError(f"intervention {part.name!r}: resume state {key!r} is used twice")
            out[key] = tuple(shape)
    return out


def resume_state(parts: list[Intervention]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for part in parts:
        out.update(part.state())
    return out


def load_resume(parts: list[Intervention], state: dict[str, np.ndarray]) -> None:
    for part in parts:
        part.load(state)


@intervention("grokfast", stage="grad", config=GrokfastConfig)
class GradFilter(Intervention):
    """Grokfast's gradient filters over a fixed list of parameters (Lee et al. 2024).

    EMA (Algorithm 2): ``mu_t = alpha mu_{t-1} + (1 - alpha) g_t`` with ``mu_0 = g_0``, and the
    gradient becomes ``g_t + lamb mu_t``. MA (Algorithm 1): the mean of the last ``window`` gradients
    (``g_t`` included) times ``lamb`` is added, once the window is full when ``warmup`` is set.
    State: ``count`` (gradients seen), the EMA per parameter, or the MA ring buffer and its running
    sum per parameter (the sum is updated by the entering and leaving gradient and recomputed from the
    ring each time the ring wraps, so a step costs O(parameters), not O(window x parameters)).
    """

    def __init__(self, cfg: GrokfastConfig, shapes: dict[str, tuple[int, ...]]) -> None:
        import torch

        self.cfg = cfg
        self.lamb = cfg.amplification
        self.names = list(shapes)
        self.count = 0
        if cfg.filter == "ema":
            self.buf = {n: torch.zeros(s) for n, s in shapes.items()}
            self.sum: dict[str, Any] = {}
        else:
            self.buf = {n: torch.zeros((cfg.window, *s)) for n, s in shapes.items()}
            self.sum = {n: torch.zeros(s) for n, s in shapes.items()}

    @classmethod
    def build(cls, cfg: TrainConfig, named: Named, device: str) -> "GradFilter":
        return cls(cfg.grokfast, {n: tuple(p.shape) for n, p in named}).to(device)

    def _arrays(self) -> dict[str, Any]:
        out = {f"{n}/grokfast_{self.cfg.filter}": b for n, b in self.buf.items()}
        out.update({f"{n}/grokfast_ma_sum": b for n, b in self.sum.items()})
        return out

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        out: dict[str, tuple[int, ...]] = {"grokfast/count": ()}
        out.update({k: tuple(b.shape) for k, b in self._arrays().items()})
        return out

    def state(self) -> dict[str, np.ndarray]:
        out = {"grokfast/count": np.array(float(self.count))}
        out.update({k: b.detach().cpu().numpy().copy() for k, b in self._arrays().items()})
        return out

    def load(self, state: dict[str, np.ndarray]) -> None:
        import torch

        self.count = int(np.asarray(state["grokfast/count"]).reshape(-1)[0])
        for k, b in self._arrays().items():
            b.copy_(torch.from_numpy(np.asarray(state[k])).to(b.dtype))

    def to(self, device: str) -> "GradFilter":
        self.buf = {n: b.to(device) for n, b in self.buf.items()}
        self.sum = {n: b.to(device) for n, b in self.sum.items()}
        return self

    def apply(self, params: Named) -> None:
        """Filter the ``.grad`` of ``params`` in place (parameters without a gradient are skipped)."""
        import torch

        with torch.no_grad():
            if self.cfg.filter == "ema":
                a = self.cfg.alpha
                for name, p in params:
                    if p.grad is None:
                        continue
                    mu = self.buf[name]
                    if self.count == 0:
                        mu.copy_(p.grad)
                    else:
                        mu.mul_(a).add_(p.grad, alpha=1 - a)
                    p.grad.add_(mu, alpha=self.lamb)
            else:
                w = self.cfg.window
                slot = self.count % w
                seen = min(self.count + 1, w)
                for name, p in params:
                    if p.grad is None:
                        continue
                    ring, total = self.buf[name], self.sum[name]
                    if self.count < w:
                        total.add_(p.grad)
                        ring[slot].copy_(p.grad)
                    elif slot == 0:  # the ring wraps: recompute the sum exactly (bounded drift)
                        ring[slot].copy_(p.grad)
                        torch.sum(ring, dim=0, out=total)
                    else:
                        total.sub_(ring[slot]).add_(p.grad)
                        ring[slot].copy_(p.grad)
                    if seen == w or not self.cfg.warmup:
                        p.grad.add_(total, alpha=self.lamb / seen)
        self.count += 1


def orthogonalise(params: Named, rescale: bool = False) -> None:
    """⊥Grad (Prieto et al. 2025, Sec. 5): remove from each tensor's gradient its component along the
    tensor itself, ``g <- g - (<w, g> / <w, w>) w``; the naive-loss-minimisation direction (scaling
    the weights up) then no longer moves them. ``rescale``: then multiply the result by
    ``|g| / |g_perp|``, restoring the gradient's norm (the authors' ``orthograd.py``)."""
    import torch

    with torch.no_grad():
        for _, p in params:
            if p.grad is None:
                continue
            ww = float((p * p).sum())
            if ww > 0:
                norm = float(p.grad.norm()) if rescale else 0.0
                p.grad.sub_(p, alpha=float((p * p.grad).sum()) / ww)
                if rescale:
                    perp = float(p.grad.norm())
                    if perp > 0:
                        p.grad.mul_(norm / perp)


@intervention("orthogonal_grad", stage="grad")
class OrthogonalGradient(Intervention):
    """⊥Grad on every parameter (the flat keys ``orthogonal_grad`` and ``orthogonal_grad_rescale``); no
    state."""

    def __init__(self, cfg: TrainConfig, named: Named, device: str) -> None:
        self.rescale = cfg.orthogonal_grad_rescale

    def apply(self, named: Named) -> None:
        orthogonalise(named, self.rescale)


@intervention("constraint", stage="post", config=ConstraintConfig)
class NormConstraint(Intervention):
    """Omnigrok's constraint: after each step the chosen tensors are rescaled together to total L2
    norm ``target`` (``cfg.norm``, or ``cfg.relative`` times their norm at initialisation). State:
    the target, kept so a resumed run uses the norm its initialisation had."""

    def __init__(self, cfg: ConstraintConfig, params: Named) -> None:
        self.cfg = cfg
        self.names = [n for n, _ in params if any(fnmatch.fnmatchcase(n, pat) for pat in cfg.tensors)]
        if not self.names:
            raise ProbeError(f"constraint.tensors={list(cfg.tensors)} matches no parameter "
                             f"(parameters: {', '.join(n for n, _ in params)})")
        chosen = dict(params)
        initial = total_norm([chosen[n] for n in self.names])
        if initial == 0 and cfg.relative is not None:
            raise ProbeError("constraint.relative: the constrained tensors have norm 0 at initialisation")
        target = cfg.norm if cfg.norm is not None else float(cfg.relative) * initial
        self.target = float(np.float32(target))  # what the resume slot stores (float32): exact after resume

    @classmethod
    def build(cls, cfg: TrainConfig, named: Named, device: str) -> "NormConstraint":
        constraint = cls(cfg.constraint, named)
        constraint.apply(named)  # the constraint holds from the starting weights on
        return constraint

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"constraint/target": ()}

    def state(self) -> dict[str, np.ndarray]:
        return {"constraint/target": np.array(self.target)}

    def load(self, state: dict[str, np.ndarray]) -> None:
        self.target = float(np.asarray(state["constraint/target"]).reshape(-1)[0])

    def apply(self, params: Named) -> None:
        import torch

        chosen = dict(params)
        tensors = [chosen[n] for n in self.names]
        norm = total_norm(tensors)
        if norm > 0:
            with torch.no_grad():
                for t in tensors:
                    t.mul_(self.target / norm)


@intervention("l1", stage="grad", config=L1Config)
class L1Penalty(Intervention):
    """The gradient of ``coef * mean(|W|)`` over the chosen tensors' entries, ``coef * sign(W) / n``,
    added to their gradients before the optimizer step: the same update as the penalty in the loss
    (the gradient of a sum is the sum of the gradients; sign(0) = 0 as torch's abs). No state; it
    vectorises (each member's own mean)."""

    vectorises = True

    def __init__(self, cfg: TrainConfig, named: Named, device: str) -> None:
        patterns = cfg.l1.tensors or ((cfg.model.embed_param,) if cfg.model.embed_param else ())
        self.names = [n for n, _ in named if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]
        if not self.names:
            raise ProbeError(f"l1.tensors={list(patterns)} matches no parameter "
                             f"(parameters: {', '.join(n for n, _ in named)})")
        self.coef = float(cfg.l1.coef)

    def _add(self, named: Named, members: int) -> None:
        import torch

        chosen = dict(named)
        tensors = [chosen[n] for n in self.names]
        scale = self.coef * members / sum(int(t.numel()) for t in tensors)  # coef / (entries per member)
        with torch.no_grad():
            for t in tensors:
                if t.grad is not None:
                    t.grad.add_(torch.sign(t), alpha=scale)

    def apply(self, named: Named) -> None:
        self._add(named, 1)

    def apply_stacked(self, named: Named) -> None:
        self._add(named, int(named[0][1].shape[0]))


def total_norm(tensors: list[Any]) -> float:
    """The L2 norm of several tensors taken together (accumulated in float64)."""
    import torch

    with torch.no_grad():
        return float(torch.sqrt(sum((t.detach().double() ** 2).sum() for t in tensors)))
