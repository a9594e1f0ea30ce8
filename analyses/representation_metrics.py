"""Registered representation metrics: Fourier structure (Nanda et al. 2023), PCA, projection
accuracy and lottery-ticket axes (Liu et al. 2022 Sec. 4.2, App. K, Fig. 7, Fig. 22), clock vs pizza
(Zhong et al. 2023), and 2-D coordinates of the embeddings for figures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from analyses import fourier as fr
from analyses.registry import Param, metric
from probe.errors import ProbeError
from probe.tasks import Task

if TYPE_CHECKING:
    from analyses.runner import CheckpointData, Context


# --------------------------------------------------------------------------------------------------
# applicability and shared pieces
# --------------------------------------------------------------------------------------------------
def _modular(task: Task) -> str | None:
    if not task.modulus:
        return "Fourier analysis needs a modular task (symbols are Z_p)"
    return None


def _modular_add_grid(task: Task) -> str | None:
    if task.name != "add" or not task.modulus:
        return "it is defined for modular addition"
    if task.n_samples != task.modulus**2:
        return "it needs the full ordered p x p table (train with ordered=true)"
    return None


def _table(task: Task) -> str | None:
    return None if task.is_table else "it needs symbol embeddings (an operation table)"


def _fraction(x: float) -> str | None:
    return None if 0 < x < 1 else "must be in (0, 1)"


def _positive_int(x: int) -> str | None:
    return None if x >= 1 else "must be >= 1"


def centred(emb: np.ndarray) -> np.ndarray:
    e = np.asarray(emb, dtype=np.float64).reshape(emb.shape[0], -1)
    return e - e.mean(axis=0)


def principal_axes(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Explained-variance ratios and principal axes (rows) of the symbol embeddings."""
    e = centred(emb)
    _, s, vt = np.linalg.svd(e, full_matrices=False)
    var = s * s
    total = var.sum()
    if total <= 0:
        raise ProbeError("embeddings are all equal; PCA is undefined")
    return var / total, vt


def neuron_hook(model: Any) -> str:
    """The hook whose activations are 'the neurons': the last MLP's ``hook_post``."""
    if hasattr(model, "blocks"):
        return f"blocks.{len(model.blocks) - 1}.mlp.hook_post"
    if hasattr(model, "decoder") and len(model.decoder):
        return f"decoder.{len(model.decoder) - 1}.hook_post"
    raise ProbeError("this model has no MLP neurons")


def clean_pass(data: "CheckpointData", ctx: "Context") -> tuple[str, np.ndarray, np.ndarray]:
    """One forward pass per checkpoint over every sample (the model's fast answer path), shared by
    every metric that needs it: the neuron hook name, the neuron activations at the last position
    ``[N, n_neurons]`` and the output logits ``[N, n_classes]``."""
    import torch

    def run() -> tuple[str, np.ndarray, np.ndarray]:
        model = data.model()
        hook = neuron_hook(model)
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

    return ctx.memo_step("clean", data.index, run)


def neuron_activations(data: "CheckpointData", ctx: "Context") -> tuple[str, np.ndarray]:
    """Neuron activations for every sample at the last position ``[N, n_neurons]`` (from
    :func:`clean_pass`)."""
    hook, act, _ = clean_pass(data, ctx)
    return hook, act


def grid(values: np.ndarray, task: Task) -> np.ndarray:
    """Rows indexed by sample -> ``[p, p, ...]`` indexed by (a, b)."""
    p = int(task.modulus or 0)
    out = np.zeros((p, p) + values.shape[1:], dtype=values.dtype)
    out[task.inputs[:, 0], task.inputs[:, 1]] = values
    return out


def _unembed_rows(data: "CheckpointData", ctx: "Context") -> np.ndarray:
    w_u = data.tensor("unembed.W_U")  # [d, n_classes]
    return w_u.T[: int(ctx.task.modulus or 0)]


