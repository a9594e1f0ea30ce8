"""Registered PCA metrics (Liu et al. 2022 Sec. 4.2, App. K, Fig. 7, Fig. 22): explained variance,
effective dimension, PCA-projection accuracy and lottery-ticket axes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from probe.analyses.applies import table_task
from probe.analyses.families.fourier import REFERENCE
from probe.analyses import passes
from probe.analyses.passes import clean_pass
from probe.analyses.registry import Param, metric, positive_int
from probe.analyses.representations import centred, order_quality, principal_axes
from probe.errors import ProbeError

if TYPE_CHECKING:
    from probe.analyses.context import Context
    from probe.run import Checkpoint


COMPONENTS = Param("components", int, None, "number of principal components reported (default: 8, or as many as "
                   "the embeddings have)", check=positive_int)


@metric("pca_variance", "explained-variance ratios of the symbol embeddings' principal components",
        needs=("embeddings",), params=(COMPONENTS,), applies=table_task)
def pca_variance(ckpt: "Checkpoint", ctx: "Context", components: int | None) -> dict[str, float]:
    ratios, _ = principal_axes(ckpt.embeddings())
    if components is None:
        components = min(8, ratios.shape[0])
    elif components > ratios.shape[0]:
        raise ProbeError(f"--components {components} is larger than the {ratios.shape[0]} principal components "
                         f"the embeddings have")
    return {f"var_pc{i + 1}": float(r) for i, r in enumerate(ratios[:components])}


@metric("effective_dim", "effective dimension exp(-sum r_i log r_i) of the explained-variance ratios "
        "(Liu et al. Fig. 7 entropy)", needs=("embeddings",), direction="lower",
        applies=table_task)
def effective_dim(ckpt: "Checkpoint", ctx: "Context") -> dict[str, float]:
    ratios, _ = principal_axes(ckpt.embeddings())
    r = ratios[ratios > 0]
    entropy = float(-np.sum(r * np.log(r)))
    return {"effective_dim": float(np.exp(entropy)), "pca_entropy": entropy}


DEFAULT_COUNTS = "1,2,4,8,16,32,all"


def _counts(text: str | None, d: int) -> list[int]:
    if text is None:  # the default list, cut to the embedding dimension
        return sorted({min(int(n), d) for n in DEFAULT_COUNTS.split(",")[:-1]} | {d})
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if part == "all":
            out.append(d)
            continue
        try:
            n = int(part)
        except ValueError:
            raise ProbeError(f"--n-components: {part!r} is not a count (use e.g. 1,2,4,all)") from None
        if not 1 <= n <= d:
            raise ProbeError(f"--n-components: {n} is outside 1..{d} (the embedding dimension)")
        out.append(n)
    return sorted(set(out))


N_COMPONENTS = Param("n_components", str, None, f"numbers n of principal components to project onto (default: "
                     f"{DEFAULT_COUNTS}, those up to the embedding dimension)")


def _identity(tag: str, n: int, vt: np.ndarray, d: int) -> bool:
    """Whether the projection on the first ``n`` of the axes ``vt`` leaves the embeddings as they are:
    all ``d`` axes span the whole space, and all the current embeddings' own axes (``tag`` "cur", every
    row of the thin SVD) span their centred rows, so the projection is the identity on them."""
    return n >= vt.shape[0] and (vt.shape[0] == d or tag == "cur")


@metric("pca_projection_accuracy", "train/test accuracy with the embeddings replaced, through hook_embed, by "
        "their projection on the first n PCs of the current and of the final checkpoint (Liu et al. App. K, "
        "Fig. 22)", needs=("embeddings", "forward", "split"), direction="higher",
        params=(N_COMPONENTS, REFERENCE), applies=table_task)
def pca_projection_accuracy(ckpt: "Checkpoint", ctx: "Context", n_components: str | None,
                            reference: str) -> dict[str, float]:
    import torch

    emb = ckpt.embeddings()
    if emb.ndim != 2:
        raise ProbeError("projection accuracy needs vector embeddings")
    d = emb.shape[1]
    counts = _counts(n_components, d)
    counts = [min(n, d) for n in counts]
    y = torch.as_tensor(ctx.task.labels, device=ctx.device)
    n_sym = ctx.task.n_symbols
    train = torch.as_tensor(ctx.split.train, device=ctx.device)
    val = torch.as_tensor(ctx.split.val, device=ctx.device)
    mu = emb.mean(axis=0)
    bases = {"cur": principal_axes(emb)[1], "final": principal_axes(ctx.embeddings_at(reference))[1]}
    out: dict[str, float] = {}

    def record(tag: str, n: int, pred: "torch.Tensor") -> None:
        correct = (pred == y).double()
        out[f"train_acc_{tag}_{n}"] = float(correct[train].mean())
        out[f"test_acc_{tag}_{n}"] = float(correct[val].mean()) if len(val) else float("nan")

    if passes.batched(ctx):  # every projection in one embed pass (batched over the projections)
        assert ctx.config is not None and ctx.config.model.embed_param is not None
        w_e = passes.parameter(ckpt, ctx, ctx.config.model.embed_param, torch.float32)
        tables, which = [], []
        for tag, vt in bases.items():
            for n in counts:
                if _identity(tag, n, vt, d):  # the clean pass (below)
                    continue
                v = vt[:n]
                table = w_e.clone()
                table[:n_sym] = torch.as_tensor(mu + (emb - mu) @ v.T @ v, dtype=table.dtype, device=table.device)
                tables.append(table)
                which.append((tag, n))
        preds = passes.embed_predictions(ckpt, ctx, torch.stack(tables)) if tables else []
        done = dict(zip(which, preds))
        clean = None
        for tag, vt in bases.items():
            for n in counts:
                if (tag, n) in done:
                    record(tag, n, done[tag, n])
                    continue
                if clean is None:
                    clean = passes.predict(ctx, passes.answer_tensor(ckpt, ctx).to(torch.float32))
                record(tag, n, clean)
        return out

    model = ckpt.model()
    x = ctx.model_inputs(model)
    w_e = model.embed.W_E.detach()
    clean = None
    for tag, vt in bases.items():
        for n in counts:
            if _identity(tag, n, vt, d):  # the accuracy is the model's own (the shared clean pass)
                if clean is None:
                    logits = torch.as_tensor(clean_pass(ckpt, ctx)[2], device=ctx.device)
                    clean = model.predict(logits.to(torch.float32))
                record(tag, n, clean)
                continue
            v = vt[:n]  # [n, d]
            proj = mu + (emb - mu) @ v.T @ v
            table = w_e.clone()
            table[:n_sym] = torch.as_tensor(proj, dtype=table.dtype, device=table.device)

            def replace(act: torch.Tensor, hook: Any, table: torch.Tensor = table) -> torch.Tensor:
                return table[x]

            with torch.no_grad(), model.hooks(fwd_hooks=[("hook_embed", replace)]):
                pred = model.predict(model.answer(x))
            record(tag, n, pred)
    return out


@metric("lottery_ticket", "share of the embedding variance along the final top-k principal axes and how well "
        "symbols are ordered along them (best axis, or best plane of two axes for modular tasks, over all k), each "
        "next to a random-direction baseline (Liu et al. App. K)",
        needs=("embeddings",), direction="higher",
        params=(Param("k", int, None, "number of final principal axes (default: 2, or the embedding dimension if "
                      "smaller)", check=positive_int), REFERENCE,
                Param("baseline_draws", int, 32, "random k-frames in the baseline", check=positive_int)),
        applies=table_task)
def lottery_ticket(ckpt: "Checkpoint", ctx: "Context", k: int | None, reference: str,
                   baseline_draws: int) -> dict[str, float]:
    e = centred(ckpt.embeddings())
    d = e.shape[1]
    if k is None:
        k = min(2, d)
    elif k > d:
        raise ProbeError(f"{k} is larger than the embedding dimension {d}", param="k")
    axes = ctx.memo(("final_axes", reference), lambda: principal_axes(ctx.embeddings_at(reference))[1])[:k]
    if axes.shape[0] < k:
        raise ProbeError(f"the reference embeddings have only {axes.shape[0]} principal axes", param="k")
    total = float(np.sum(e * e))

    def frames() -> list[np.ndarray]:
        rng = np.random.default_rng(0)
        return [np.linalg.qr(rng.normal(size=(d, k)))[0].T for _ in range(baseline_draws)]

    rand = ctx.memo(("random_frames", k, baseline_draws, d), lambda: np.stack(frames()))  # [B, k, d]
    share = float(np.sum((e @ axes.T) ** 2) / total)
    proj = np.einsum("nd,bkd->bnk", e, rand)  # [B, n, k]
    rand_share = float(np.mean(np.sum(proj**2, axis=(1, 2)) / total))
    order = float(best_order(e @ axes.T, ctx.task))
    rand_order = float(np.mean(best_order(proj, ctx.task)))
    return {"lt_variance_share": share, "lt_random_share": rand_share, "lt_order": order, "lt_random_order": rand_order}


def best_order(coords: np.ndarray, task: Any) -> np.ndarray | float:
    """The best :func:`order_quality` over the ``k`` axes (linear order) or over the planes of two of
    them (circular order, modular tasks); ``coords [..., n, k]``."""
    k = coords.shape[-1]
    if task.modulus and k >= 2:
        views = [coords[..., [i, j]] for i in range(k) for j in range(i + 1, k)]
    else:
        views = [coords[..., [i]] for i in range(k)]
    return np.max(np.stack([np.asarray(order_quality(v, task)) for v in views]), axis=0)
