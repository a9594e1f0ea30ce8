"""Shared forward passes: computed once, memoised in the context, reused by every metric.

Every metric that needs the model goes through this module, so a new metric gets the passes (and
their batched form) for free. Two forms compute the same quantities (docs/design.md, "Batched
passes"):

* **batched** (the default): the runner hands the context a chunk of checkpoints; a pass reads the
  chunk's parameters once, stacked along a leading axis, and applies the model to a window of them
  in one call (:meth:`probe.models.base.ProbeModel.stacked`: batched matrix products for the model
  kinds probe owns, ``torch.func.functional_call`` under ``vmap`` for any other). Windows are sized
  so that the pass's activations stay within :data:`WINDOW_BYTES` (memory is flat in the length of
  the series and of the chunk); the products of one window are kept, then dropped.
* **per checkpoint** (``PROBE_PASSES=checkpoint``): the checkpoint's weights loaded into the model
  and TransformerLens hooks, one checkpoint at a time; the reference the batched form is tested
  against (``tests/analyses/test_batched_passes.py``) and timed beside (``benchmarks/representations.py``).

The precision of each pass is declared in :data:`PASSES`. Where a model keeps its neurons and tokens
comes from its config's declaration (:class:`probe.config.ModelConfig`), never from inspecting the module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from probe.errors import ProbeError, valid

if TYPE_CHECKING:
    import torch

    from probe.analyses.context import Context
    from probe.models.base import ProbeModel
    from probe.run import Checkpoint


def check_position(ctx: "Context", position: int) -> None:
    """``position`` must index the model's token positions (``-n_ctx..n_ctx-1``)."""
    n_ctx = ctx.config.model.n_ctx if ctx.config is not None else None
    if n_ctx is not None and not -n_ctx <= position < n_ctx:
        raise ProbeError(f"{position} is outside the model's {n_ctx} token positions "
                         f"({-n_ctx}..{n_ctx - 1})", param="position")


LOGITS = "logits"  # the readout through the unembedding, offered as a hook name

# --------------------------------------------------------------------------------------------------
# modes and precision
# --------------------------------------------------------------------------------------------------
#: environment variable choosing the form of the passes: ``batched`` (default) or ``checkpoint``
MODE_ENV = "PROBE_PASSES"
MODES: tuple[str, ...] = ("batched", "checkpoint")


def mode_from_env() -> str:
    value = os.environ.get(MODE_ENV, "batched").strip() or "batched"
    if value not in MODES:
        raise ProbeError(f"{MODE_ENV}={value!r}{valid(MODES)}")
    return value


@dataclass(frozen=True)
class Pass:
    """A shared pass: its name, the dtype it runs in, what it computes and who reads it."""

    name: str
    dtype: str
    computes: str
    read_by: str


#: the declared precision of every pass. float32 passes are those whose metrics
#: ``tests/analyses/test_batched_passes.py`` shows unchanged within their stated tolerance when the
#: pass runs in float64; the readouts of the restricted and excluded losses and every cross-entropy
#: run in float64 (their losses reach 1e-8, where float32 cross-entropy rounds to zero).
PASSES: dict[str, Pass] = {p.name: p for p in (
    Pass("clean", "float32", "neuron activations and outputs for every sample on the answer path",
         "fourier_norms, key_freqs (neurons rule), restricted_loss, excluded_loss, "
         "distance_irrelevance (--logit top_incorrect), "
         "pca_projection_accuracy (all components), efficiency, softmax_collapse, irrep_logit_share, "
         "key_irreps (logit rule), rqi --hook logits"),
    Pass("entries", "float32", "one output per sample (its entry at a given class) without the full outputs",
         "distance_irrelevance (the correct class's logit)"),
    Pass("patched", "float32", "outputs with the neurons replaced (the rest of the network)",
         "restricted_loss --convention grid; excluded_loss where the outputs are not affine in the neurons"),
    Pass("embed", "float32", "outputs with the symbol embeddings replaced", "pca_projection_accuracy"),
    Pass("hook", "float32", "activations at any hook over every position (the full forward)", "rqi --hook"),
    Pass("embed_grad", "float32", "gradients of the class-c outputs with respect to the token embeddings",
         "gradient_symmetricity"),
    Pass("readout", "float64", "neurons read out through the affine rest of the network or W_out W_U "
         "(restricted and excluded logits), and the cross-entropy", "restricted_loss, excluded_loss"),
)}

