"""Shared base of probe's models: a TransformerLens ``HookedRootModule`` plus the training objective.

Every model maps a task's inputs to an *answer* (logits over classes, or a regression vector) and
knows its objective, so the trainer and the analyses compute loss and accuracy the same way.
Cross-entropy is computed in float64 (Nanda et al. 2023 note float32 log-softmax rounding at tiny
losses).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens import HookedRootModule

if TYPE_CHECKING:
    from probe.config import ModelConfig
    from probe.tasks import Task


#: the name :meth:`ProbeModel.stacked` gives the outputs, and the answer path
ANSWER = "answer"


def each(fn: Any, *xs: torch.Tensor) -> torch.Tensor:
    """``fn`` over tensors stacked along a leading checkpoint axis: one call on an accelerator; on the
    CPU one call per checkpoint, so that a checkpoint's numbers never depend on how many are stacked
    with it (the CPU's batched matrix kernels round differently with the size of the batch)."""
    if xs[0].device.type != "cpu" or xs[0].shape[0] == 1:
        return fn(*xs)
    return torch.cat([fn(*(x[i: i + 1] for x in xs)) for i in range(xs[0].shape[0])])


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for stacked ``a [k, ..., m, n]`` and ``b [k, ..., n, p]`` (see :func:`each`)."""
    return each(torch.matmul, a, b)


class ProbeModel(HookedRootModule):
    """Base class: subclasses define ``for_task``, ``forward`` (full hooked pass) and ``answer``.

    What analyses may rely on (where the symbol embeddings, the neurons and the tokens are) is
    declared by the model's config (:class:`probe.config.ModelConfig`) and exposed here as ``cfg``.
    """

    objective: str = "cross_entropy"
    softmax: str = "softmax"
    softmax_dtype: torch.dtype = torch.float64
    cfg: "ModelConfig"

    @classmethod
    def for_task(cls, cfg: "ModelConfig", task: "Task") -> "ProbeModel":
        """The model of config ``cfg`` sized for ``task`` (symbols, classes, features)."""
        return cls(cfg, task.n_symbols, task.n_classes)  # type: ignore[call-arg]

    @property
    def embed_param(self) -> str | None:
        """Name of the input-embedding parameter (None where the model has none)."""
        return self.cfg.embed_param

    def model_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """Convert task inputs (``[N, 2]`` symbol pairs or features) to what ``forward`` takes."""
        return inputs

    def answer(self, x: torch.Tensor, last_only: bool = True) -> torch.Tensor:
        """Output used for loss and prediction: ``[N, n_classes]`` logits or ``[N, d_out]``."""
        raise NotImplementedError

    def loss(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training loss of ``answer`` outputs against integer labels (cross-entropy in
        ``softmax_dtype``, float64 unless the run sets it, through ``softmax``: softmax or StableMax)."""
        return self.sample_losses(out, labels, reduction="mean")

    def sample_losses(self, out: torch.Tensor, labels: torch.Tensor, reduction: str = "none") -> torch.Tensor:
        """Per-sample training losses ``[N]`` whose mean is :meth:`loss` (for batched ensembles)."""
        if self.objective == "cross_entropy":
            return cross_entropy(out, labels, self.softmax, self.softmax_dtype, reduction)
        target = (self.targets[labels] if self.objective == "mse_targets"
                  else F.one_hot(labels, out.shape[-1]).to(out.dtype))
        sq = (out - target) ** 2
        return sq.mean() if reduction == "mean" else sq.mean(dim=-1)

    def set_loss(self, softmax: str, dtype: str) -> "ProbeModel":
        """Use the run's normaliser (``softmax`` or ``stablemax``) and precision for :meth:`loss`."""
        self.softmax = softmax
        self.softmax_dtype = getattr(torch, dtype)
        return self

    def set_knob(self, name: str, value: "float | torch.Tensor") -> None:
        """Set the model config value ``name`` (one of its config's ``knobs``) for the next forward pass: a float
        (the config's own) or a 0-d float64 tensor (inside a vectorised ensemble, one per member)."""
        raise KeyError(name)

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        """Predicted class per sample (nearest target for regression, Liu et al. Sec. 2)."""
        if self.objective == "mse_targets":
            return torch.cdist(out.to(self.targets.dtype), self.targets).argmin(dim=-1)
        return out.argmax(dim=-1)

    # batched passes over stacked checkpoints ------------------------------------------------------
    def stacked(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, collect: Sequence[str] = (ANSWER,),
                replace: Mapping[str, torch.Tensor] | None = None, path: str = ANSWER) -> dict[str, torch.Tensor]:
        """The model applied to ``k`` checkpoints at once.

        ``params``: every parameter, stacked along a leading axis ``[k, *shape]`` (one dtype and device);
        ``x``: the inputs (shared by the ``k`` checkpoints). ``path``: ``"answer"`` (:meth:`answer`, what
        the loss reads) or ``"forward"`` (every position). Returns, for each name in ``collect``, what
        that hook sees on the path with a leading checkpoint axis ``[k, N, ...]``, and under ``"answer"``
        the outputs ``[k, N, n_out]``. ``replace``: ``{hook: [k, N, ...]}`` activations put in place of
        what the hook sees at the answer position (the last one, for models with positions).

        This generic form is ``torch.func.functional_call`` under ``vmap`` with the hooks inside; the
        model kinds probe owns override it with batched matrix products (the same maths, summed in
        other orders; docs/design.md, "Batched passes"). The model's own weights are never touched."""
        from torch.func import functional_call, vmap

        names = [n for n in collect if n != ANSWER]
        swaps = dict(replace or {})
        wrapper = _Path(self, path)

        def one(p: dict[str, torch.Tensor], r: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
            seen: dict[str, torch.Tensor] = {}

            def keep(act: torch.Tensor, hook: Any) -> torch.Tensor:
                seen[hook.name] = act
                return act

            def swap(act: torch.Tensor, hook: Any) -> torch.Tensor:
                new = r[hook.name].to(act.dtype)
                if act.ndim == new.ndim + 1:  # positions: the answer position only
                    return torch.cat([act[:, :-1], new[:, None]], dim=1)
                return new

            fwd = [(n, swap) for n in swaps] + [(n, keep) for n in names]
            with self.hooks(fwd_hooks=fwd):
                out = functional_call(wrapper, {f"model.{n}": v for n, v in p.items()}, (x,), strict=False)
            return (out, *(seen[n] for n in names))

        k = next(iter(params.values())).shape[0]
        if x.device.type == "cpu" and k > 1:  # one checkpoint at a time on the CPU (see :func:`each`)
            parts = [vmap(one)({n: v[i: i + 1] for n, v in params.items()}, {n: v[i: i + 1] for n, v in swaps.items()})
                     for i in range(k)]
            got = tuple(torch.cat([part[t] for part in parts]) for t in range(len(parts[0])))
        else:
            got = vmap(one)(dict(params), swaps)
        result = dict(zip(names, got[1:]))
        if ANSWER in collect:
            result[ANSWER] = got[0]
        return result

    def stacked_entries(self, params: Mapping[str, torch.Tensor], x: torch.Tensor,
                        classes: torch.Tensor) -> torch.Tensor:
        """One output per sample, ``[k, N]``: entry ``classes[i]`` of sample ``i``'s outputs on the
        answer path (a metric that reads one logit per sample, such as the correct class's). This
        generic form gathers from :meth:`stacked`'s outputs; a model kind may compute the entries
        without the full ``[k, N, n_out]`` outputs."""
        out = self.stacked(params, x, (ANSWER,))[ANSWER]
        return out.gather(2, classes.to(out.device).expand(out.shape[0], -1)[..., None])[..., 0]

    def stacked_embed_gradients(self, params: Mapping[str, torch.Tensor], x: torch.Tensor,
                                classes: torch.Tensor) -> torch.Tensor:
        """d (output ``classes[i]`` of sample ``i``) / d (what ``hook_embed`` sees), ``[k, N, *embed]``:
        the gradient of each sample's chosen output on the answer path with respect to its token
        embeddings (before any position embedding). This generic form is one backward pass through
        :meth:`stacked` with ``hook_embed`` replaced by its own values (each checkpoint's outputs
        depend on its own only); a model kind may give the gradients in closed form."""
        with torch.enable_grad():
            e = self.stacked(params, x, ("hook_embed",))["hook_embed"].detach().requires_grad_(True)
            out = self.stacked(params, x, (ANSWER,), {"hook_embed": e})[ANSWER]
            rows = torch.arange(x.shape[0], device=out.device)
            (g,) = torch.autograd.grad(out[:, rows, classes.to(out.device)].sum(), e)
        return g.detach()

    def answer_map(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """``J [k, n_neurons, n_out]`` with outputs ``= neurons @ J + c`` on the answer path, where the
        outputs are affine in the neurons (``cfg.neuron_hook`` at the answer position) at every
        checkpoint of ``params``; None where they are not (or the model declares no neurons)."""
        return None


class _Path(nn.Module):
    """A model seen through one of its paths (``answer`` or ``forward``) as a plain module, so that
    ``functional_call`` can call it with substituted parameters."""

    def __init__(self, model: ProbeModel, path: str) -> None:
        super().__init__()
        self.model = model
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.answer(x) if self.path == ANSWER else self.model(x)


def stablemax_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """``log StableMax(x)`` over the last axis (Prieto et al. 2025, Eq. 7-8): ``s(x) = x + 1`` for
    ``x >= 0`` and ``1 / (1 - x)`` below, normalised to sum to one. Both branches are evaluated on
    clamped inputs, so neither produces an infinite gradient where it is not used.

    Computed as ``log(s / sum s)``, the form of the authors' ``log_stablemax`` (their ``utils.py``):
    near a probability of 1 the ratio keeps a loss as small as ``1 - s / sum s`` (down to 1.1e-16 in
    float64), where ``log s - log sum s`` cancels to exactly 0 whenever the loss is below about half a
    unit in the last place of ``log s`` (3.6e-15 at logits of 1e15)."""
    pos = logits.clamp(min=0) + 1
    neg = 1 / (1 - logits.clamp(max=0))
    s = torch.where(logits >= 0, pos, neg)
    return torch.log(s / s.sum(dim=-1, keepdim=True))


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, softmax: str = "softmax",
                  dtype: torch.dtype = torch.float64, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``logits`` ``[N, C]`` computed in ``dtype`` through softmax or StableMax."""
    x = logits.to(dtype)
    if softmax == "softmax":
        return F.cross_entropy(x, labels, reduction=reduction)
    nll = -stablemax_log_probs(x).gather(-1, labels[:, None])[:, 0]
    return nll.mean() if reduction == "mean" else nll


def uniform_(t: torch.Tensor, fan_in: int) -> torch.Tensor:
    """PyTorch's default Linear initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        return t.uniform_(-bound, bound)


ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "gelu": F.gelu}


class Linear(nn.Module):
    """Affine layer with TransformerLens orientation (``x @ W + b``, W is [d_in, d_out])."""

    def __init__(self, d_in: int, d_out: int, w_name: str = "W", b_name: str = "b", bias: bool = True) -> None:
        super().__init__()
        self.w_name, self.b_name = w_name, b_name
        self.register_parameter(w_name, nn.Parameter(uniform_(torch.empty(d_in, d_out), d_in)))
        self.register_parameter(b_name, nn.Parameter(uniform_(torch.empty(d_out), d_in)) if bias else None)

    def add_bias(self, x: torch.Tensor) -> torch.Tensor:
        b = getattr(self, self.b_name)
        return x if b is None else x + b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add_bias(x @ getattr(self, self.w_name))