# --------------------------------------------------------------------------------------------------
# Fourier
# --------------------------------------------------------------------------------------------------
@metric("fourier_norms", "norm per frequency k of W_E, W_U and of the neuron activations (Nanda et al. "
        "Sec. 4): columns we_k, wu_k, neuron_k", needs=("embeddings", "forward"), tasks="modular tasks",
        params=(Param("parts", str, "we,wu,neuron", "which of we, wu, neuron to report (comma list)"),),
        applies=_modular)
def fourier_norms(data: "CheckpointData", ctx: "Context", parts: str) -> dict[str, float]:
    p = int(ctx.task.modulus or 0)
    wanted = [x.strip() for x in parts.split(",") if x.strip()]
    bad = [x for x in wanted if x not in ("we", "wu", "neuron")]
    if bad or not wanted:
        raise ProbeError(f"--parts: {parts!r}; valid parts: we, wu, neuron")
    out: dict[str, float] = {}
    if "we" in wanted:
        out.update({f"we_{k + 1}": v for k, v in enumerate(fr.frequency_norms(centred(data.require_embeddings()), p))})
    if "wu" in wanted:
        out.update({f"wu_{k + 1}": v for k, v in enumerate(fr.frequency_norms(_unembed_rows(data, ctx), p))})
    if "neuron" in wanted:
        reason = _modular_add_grid(ctx.task)
        if reason:
            raise ProbeError(f"neuron Fourier norms: {reason}")
        _, act = neuron_activations(data, ctx)
        out.update({f"neuron_{k + 1}": v for k, v in enumerate(fr.frequency_norms_2d(grid(act, ctx.task), p))})
    return out


KEY_THRESHOLD = Param("key_threshold", float, 0.05, "key-frequency rule: share of the embedding's squared "
                      "Fourier norm (constant excluded) at least this", check=_fraction)
REFERENCE = Param("reference", str, "last", "checkpoint the key frequencies / final axes come from "
                  "(first, last or a step)")


def key_freqs_of(ctx: "Context", threshold: float, reference: str) -> list[int]:
    def choose() -> list[int]:
        p = int(ctx.task.modulus or 0)
        return fr.key_frequencies(fr.frequency_norms(centred(ctx.embeddings_at(reference)), p), threshold)

    keys = ctx.memo(("key_freqs", threshold, reference), choose)
    ctx.note(f"key frequencies {keys}: share of the squared W_E Fourier norm >= {threshold} at checkpoint "
             f"{reference}")
    return keys


@metric("key_freqs", "key frequencies by a declared rule (share of W_E's Fourier energy >= threshold), chosen "
        "at a reference checkpoint (default: the final one) and stored with the result",
        needs=("embeddings",), tasks="modular tasks", params=(KEY_THRESHOLD, REFERENCE), applies=_modular)
def key_freqs(data: "CheckpointData", ctx: "Context", key_threshold: float, reference: str) -> dict[str, Any]:
    keys = key_freqs_of(ctx, key_threshold, reference)
    return {"key_freqs": ",".join(map(str, keys)), "n_key_freqs": float(len(keys))}


@metric("fourier_gini", "Gini coefficient of W_E's frequency norms (0 = spread evenly, (n-1)/n = one "
        "frequency)", needs=("embeddings",), tasks="modular tasks", direction="higher", applies=_modular)
def fourier_gini(data: "CheckpointData", ctx: "Context") -> dict[str, float]:
    p = int(ctx.task.modulus or 0)
    return {"fourier_gini": fr.gini(fr.frequency_norms(centred(data.require_embeddings()), p))}


@metric("key_freq_energy", "share of W_E's Fourier energy (constant excluded) in the key frequencies",
        needs=("embeddings",), tasks="modular tasks", direction="higher", params=(KEY_THRESHOLD, REFERENCE),
        applies=_modular)
