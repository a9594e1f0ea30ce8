"""What the trainer does to gradients and weights between the backward pass and the next step:
Grokfast gradient filters (Lee et al. 2024), Prieto et al.'s (2025) perpendicular gradient (⊥Grad)
and Omnigrok's constrained weight norm (Liu, Michaud and Tegmark 2023).

Each intervention with state exposes it as named float arrays (``state_shapes`` / ``state`` /
``load``), which the trainer stores in the run's resume slots beside the optimizer state, so a
killed run resumes bit-identically with the filter's history intact.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any

import numpy as np

from probe.errors import ProbeError

if TYPE_CHECKING:
    import torch

    from probe.config import ConstraintConfig, GrokfastConfig

Named = list[tuple[str, "torch.Tensor"]]


class GradFilter:
    """Grokfast's gradient filters over a fixed list of parameters (Lee et al. 2024).

    EMA (Algorithm 2): ``mu_t = alpha mu_{t-1} + (1 - alpha) g_t`` with ``mu_0 = g_0``, and the
    gradient becomes ``g_t + lamb mu_t``. MA (Algorithm 1): the mean of the last ``window`` gradients
    (``g_t`` included) times ``lamb`` is added, once the window is full when ``warmup`` is set.
    State: ``count`` (gradients seen), the EMA per parameter, or the MA ring buffer and its running
    sum per parameter (the sum is updated by the entering and leaving gradient and recomputed from the
    ring each time the ring wraps, so a step costs O(parameters), not O(window x parameters)).
    """

    def __init__(self, cfg: "GrokfastConfig", shapes: dict[str, tuple[int, ...]]) -> None:
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


def orthogonalise(params: Named) -> None:
    """⊥Grad (Prieto et al. 2025, Sec. 5): remove from each tensor's gradient its component along the
    tensor itself, ``g <- g - (<w, g> / <w, w>) w``; the naive-loss-minimisation direction (scaling
    the weights up) then no longer moves them."""
    import torch

    with torch.no_grad():
        for _, p in params:
            if p.grad is None:
                continue
            ww = float((p * p).sum())
            if ww > 0:
                p.grad.sub_(p, alpha=float((p * p.grad).sum()) / ww)


class NormConstraint:
    """Omnigrok's constraint: after each step the chosen tensors are rescaled together to total L2
    norm ``target`` (``cfg.norm``, or ``cfg.relative`` times their norm at initialisation). State:
    the target, kept so a resumed run uses the norm its initialisation had."""

    def __init__(self, cfg: "ConstraintConfig", params: Named) -> None:
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


def total_norm(tensors: list[Any]) -> float:
    """The L2 norm of several tensors taken together (accumulated in float64)."""
    import torch

    with torch.no_grad():
        return float(torch.sqrt(sum((t.detach().double() ** 2).sum() for t in tensors)))
