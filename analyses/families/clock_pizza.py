"""Registered clock-vs-pizza metrics (Zhong et al. 2023): circularity of the top principal components,
distance irrelevance and gradient symmetricity."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from probe.analyses.applies import modular, modular_add_grid
from probe.analyses import passes
from probe.analyses.passes import answers
from probe.analyses.registry import Param, metric, positive_int
from probe.errors import ProbeError
from probe.analyses.representations import (CIRCULARITY_METHODS, SYMMETRICITY_SAMPLING, circularity_of,
                                            distance_irrelevance_of, gradient_symmetricity_of, grid,
                                            symmetricity_triples, top_incorrect_logits)

if TYPE_CHECKING:
    import torch

    from probe.analyses.context import Context
    from probe.run import Checkpoint


@metric("circularity", "how circular the leading principal components of the embeddings are (Zhong et al.: each "
        "of the first 4 PCs scored on its own, then averaged); 1 for a perfect clock", needs=("embeddings",),
        direction="higher",
        params=(Param("pcs", int, 4, "number of leading principal components", check=positive_int),
                Param("method", str, "zhong", "'zhong' (each PC on its own, Zhong et al.) or 'planes' (probe's "
                      "variant: PCs paired into planes (1,2), (3,4), ...)", choices=CIRCULARITY_METHODS)),
        applies=modular)
def circularity(ckpt: "Checkpoint", ctx: "Context", pcs: int, method: str) -> dict[str, float]:
    emb = ckpt.embeddings()
    available = min(emb.shape[0] - 1, int(np.prod(emb.shape[1:])))
    if pcs > available:
        raise ProbeError(f"{pcs} is more than the {available} principal components the embeddings have "
                         f"({emb.shape[0]} symbols, dimension {int(np.prod(emb.shape[1:]))})", param="pcs")
    if method == "planes" and pcs % 2:
        raise ProbeError(f"the planes method pairs components: give an even number, got {pcs}", param="pcs")
    ctx.note(f"circularity: {method} method over the first {pcs} principal components")
    return {"circularity": circularity_of(emb, int(ctx.task.modulus or 0), pcs, method)}


DI_LOGITS: tuple[str, ...] = ("correct", "top_incorrect")


@metric("distance_irrelevance", "Zhong et al.'s distance irrelevance of the correct-label logits (1: clock-like, "
        "small: pizza-like; --logit top_incorrect: of the largest other logit, as their released tables)",
        needs=("forward",),
        params=(Param("logit", str, "correct", "the logit table: 'correct' (the correct label's, their notebook "
                      "eval-main.ipynb) or 'top_incorrect' (the largest other one, their train-main.py and the "
                      "released result/*.csv)", choices=DI_LOGITS),),
        applies=modular_add_grid)
def distance_irrelevance(ckpt: "Checkpoint", ctx: "Context", logit: str) -> dict[str, float]:
    labels = ctx.task.labels
    if logit == "correct" and passes.batched(ctx):
        values = passes.answer_entries(ckpt, ctx, labels).double().cpu().numpy()
    else:
        out = answers(ckpt, ctx)
        values = out[np.arange(out.shape[0]), labels] if logit == "correct" else top_incorrect_logits(out, labels)
    return {"distance_irrelevance": distance_irrelevance_of(grid(values, ctx.task))}


def embedding_gradients(model: Any, tokens: "torch.Tensor", classes: "torch.Tensor") -> tuple[np.ndarray, np.ndarray]:
    """d logit_c / d (token embedding of a) and of b, per sample (``[S, d]`` each): the gradient of the
    class-c logit at the answer with respect to ``hook_embed`` (the token embeddings before any position
    embedding), read at the operands' positions ``[a, (op,) b, ...]``."""
    import torch

    grads: dict[str, torch.Tensor] = {}

    def keep(act: torch.Tensor, hook: Any) -> torch.Tensor:
        act.retain_grad()
        grads["embed"] = act
        return act

    with model.hooks(fwd_hooks=[("hook_embed", keep)]):
        out = model.answer(tokens)
        out[torch.arange(out.shape[0]), classes].sum().backward()
    g = grads["embed"].grad.double().cpu().numpy()  # [S, pos, d]
    model.zero_grad(set_to_none=True)
    pos_b = 2 if getattr(model, "op_token", None) is not None else 1  # tokens [a, (op,) b, =]
    n = g.shape[0]
    return g[:, 0].reshape(n, -1), g[:, pos_b].reshape(n, -1)


@metric("gradient_symmetricity", "Zhong et al.'s gradient symmetricity: cosine similarity of d logit_c / d E_a "
        "and d logit_c / d E_b over sampled (a, b, c)", needs=("forward",),
        params=(Param("samples", int, 256, "number of sampled (a, b, c) triples", check=positive_int),
                Param("sampling", str, "probe", "'probe' (distinct pairs, numpy seed 0) or 'zhong' (their "
                      "notebook's: all (a, b, c) shuffled by Python's random.Random(42); they keep 100)",
                      choices=SYMMETRICITY_SAMPLING)),
        applies=modular_add_grid)
def gradient_symmetricity(ckpt: "Checkpoint", ctx: "Context", samples: int, sampling: str) -> dict[str, float]:
    import torch

    idx, c = symmetricity_triples(ctx.task.inputs, int(ctx.task.modulus or 0), ctx.task.n_classes, samples, sampling)
    if passes.batched(ctx):
        g_a, g_b = passes.embedding_gradients(ckpt, ctx, idx, c)
        return {"gradient_symmetricity": gradient_symmetricity_of(g_a, g_b)}
    model = ckpt.model()
    x = ctx.model_inputs(model)[torch.as_tensor(idx, device=ctx.device)]
    g_a, g_b = embedding_gradients(model, x, torch.as_tensor(c, device=ctx.device))
    return {"gradient_symmetricity": gradient_symmetricity_of(g_a, g_b)}