def key_freq_energy(data: "CheckpointData", ctx: "Context", key_threshold: float, reference: str) -> dict[str, float]:
    p = int(ctx.task.modulus or 0)
    keys = key_freqs_of(ctx, key_threshold, reference)
    sq = fr.frequency_norms(centred(data.require_embeddings()), p) ** 2
    return {"key_freq_energy": float(sq[[k - 1 for k in keys]].sum() / sq.sum())}


SPLIT_ALL = Param("loss_split", str, "all", "samples the loss is computed on (default: all for restricted_loss, "
                  "train for excluded_loss)", choices=("train", "val", "all"))
SPLIT_TRAIN = Param("loss_split", str, "train", SPLIT_ALL.help, choices=("train", "val", "all"))


def _ablated_losses(data: "CheckpointData", ctx: "Context", key_threshold: float, reference: str,
                    split: str) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    reason = _modular_add_grid(ctx.task)
    if reason:
        raise ProbeError(f"restricted/excluded loss: {reason}")
    model = data.model()
    if not hasattr(model, "blocks"):
        raise ProbeError("restricted/excluded loss are defined for the transformer (MLP neurons at the last position)")

    def compute() -> dict[str, "torch.Tensor"]:
        p = int(ctx.task.modulus or 0)
        keys = key_freqs_of(ctx, key_threshold, reference)
        hook, act = neuron_activations(data, ctx)
        # restricted: keep the components of the activations on the p x p grid that are built from the
        # key frequencies alone, P_R A P_R with P_R the projector on {const, cos k, sin k : k key}
        basis, _ = fr.fourier_basis(p)
        rows = [0] + [r for k in keys for r in (2 * k - 1, 2 * k) if r < p]
        b_r = basis[rows]  # [r, p]: P_R = b_r^T b_r, applied as two thin products on each side
        g = grid(act, ctx.task)
        coef = np.einsum("ia,abn,jb->ijn", b_r, g, b_r, optimize=True)  # [r, r, n]
        restricted_grid = np.einsum("ia,ijn,jb->abn", b_r, coef, b_r, optimize=True)
        restricted = restricted_grid[ctx.task.inputs[:, 0], ctx.task.inputs[:, 1]]
        # excluded: remove the directions cos(w_k(a+b)), sin(w_k(a+b)) (Nanda et al. Sec. 5.1)
        order = ctx.task.inputs[:, 0] * p + ctx.task.inputs[:, 1]  # sample -> grid row
        q = fr.sum_directions(p, keys)[order]  # [N, 2K], orthonormal over the full grid
        excluded = act - q @ (q.T @ act)
        x = ctx.model_inputs(model)
        logits = {"full": torch.as_tensor(clean_pass(data, ctx)[2], device=ctx.device)}
        for name, values in (("restricted", restricted), ("excluded", excluded)):
            new = torch.as_tensor(values, dtype=torch.float32, device=ctx.device)

            def patch(a: torch.Tensor, hook: Any, new: torch.Tensor = new) -> torch.Tensor:
                a = a.clone()
                a[:, -1] = new  # the answer path computes the last MLP at the last position only
                return a

            with torch.no_grad(), model.hooks(fwd_hooks=[(hook, patch)]):
                logits[name] = model.answer(x).double()
        return logits

    logits = ctx.memo_step(("ablated", key_threshold, reference), data.index, compute)
    idx = {"train": ctx.split.train, "val": ctx.split.val, "all": np.arange(ctx.task.n_samples)}[split]
    if len(idx) == 0:
        raise ProbeError(f"the {split} split is empty")
    sel = torch.as_tensor(idx, device=ctx.device)
    y = torch.as_tensor(ctx.task.labels, device=ctx.device)[sel]
    return {name: float(F.cross_entropy(v[sel], y)) for name, v in logits.items()}


@metric("restricted_loss", "loss with the neuron activations restricted to their key-frequency components "
        "(functions of a and b through the key frequencies only), patched through a hook (Nanda et al. "
        "Sec. 5.1; float64 CE)",
        needs=("forward", "split"), tasks="modular addition, transformer", direction="lower",
        params=(KEY_THRESHOLD, REFERENCE, SPLIT_ALL), applies=_modular_add_grid)