#: the activations one batched window may hold (bytes); windows are at least one checkpoint. On the
#: CPU a window fits the allocator's reuse threshold (larger ones are slower, not faster); on a GPU
#: more checkpoints share one call.
WINDOW_BYTES = {"cpu": 32 << 20, "cuda": 1 << 30}


def _dtype(name: str) -> "torch.dtype":
    import torch

    return getattr(torch, PASSES[name].dtype)


def batched(ctx: "Context") -> bool:
    return ctx.passes == "batched"


# --------------------------------------------------------------------------------------------------
# the batched form: the chunk's parameters, stacked, and windows of it
# --------------------------------------------------------------------------------------------------
def _model(ctx: "Context") -> "ProbeModel":
    """The model the passes apply (its structure and fixed buffers; the weights are supplied)."""
    return ctx.memo("pass_model", lambda: ctx.source.load_model(int(ctx.chunk[0]) if ctx.chunk else 0, ctx.device))


def _inputs(ctx: "Context") -> "torch.Tensor":
    return ctx.model_inputs(_model(ctx))


def _names(ctx: "Context") -> list[str]:
    return [n for n, _ in _model(ctx).named_parameters()]


def _read(ctx: "Context", indices: tuple[int, ...], dtype: "torch.dtype") -> dict[str, "torch.Tensor"]:
    """Every parameter at ``indices``, stacked ``[k, *shape]``, in ``dtype`` on the context's device:
    one read per tensor and one transfer per chunk (pinned memory and a non-blocking copy on a GPU)."""
    import torch

    idx = np.asarray(indices, dtype=np.int64)
    cuda = str(ctx.device).startswith("cuda")
    names = _names(ctx)
    stack = getattr(ctx.source, "read_stack", None)  # a run reads a chunk's rows in one go
    arrays = stack(idx, names) if stack is not None else {n: ctx.source.read_series(idx, n) for n in names}
    out = {}
    for name in names:
        host = torch.from_numpy(np.ascontiguousarray(arrays[name])).to(dtype)
        out[name] = host.pin_memory().to(ctx.device, non_blocking=True) if cuda else host
    return out


def _chunk_params(ctx: "Context", dtype: "torch.dtype") -> dict[str, "torch.Tensor"]:
    key = ("pass_params", str(dtype))
    held = ctx.cache.get(key)
    if held is None or held[0] != ctx.chunk:
        ctx.cache[key] = held = (ctx.chunk, _read(ctx, ctx.chunk, dtype))
    return held[1]


def params_of(ckpt: "Checkpoint", ctx: "Context", dtype: "torch.dtype") -> dict[str, "torch.Tensor"]:
    """Every parameter at ``ckpt`` stacked with a leading axis of one (views into the chunk's stacks)."""
    if ckpt.index in ctx.chunk:
        j = ctx.chunk.index(ckpt.index)
        return {n: v[j: j + 1] for n, v in _chunk_params(ctx, dtype).items()}
    return ctx.memo_step(("pass_params_outside", str(dtype)), ckpt.index, lambda: _read(ctx, (ckpt.index,), dtype))


