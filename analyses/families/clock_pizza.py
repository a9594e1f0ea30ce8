"""Registered clock-vs-pizza metrics (Zhong et al. 2023): circularity of the top principal components,
distance irrelevance and gradient symmetricity."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from probe.analyses.applies import modular, modular_add_grid
from probe.analyses.passes import clean_pass
from probe.analyses.registry import Param, metric, positive_int
from probe.errors import ProbeError
from probe.analyses.representations import CIRCULARITY_METHODS, circularity_of, distance_irrelevance_of, gradient_symmetricity_of, grid

if TYPE_CHECKING:
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


@metric("distance_irrelevance", "Zhong et al.'s distance irrelevance of the correct-label logits (1: clock-like, "
        "small: pizza-like)", needs=("forward",), applies=modular_add_grid)
def distance_irrelevance(ckpt: "Checkpoint", ctx: "Context") -> dict[str, float]:
    out = clean_pass(ckpt, ctx)[2]
    correct = out[np.arange(out.shape[0]), ctx.task.labels]
    return {"distance_irrelevance": distance_irrelevance_of(grid(correct, ctx.task))}


@metric("gradient_symmetricity", "Zhong et al.'s gradient symmetricity: cosine similarity of d logit_c / d E_a "
        "and d logit_c / d E_b over sampled (a, b, c)", needs=("forward",),
        params=(Param("samples", int, 256, "number of sampled (a, b, c) triples", check=positive_int),),
        applies=modular_add_grid)
def gradient_symmetricity(ckpt: "Checkpoint", ctx: "Context", samples: int) -> dict[str, float]:
    import torch

    model = ckpt.model()
    rng = np.random.default_rng(0)
    idx = rng.choice(ctx.task.n_samples, size=min(samples, ctx.task.n_samples), replace=False)
    c = torch.as_tensor(rng.integers(0, ctx.task.n_classes, size=idx.shape[0]), device=ctx.device)
    x = ctx.model_inputs(model)[torch.as_tensor(idx, device=ctx.device)]
    grads: dict[str, torch.Tensor] = {}

    def keep(act: torch.Tensor, hook: Any) -> torch.Tensor:
        act.retain_grad()
        grads["embed"] = act
        return act

    with model.hooks(fwd_hooks=[("hook_embed", keep)]):
        out = model.answer(x)
        out[torch.arange(out.shape[0]), c].sum().backward()
    g = grads["embed"].grad.double().cpu().numpy()  # [S, pos, d]
    model.zero_grad(set_to_none=True)
    pos_b = 2 if getattr(model, "op_token", None) is not None else 1  # tokens [a, (op,) b, =]
    return {"gradient_symmetricity": gradient_symmetricity_of(g[:, 0].reshape(len(idx), -1),
                                                              g[:, pos_b].reshape(len(idx), -1))}