def restricted_loss(data: "CheckpointData", ctx: "Context", key_threshold: float, reference: str,
                    loss_split: str) -> dict[str, float]:
    r = _ablated_losses(data, ctx, key_threshold, reference, loss_split)
    return {"restricted_loss": r["restricted"], "restricted_loss_full": r["full"]}


@metric("excluded_loss", "loss with the key-frequency directions cos/sin(w_k(a+b)) removed from the neuron "
        "activations through a hook (Nanda et al. Sec. 5.1; float64 CE)", needs=("forward", "split"),
        tasks="modular addition, transformer", direction="higher", params=(KEY_THRESHOLD, REFERENCE, SPLIT_TRAIN),
        applies=_modular_add_grid)
def excluded_loss(data: "CheckpointData", ctx: "Context", key_threshold: float, reference: str,
                  loss_split: str) -> dict[str, float]:
    r = _ablated_losses(data, ctx, key_threshold, reference, loss_split)
    return {"excluded_loss": r["excluded"], "excluded_loss_full": r["full"]}


# --------------------------------------------------------------------------------------------------
# PCA
# --------------------------------------------------------------------------------------------------
COMPONENTS = Param("components", int, 8, "number of principal components reported", check=_positive_int)


@metric("pca_variance", "explained-variance ratios of the symbol embeddings' principal components",
        needs=("embeddings",), tasks="operation tables", params=(COMPONENTS,), applies=_table)
def pca_variance(data: "CheckpointData", ctx: "Context", components: int) -> dict[str, float]:
    ratios, _ = principal_axes(data.require_embeddings())
    if components > ratios.shape[0]:
        raise ProbeError(f"--components {components} is larger than the {ratios.shape[0]} principal components "
                         f"the embeddings have")
    return {f"var_pc{i + 1}": float(r) for i, r in enumerate(ratios[:components])}


@metric("effective_dim", "effective dimension exp(-sum r_i log r_i) of the explained-variance ratios "
        "(Liu et al. Fig. 7 entropy)", needs=("embeddings",), tasks="operation tables", direction="lower",
        applies=_table)
def effective_dim(data: "CheckpointData", ctx: "Context") -> dict[str, float]:
    ratios, _ = principal_axes(data.require_embeddings())
    r = ratios[ratios > 0]
    entropy = float(-np.sum(r * np.log(r)))
    return {"effective_dim": float(np.exp(entropy)), "pca_entropy": entropy}


def _counts(text: str, d: int) -> list[int]:
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


N_COMPONENTS = Param("n_components", str, "1,2,4,8,16,32,all", "numbers n of principal components to project onto")


@metric("pca_projection_accuracy", "train/test accuracy with the embeddings replaced, through hook_embed, by "
        "their projection on the first n PCs of the current and of the final checkpoint (Liu et al. App. K, "
        "Fig. 22)", needs=("embeddings", "forward", "split"), tasks="operation tables", direction="higher",
        params=(N_COMPONENTS, REFERENCE), applies=_table)