def _window_size(ctx: "Context", per_checkpoint: int) -> int:
    device = "cuda" if str(ctx.device).startswith("cuda") else "cpu"
    return max(1, WINDOW_BYTES[device] // max(1, per_checkpoint))


def _window(ctx: "Context", ckpt: "Checkpoint", dtype: "torch.dtype", per_sample: int,
            samples: int | None = None) -> tuple[tuple[int, ...], int, dict[str, "torch.Tensor"]]:
    """The window of the chunk holding ``ckpt`` (aligned, so every request of one checkpoint gets one
    window), its position in it and the window's parameters; the pass holds about ``per_sample``
    numbers for each of ``samples`` samples (default: every sample of the task) per checkpoint."""
    import torch

    itemsize = torch.empty((), dtype=dtype).element_size()
    count = ctx.task.n_samples if samples is None else samples
    w = _window_size(ctx, per_sample * count * itemsize)
    if ckpt.index not in ctx.chunk:
        return (ckpt.index,), 0, params_of(ckpt, ctx, dtype)
    pos = ctx.chunk.index(ckpt.index)
    lo = pos // w * w
    indices = ctx.chunk[lo: lo + w]
    stacks = _chunk_params(ctx, dtype)
    return indices, pos - lo, {n: v[lo: lo + len(indices)] for n, v in stacks.items()}


def _width(ctx: "Context") -> int:
    """About how many numbers per sample a pass holds at once: two of the model's widest layer per
    token position."""
    def measure() -> int:
        model = _model(ctx)
        widest = max((int(p.shape[-1]) for p in model.parameters() if p.ndim >= 2), default=1)
        n_ctx = (ctx.config.model.n_ctx if ctx.config is not None else None) or 1
        return 2 * widest * n_ctx

    return ctx.memo("pass_width", measure)


def _window_product(ctx: "Context", key: tuple[Any, ...], indices: tuple[int, ...], make: Any) -> Any:
    """What ``make()`` computes for the window ``indices``, kept under ``key`` while requests stay in that
    window; a new window drops the previous one's product first (its memory is reused)."""
    held = ctx.cache.get(key)
    if held is None or held[0] != indices:
        ctx.cache.pop(key, None)
        held = (indices, make())
        ctx.cache[key] = held
    return held[1]


def _clean_window(ctx: "Context", ckpt: "Checkpoint", outputs: bool) -> tuple[dict[str, "torch.Tensor"], int]:
    """The clean pass over the window holding ``ckpt``: ``{"neurons": [w, N, n], "answer": [w, N, n_out]}``
    (neurons only where the model declares them; outputs once asked for), and ``ckpt``'s position."""
    import torch

    from probe.models.base import ANSWER

    dtype = _dtype("clean")
    indices, j, params = _window(ctx, ckpt, dtype, _width(ctx))
    products = _window_product(ctx, ("pass_window", "clean"), indices, dict)
    hook = ctx.config.model.neuron_hook if ctx.config is not None else None
    model = _model(ctx)
    x = _inputs(ctx)
    with torch.no_grad():
        if hook is not None and "neurons" not in products:
            got = model.stacked(params, x, (ANSWER, hook) if outputs else (hook,))
            products["neurons"] = _answer_position(got[hook])
            if outputs:
                products["answer"] = got[ANSWER]
        if outputs and "answer" not in products:
            swap = {hook: products["neurons"]} if hook is not None else None
            products["answer"] = model.stacked(params, x, (ANSWER,), swap)[ANSWER]
    return products, j


def _answer_position(act: "torch.Tensor") -> "torch.Tensor":
    """Activations on the answer path ``[k, N, ...]`` at the answer position (the last, for models
    with positions): ``[k, N, n]``."""
    return act[:, :, -1] if act.ndim == 4 else act


def neuron_tensor(ckpt: "Checkpoint", ctx: "Context") -> "torch.Tensor":
    """Batched form: the neuron activations ``[N, n_neurons]`` as the clean pass computed them (its
    dtype, on the context's device)."""
    neuron_hook(ctx)
    products, j = _clean_window(ctx, ckpt, outputs=False)
    return products["neurons"][j]


def answer_tensor(ckpt: "Checkpoint", ctx: "Context") -> "torch.Tensor":
    """Batched form: the outputs ``[N, n_out]`` of the clean pass (its dtype, on the context's device)."""
    products, j = _clean_window(ctx, ckpt, outputs=True)
    return products["answer"][j]


def answer_entries(ckpt: "Checkpoint", ctx: "Context", classes: np.ndarray) -> "torch.Tensor":
    """Batched form: each sample's output at its entry of ``classes`` (``[N]``, e.g. the correct
    class's logit), from the clean pass where a metric already asked for its outputs in this window,
    otherwise from the ``entries`` pass (the model computes the entries without the full outputs:
    :meth:`probe.models.base.ProbeModel.stacked_entries`)."""
    import torch

    c = torch.as_tensor(classes, dtype=torch.int64, device=ctx.device)
    held = ctx.cache.get(("pass_window", "clean"))
    if held is not None and ckpt.index in held[0] and "answer" in held[1]:
        return held[1]["answer"][held[0].index(ckpt.index)].gather(1, c[:, None])[:, 0]
    indices, j, params = _window(ctx, ckpt, _dtype("entries"), _width(ctx))

    def make() -> "torch.Tensor":
        with torch.no_grad():
            return _model(ctx).stacked_entries(params, _inputs(ctx), c)

    return _window_product(ctx, ("pass_window", "entries", classes.tobytes()), indices, make)[j]


def answer_map(ckpt: "Checkpoint", ctx: "Context") -> "torch.Tensor | None":
    """``J [n_neurons, n_out]`` (float64) with outputs ``= neurons @ J + c`` where the rest of the network
    after the neurons is affine (:meth:`probe.models.base.ProbeModel.answer_map`); None where it is not."""
    import torch

    def make() -> "torch.Tensor | None":
        j = _model(ctx).answer_map(params_of(ckpt, ctx, torch.float64))
        return None if j is None else j[0]

    return ctx.memo_step("pass_answer_map", ckpt.index, make)


def parameter(ckpt: "Checkpoint", ctx: "Context", name: str, dtype: "torch.dtype") -> "torch.Tensor":
    """One parameter at ``ckpt`` from the chunk's stacks (float32 storage, so float64 is exact)."""
    import torch

    stacks = params_of(ckpt, ctx, torch.float32)
    if name not in stacks:
        raise ProbeError(f"the model has no parameter {name}")
    return stacks[name][0].to(dtype)


def embed_predictions(ckpt: "Checkpoint", ctx: "Context", tables: "torch.Tensor") -> "torch.Tensor":
    """Predicted classes ``[V, N]`` with the symbol embeddings replaced by each of ``tables [V, *W_E.shape]``
    (the ``embed`` pass; at the answer path's input, as replacing ``hook_embed`` by ``table[x]``). Each
    window of tables is predicted as it is computed, so only the predictions are kept."""
    import torch

    from probe.models.base import ANSWER

    assert ctx.config is not None and ctx.config.model.embed_param is not None
    dtype = _dtype("embed")
    one = params_of(ckpt, ctx, dtype)
    model = _model(ctx)
    x = _inputs(ctx)
    w = _window_size(ctx, _width(ctx) * ctx.task.n_samples * torch.empty((), dtype=dtype).element_size())
    preds = []
    with torch.no_grad():
        for lo in range(0, tables.shape[0], w):
            part = tables[lo: lo + w].to(dtype=dtype, device=ctx.device)
            params = {n: v.expand(part.shape[0], *v.shape[1:]) for n, v in one.items()}
            params[ctx.config.model.embed_param] = part
            preds.append(predict(ctx, model.stacked(params, x, (ANSWER,))[ANSWER]))
    return torch.cat(preds)


def embedding_gradients(ckpt: "Checkpoint", ctx: "Context", samples: np.ndarray,
                        classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d logit_c / d (token embedding of a) and of b for ``samples`` and their ``classes`` (``[S, d]`` each,
    float64 copies): the gradient of the class-c output at the answer with respect to what
    ``hook_embed`` sees (the token embeddings before any position embedding), at the operands'
    positions. Batched form: the model's gradients for the whole window
    (:meth:`probe.models.base.ProbeModel.stacked_embed_gradients`: in closed form for the one-block
    transformers without LayerNorm, else one backward pass through the stacked forward)."""
    import torch

    positions = ctx.config.model.operand_positions if ctx.config is not None else None
    if positions is None:
        raise ProbeError("this model has no operand embeddings (hook_embed)")
    dtype = _dtype("embed_grad")
    indices, j, params = _window(ctx, ckpt, dtype, 4 * _width(ctx), len(samples))

    def make() -> "torch.Tensor":
        x = _inputs(ctx)[torch.as_tensor(samples, device=ctx.device)]
        return _model(ctx).stacked_embed_gradients(params, x, torch.as_tensor(classes, device=ctx.device))

    key = ("pass_window", "embed_grad", samples.tobytes(), classes.tobytes())
    g = _window_product(ctx, key, indices, make)[j].double().cpu().numpy()  # [S, positions, ...]
    n = g.shape[0]
    return g[:, positions[0]].reshape(n, -1), g[:, positions[1]].reshape(n, -1)


def predict(ctx: "Context", out: "torch.Tensor") -> "torch.Tensor":
    """Predicted classes of outputs ``[..., N, n_out]`` (the model's rule: argmax, or the nearest target)."""
    import torch

    model = _model(ctx)
    return model.predict(out) if out.ndim == 2 else torch.stack([model.predict(o) for o in out])


# --------------------------------------------------------------------------------------------------
# the passes metrics read (either form)
# --------------------------------------------------------------------------------------------------
def hook_activations(ckpt: "Checkpoint", ctx: "Context", hook: str, position: int) -> np.ndarray:
    """Activations at ``hook`` for every sample of the task, ``[N, D]`` (at token ``position`` for
    models with positions; the last by default). ``hook="logits"`` is the model's readout through
    the unembedding at the answer position (its outputs)."""
    import torch

    if hook == LOGITS:
        return answers(ckpt, ctx)
    model = _model(ctx) if batched(ctx) else ckpt.model()
    if hook not in model.hook_dict:
        raise ProbeError(f"unknown hook {hook!r}{valid([LOGITS, *model.hook_dict])}", param="hook")
    check_position(ctx, position)

    def select(act: np.ndarray) -> np.ndarray:
        if ctx.config is not None and ctx.config.model.n_ctx is not None and act.ndim >= 3:
            axis = 2 if hook.endswith(("hook_pattern", "hook_attn_scores")) else 1
            act = np.take(act, position, axis=axis)
        out = act.reshape(act.shape[0], -1)
        if out.shape[0] < 2:
            raise ProbeError(f"activations at {hook} have {out.shape[0]} sample(s); at least two are needed",
                             param="hook")
        return out

    def run() -> np.ndarray:
        x = ctx.model_inputs(model)
        with torch.no_grad():
            _, cache = model.run_with_cache(x, names_filter=[hook])
        return select(cache[hook].double().cpu().numpy())

    def run_batched() -> np.ndarray:
        dtype = _dtype("hook")
        indices, j, params = _window(ctx, ckpt, dtype, _width(ctx))

        def make() -> "torch.Tensor":
            with torch.no_grad():
                return model.stacked(params, _inputs(ctx), (hook,), path="forward")[hook]

        return select(_window_product(ctx, ("pass_window", "hook", hook), indices, make)[j].double().cpu().numpy())

    # one forward pass per checkpoint, shared by rqi, rqi_curve and acc_hat at the same hook
    return ctx.memo_step(("hook", hook, position), ckpt.index, run_batched if batched(ctx) else run)


def neuron_hook(ctx: "Context") -> str:
    hook = ctx.config.model.neuron_hook if ctx.config is not None else None
    if hook is None:
        raise ProbeError("this model declares no MLP neurons")
    return hook


def clean_pass(ckpt: "Checkpoint", ctx: "Context") -> tuple[str, np.ndarray, np.ndarray]:
    """One forward pass over every sample (the model's fast answer path), shared by every metric that
    needs it: the neuron hook name, the neuron activations at the answer position ``[N, n_neurons]``
    and the outputs ``[N, n_out]`` (float64 copies of the float32 pass)."""
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

    def run_batched() -> tuple[str, np.ndarray, np.ndarray]:
        out = answer_tensor(ckpt, ctx)
        act = neuron_tensor(ckpt, ctx)
        return hook, act.double().cpu().numpy(), out.double().cpu().numpy()

    return ctx.memo_step("clean", ckpt.index, run_batched if batched(ctx) else run)


def answers(ckpt: "Checkpoint", ctx: "Context") -> np.ndarray:
    """The model's outputs for every sample ``[N, n_out]`` (float64 copies of the float32 outputs), from
    the one forward pass per checkpoint that every metric shares: :func:`clean_pass` where the model
    declares neurons, else a plain pass."""
    import torch

    if batched(ctx):
        return ctx.memo_step(("hook", LOGITS), ckpt.index, lambda: answer_tensor(ckpt, ctx).double().cpu().numpy())
    if ctx.config is not None and ctx.config.model.neuron_hook is not None:
        return clean_pass(ckpt, ctx)[2]

    def run() -> np.ndarray:
        model = ckpt.model()
        with torch.no_grad():
            return model.answer(ctx.model_inputs(model)).double().cpu().numpy()

    return ctx.memo_step(("hook", LOGITS), ckpt.index, run)


def neuron_activations(ckpt: "Checkpoint", ctx: "Context") -> tuple[str, np.ndarray]:
    """Neuron activations for every sample ``[N, n_neurons]`` (from :func:`clean_pass`)."""
    if batched(ctx):
        hook = neuron_hook(ctx)
        return hook, ctx.memo_step("neurons", ckpt.index, lambda: neuron_tensor(ckpt, ctx).double().cpu().numpy())
    hook, act, _ = clean_pass(ckpt, ctx)
    return hook, act


def patched_answers(ckpt: "Checkpoint", ctx: "Context", hook: str, values: dict[str, np.ndarray]) -> dict[str, Any]:
    """Model outputs (float64 tensors) with the activations at ``hook`` (answer position) replaced by
    each of ``values`` in turn: ``{name: [N, n_out]}``."""
    import torch

    if batched(ctx):
        from probe.models.base import ANSWER

        dtype = _dtype("patched")
        params = params_of(ckpt, ctx, dtype)
        model = _model(ctx)
        with torch.no_grad():
            return {name: model.stacked(params, _inputs(ctx), (ANSWER,),
                                        {hook: torch.as_tensor(arr, dtype=dtype, device=ctx.device)[None]})[ANSWER][0]
                    .double() for name, arr in values.items()}
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
