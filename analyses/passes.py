"""Shared forward passes: one pass per checkpoint, memoised in the context, reused by every metric.

Where a model keeps its neurons and tokens comes from its config's declaration
(:class:`probe.config.ModelConfig`), never from inspecting the module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from probe.errors import ProbeError, valid

if TYPE_CHECKING:
    from probe.analyses.context import Context
    from probe.run import Checkpoint


def check_position(ctx: "Context", position: int) -> None:
    """``position`` must index the model's token positions (``-n_ctx..n_ctx-1``)."""
    n_ctx = ctx.config.model.n_ctx if ctx.config is not None else None
    if n_ctx is not None and not -n_ctx <= position < n_ctx:
        raise ProbeError(f"{position} is outside the model's {n_ctx} token positions "
                         f"({-n_ctx}..{n_ctx - 1})", param="position")


LOGITS = "logits"  # the readout through the unembedding, offered as a hook name


def hook_activations(ckpt: "Checkpoint", ctx: "Context", hook: str, position: int) -> np.ndarray:
    """Activations at ``hook`` for every sample of the task, ``[N, D]`` (at token ``position`` for
    models with positions; the last by default). ``hook="logits"`` is the model's readout through
    the unembedding at the answer position (its outputs)."""
    import torch

    if hook == LOGITS:
        return answers(ckpt, ctx)
    model = ckpt.model()
    if hook not in model.hook_dict:
        raise ProbeError(f"unknown hook {hook!r}{valid([LOGITS, *model.hook_dict])}", param="hook")
    check_position(ctx, position)

    def run() -> np.ndarray:
        x = ctx.model_inputs(model)
        with torch.no_grad():
            _, cache = model.run_with_cache(x, names_filter=[hook])
        act = cache[hook].double().cpu().numpy()
        if ctx.config is not None and ctx.config.model.n_ctx is not None and act.ndim >= 3:
            axis = 2 if hook.endswith(("hook_pattern", "hook_attn_scores")) else 1
            act = np.take(act, position, axis=axis)
        out = act.reshape(act.shape[0], -1)
        if out.shape[0] < 2:
            raise ProbeError(f"activations at {hook} have {out.shape[0]} sample(s); at least two are needed",
                             param="hook")
        return out

    # one forward pass per checkpoint, shared by rqi, rqi_curve and acc_hat at the same hook
    return ctx.memo_step(("hook", hook, position), ckpt.index, run)


def neuron_hook(ctx: "Context") -> str:
    hook = ctx.config.model.neuron_hook if ctx.config is not None else None
    if hook is None:
        raise ProbeError("this model declares no MLP neurons")
    return hook


def clean_pass(ckpt: "Checkpoint", ctx: "Context") -> tuple[str, np.ndarray, np.ndarray]:
    """One forward pass per checkpoint over every sample (the model's fast answer path), shared by
    every metric that needs it: the neuron hook name, the neuron activations at the answer position
    ``[N, n_neurons]`` and the outputs ``[N, n_out]``."""
    import torch

    hook = neuron_hook(ctx)

    def run() -> tuple[str, np.ndarray, np.ndarray]:
        model = ckpt.model()
        seen: dict[str, torch.Tensor] = {}

        def record(act: torch.Tensor, hook: Any) -> torch.Tensor:
            seen["act"] = act
            return act

        with torch.no_grad(), model.hooks(fwd_hooks=[(hook, record)]):
            out = model.answer(ctx.model_inputs(model))
        act = seen["act"]
        if act.ndim == 3:
            act = act[:, -1]
        return hook, act.double().cpu().numpy(), out.double().cpu().numpy()

    return ctx.memo_step("clean", ckpt.index, run)


def answers(ckpt: "Checkpoint", ctx: "Context") -> np.ndarray:
    """The model's outputs for every sample ``[N, n_out]`` (float64 copies of the float32 outputs), from
    the one forward pass per checkpoint that every metric shares: :func:`clean_pass` where the model
    declares neurons, else a plain pass."""
    import torch

    if ctx.config is not None and ctx.config.model.neuron_hook is not None:
        return clean_pass(ckpt, ctx)[2]

    def run() -> np.ndarray:
        model = ckpt.model()
        with torch.no_grad():
            return model.answer(ctx.model_inputs(model)).double().cpu().numpy()

    return ctx.memo_step(("hook", LOGITS), ckpt.index, run)


def neuron_activations(ckpt: "Checkpoint", ctx: "Context") -> tuple[str, np.ndarray]:
    """Neuron activations for every sample ``[N, n_neurons]`` (from :func:`clean_pass`)."""
    hook, act, _ = clean_pass(ckpt, ctx)
    return hook, act


def patched_answers(ckpt: "Checkpoint", ctx: "Context", hook: str, values: dict[str, np.ndarray]) -> dict[str, Any]:
    """Model outputs (float64 tensors) with the activations at ``hook`` (answer position) replaced by
    each of ``values`` in turn: ``{name: [N, n_out]}``."""
    import torch

    model = ckpt.model()
    x = ctx.model_inputs(model)
    out = {}
    for name, arr in values.items():
        new = torch.as_tensor(arr, dtype=torch.float32, device=ctx.device)

        def patch(a: torch.Tensor, hook: Any, new: torch.Tensor = new) -> torch.Tensor:
            if a.ndim == 3:
                a = a.clone()
                a[:, -1] = new  # the answer path computes the last MLP at the last position only
                return a
            return new

        with torch.no_grad(), model.hooks(fwd_hooks=[(hook, patch)]):
            out[name] = model.answer(x).double()
    return out