def pca_projection_accuracy(data: "CheckpointData", ctx: "Context", n_components: str,
                            reference: str) -> dict[str, float]:
    import torch

    model = data.model()
    emb = data.require_embeddings()
    if emb.ndim != 2:
        raise ProbeError("projection accuracy needs vector embeddings")
    d = emb.shape[1]
    counts = _counts(n_components, min(d, emb.shape[0]) if "all" not in n_components else d)
    counts = [min(n, d) for n in counts]
    x = ctx.model_inputs(model)
    y = torch.as_tensor(ctx.task.labels, device=ctx.device)
    w_e = model.embed.W_E.detach()
    n_sym = ctx.task.n_symbols
    train = torch.as_tensor(ctx.split.train, device=ctx.device)
    val = torch.as_tensor(ctx.split.val, device=ctx.device)
    mu = emb.mean(axis=0)
    bases = {"cur": principal_axes(emb)[1], "final": principal_axes(ctx.embeddings_at(reference))[1]}
    out: dict[str, float] = {}
    clean = None
    for tag, vt in bases.items():
        for n in counts:
            if n >= vt.shape[0] and vt.shape[0] == d:
                # all d components span the whole space: the projection is the identity, so the
                # accuracy is the model's own (from the shared clean pass)
                if clean is None:
                    logits = torch.as_tensor(clean_pass(data, ctx)[2], device=ctx.device)
                    clean = (model.predict(logits.to(torch.float32)) == y).double()
                out[f"train_acc_{tag}_{n}"] = float(clean[train].mean())
                out[f"test_acc_{tag}_{n}"] = float(clean[val].mean()) if len(val) else float("nan")
                continue
            v = vt[:n]  # [n, d]
            proj = mu + (emb - mu) @ v.T @ v
            table = w_e.clone()
            table[:n_sym] = torch.as_tensor(proj, dtype=table.dtype, device=table.device)

            def replace(act: torch.Tensor, hook: Any, table: torch.Tensor = table) -> torch.Tensor:
                return table[x]

            with torch.no_grad(), model.hooks(fwd_hooks=[("hook_embed", replace)]):
                pred = model.predict(model.answer(x))
            correct = (pred == y).double()
            out[f"train_acc_{tag}_{n}"] = float(correct[train].mean())
            out[f"test_acc_{tag}_{n}"] = float(correct[val].mean()) if len(val) else float("nan")
    return out


# --------------------------------------------------------------------------------------------------
# lottery-ticket axes (Liu et al. Sec. 4.2, App. K; Kitouni's post)
# --------------------------------------------------------------------------------------------------
def order_quality(coords: np.ndarray, task: Task) -> np.ndarray | float:
    """How well the symbols are ordered along the axes: circular order for modular tasks (the largest
    normalised Fourier coefficient of the angles ``|mean_a exp(i(theta_a -/+ 2 pi k a / p))|``), linear
    order otherwise (|Spearman correlation| of the first coordinate with the symbol's value).
    ``coords [..., n, k]``; leading axes are batched."""
    c = np.asarray(coords, dtype=np.float64)
    n = c.shape[-2]
    if task.modulus:
        z = c[..., 0] + 1j * (c[..., 1] if c.shape[-1] > 1 else 0.0)
        u = np.exp(1j * np.angle(z))  # [..., n]
        a = np.arange(n)
        ks = np.arange(1, n // 2 + 1)
        w = np.exp(-2j * np.pi * ks[:, None] * a[None, :] / n)  # [K, n]
        plus = np.abs(u @ w.T) / n
        minus = np.abs(u @ w.conj().T) / n
        out = np.maximum(plus.max(axis=-1), minus.max(axis=-1))
    else:
        ranks = np.argsort(np.argsort(c[..., 0], axis=-1), axis=-1).astype(np.float64)
        r = ranks - ranks.mean(axis=-1, keepdims=True)
        v = np.arange(n) - (n - 1) / 2
        out = np.abs(r @ v) / (np.linalg.norm(r, axis=-1) * np.linalg.norm(v))
    return float(out) if np.ndim(out) == 0 else out


@metric("lottery_ticket", "share of the embedding variance along the final top-k principal axes and how well "
        "symbols are ordered along them, each next to a random-direction baseline (Liu et al. App. K)",
        needs=("embeddings",), tasks="operation tables", direction="higher",
        params=(Param("k", int, 2, "number of final principal axes", check=_positive_int), REFERENCE,
                Param("baseline_draws", int, 32, "random k-frames in the baseline", check=_positive_int)),
        applies=_table)
def lottery_ticket(data: "CheckpointData", ctx: "Context", k: int, reference: str, baseline_draws: int) -> dict[str, float]:
    e = centred(data.require_embeddings())
    d = e.shape[1]
    if k > d:
        raise ProbeError(f"--k {k} is larger than the embedding dimension {d}")
    axes = ctx.memo(("final_axes", reference), lambda: principal_axes(ctx.embeddings_at(reference))[1])[:k]
    total = float(np.sum(e * e))

    def frames() -> list[np.ndarray]:
        rng = np.random.default_rng(0)
        return [np.linalg.qr(rng.normal(size=(d, k)))[0].T for _ in range(baseline_draws)]

    rand = ctx.memo(("random_frames", k, baseline_draws, d), lambda: np.stack(frames()))  # [B, k, d]
    share = float(np.sum((e @ axes.T) ** 2) / total)
    proj = np.einsum("nd,bkd->bnk", e, rand)  # [B, n, k]
    rand_share = float(np.mean(np.sum(proj**2, axis=(1, 2)) / total))
    order = float(order_quality(e @ axes.T, ctx.task))
    rand_order = float(np.mean(order_quality(proj, ctx.task)))
    return {"lt_variance_share": share, "lt_random_share": rand_share, "lt_order": order, "lt_random_order": rand_order}


# --------------------------------------------------------------------------------------------------
# clock vs pizza (Zhong et al. 2023)
# --------------------------------------------------------------------------------------------------
def circularity_of(emb: np.ndarray, p: int, pcs: int = 2) -> float:
    """Circularity of the top principal components: for the plane of PCs (1,2), (3,4), ...,
    ``max_k |sum_a z_a e^{-2 pi i k a/p}|^2 / (p sum_a |z_a|^2)`` with ``z = x + i y``; 1 for a perfect
    circle traversed at one frequency. The mean over the first ``pcs / 2`` planes."""
    e = centred(emb)
    _, vt = principal_axes(emb)
    a = np.arange(p)
    ks = np.arange(1, p)
    basis = np.exp(-2j * np.pi * ks[:, None] * a[None, :] / p)
    vals = []
    for i in range(0, min(pcs, vt.shape[0]) - 1, 2):
        z = e @ vt[i] + 1j * (e @ vt[i + 1])
        denom = p * np.sum(np.abs(z) ** 2)
        vals.append(float(np.max(np.abs(basis @ z) ** 2) / denom) if denom > 0 else float("nan"))
    return float(np.mean(vals))


@metric("circularity", "how circular the embeddings are on their top principal planes (Zhong et al.); 1 for "
        "a perfect circle", needs=("embeddings",), tasks="modular tasks", direction="higher",
        params=(Param("pcs", int, 2, "number of leading PCs (pairs of planes)",
                      check=lambda n: None if n >= 2 and n % 2 == 0 else "must be an even number >= 2"),),
        applies=_modular)
def circularity(data: "CheckpointData", ctx: "Context", pcs: int) -> dict[str, float]:
    return {"circularity": circularity_of(data.require_embeddings(), int(ctx.task.modulus or 0), pcs)}


def distance_irrelevance_of(correct_logits: np.ndarray) -> float:
    """Zhong et al.: ``mean_d std{L[a, b] : a - b = d (mod p)} / std(L)`` on the ``p x p`` table of
    correct-label logits; near 1 when the logit ignores the distance a - b (clock), small when it is a
    function of it (pizza)."""
    table = np.asarray(correct_logits, dtype=np.float64)
    p = table.shape[0]
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    diff = (a - b) % p
    total = table.std()
    if total == 0:
        return float("nan")
    return float(np.mean([table[diff == d].std() for d in range(p)]) / total)


@metric("distance_irrelevance", "Zhong et al.'s distance irrelevance of the correct-label logits (1: clock-like, "
        "small: pizza-like)", needs=("forward",), tasks="modular addition", applies=_modular_add_grid)
def distance_irrelevance(data: "CheckpointData", ctx: "Context") -> dict[str, float]:
    out = clean_pass(data, ctx)[2]
    correct = out[np.arange(out.shape[0]), ctx.task.labels]
    return {"distance_irrelevance": distance_irrelevance_of(grid(correct, ctx.task))}


def gradient_symmetricity_of(grad_a: np.ndarray, grad_b: np.ndarray) -> float:
    """Zhong et al.: mean cosine similarity of the gradients of the output logit with respect to the
    two input embeddings, over sampled (a, b, c). ``[S, d]`` each."""
    num = np.sum(grad_a * grad_b, axis=1)
    den = np.linalg.norm(grad_a, axis=1) * np.linalg.norm(grad_b, axis=1)
    ok = den > 0
    return float(np.mean(num[ok] / den[ok])) if ok.any() else float("nan")


@metric("gradient_symmetricity", "Zhong et al.'s gradient symmetricity: cosine similarity of d logit_c / d E_a "
        "and d logit_c / d E_b over sampled (a, b, c)", needs=("forward",), tasks="modular addition",
        params=(Param("samples", int, 256, "number of sampled (a, b, c) triples", check=_positive_int),),
        applies=_modular_add_grid)
def gradient_symmetricity(data: "CheckpointData", ctx: "Context", samples: int) -> dict[str, float]:
    import torch

    model = data.model()
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


# --------------------------------------------------------------------------------------------------
# 2-D coordinates for figures
# --------------------------------------------------------------------------------------------------
def _coords(tag: str, xy: np.ndarray) -> dict[str, float]:
    out = {}
    for k in range(xy.shape[0]):
        out[f"{tag}_x{k}"] = float(xy[k, 0])
        out[f"{tag}_y{k}"] = float(xy[k, 1])
    return out


AXES = Param("axes", str, "refit", "PCA axes: refit at each step, or fixed to the reference (final) checkpoint",
             choices=("refit", "final"))


@metric("pca2d", "embeddings on their first two principal components (axes refit per step or fixed to the "
        "final checkpoint's): columns pca2d_x{k}, pca2d_y{k} per symbol", needs=("embeddings",),
        tasks="operation tables", params=(AXES, REFERENCE), applies=_table)
def pca2d(data: "CheckpointData", ctx: "Context", axes: str, reference: str) -> dict[str, float]:
    e = centred(data.require_embeddings())
    if axes == "final":
        vt = ctx.memo(("final_axes", reference), lambda: principal_axes(ctx.embeddings_at(reference))[1])
    else:
        vt = principal_axes(data.require_embeddings())[1]
    if vt.shape[0] < 2:
        raise ProbeError("pca2d needs embeddings of dimension >= 2")
    return _coords("pca2d", e @ vt[:2].T)


@metric("umap", "UMAP (umap-learn) 2-D coordinates of the symbol embeddings: umap_x{k}, umap_y{k}",
        needs=("embeddings",), tasks="operation tables",
        params=(Param("neighbors", int, 10, "UMAP n_neighbors", check=_positive_int),), applies=_table)
def umap_coords(data: "CheckpointData", ctx: "Context", neighbors: int) -> dict[str, float]:
    import warnings

    import umap

    e = centred(data.require_embeddings())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xy = umap.UMAP(n_neighbors=min(neighbors, e.shape[0] - 1), random_state=0, n_jobs=1).fit_transform(e)
    return _coords("umap", xy)


@metric("tsne", "t-SNE (scikit-learn) 2-D coordinates of the symbol embeddings: tsne_x{k}, tsne_y{k}",
        needs=("embeddings",), tasks="operation tables",
        params=(Param("perplexity", float, 5.0, "t-SNE perplexity", check=lambda x: None if x > 0 else "must be > 0"),),
        applies=_table)
def tsne_coords(data: "CheckpointData", ctx: "Context", perplexity: float) -> dict[str, float]:
    from sklearn.manifold import TSNE

    e = centred(data.require_embeddings())
    xy = TSNE(n_components=2, perplexity=min(perplexity, e.shape[0] - 1.0), random_state=0, init="pca").fit_transform(e)
    return _coords("tsne", xy)
