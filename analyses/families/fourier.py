"""Registered Fourier metrics (Nanda et al. 2023 Sec. 4-5): frequency norms, key frequencies, Gini,
key-frequency energy, restricted and excluded loss. The maths is in :mod:`probe.analyses.fourier`
and :mod:`probe.analyses.representations`; forward passes in :mod:`probe.analyses.passes`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from probe.analyses import fourier as fr
from probe.analyses.applies import modular, modular_add_grid
from probe.analyses.passes import clean_pass, neuron_activations, patched_answers
from probe.analyses.registry import Param, fraction, metric
from probe.analyses.representations import centred, excluded_activations, grid, restricted_activations
from probe.errors import ProbeError

if TYPE_CHECKING:
    from probe.analyses.context import Context
    from probe.run import Checkpoint


def _unembed_rows(ckpt: "Checkpoint", ctx: "Context") -> np.ndarray:
    assert ctx.config is not None
    w_u = ckpt.tensor(ctx.config.model.unembed_param)  # [d, n_classes]
    return w_u.T[: int(ctx.task.modulus or 0)]


@metric("fourier_norms", "norm per frequency k of W_E, W_U and of the neuron activations (Nanda et al. "
        "Sec. 4): columns we_k, wu_k, neuron_k", needs=("embeddings", "forward"), tasks="modular tasks",
        params=(Param("parts", str, "we,wu,neuron", "which of we, wu, neuron to report (comma list)"),),
        applies=modular)
def fourier_norms(ckpt: "Checkpoint", ctx: "Context", parts: str) -> dict[str, float]:
    p = int(ctx.task.modulus or 0)
    wanted = [x.strip() for x in parts.split(",") if x.strip()]
    bad = [x for x in wanted if x not in ("we", "wu", "neuron")]
    if bad or not wanted:
        raise ProbeError(f"--parts: {parts!r}; valid parts: we, wu, neuron")
    out: dict[str, float] = {}
    if "we" in wanted:
        out.update({f"we_{k + 1}": v for k, v in enumerate(fr.frequency_norms(centred(ckpt.embeddings()), p))})
    if "wu" in wanted:
        out.update({f"wu_{k + 1}": v for k, v in enumerate(fr.frequency_norms(_unembed_rows(ckpt, ctx), p))})
    if "neuron" in wanted:
        reason = modular_add_grid(ctx.task)
        if reason:
            raise ProbeError(f"neuron Fourier norms: {reason}", param="parts")
        _, act = neuron_activations(ckpt, ctx)
        out.update({f"neuron_{k + 1}": v for k, v in enumerate(fr.frequency_norms_2d(grid(act, ctx.task), p))})
    return out


KEY_THRESHOLD = Param("key_threshold", float, 0.05, "key-frequency rule: share of the embedding's squared "
                      "Fourier norm (constant excluded) at least this", check=fraction)


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
        needs=("embeddings",), tasks="modular tasks", params=(KEY_THRESHOLD, REFERENCE), applies=modular)
def key_freqs(ckpt: "Checkpoint", ctx: "Context", key_threshold: float, reference: str) -> dict[str, Any]:
    keys = key_freqs_of(ctx, key_threshold, reference)
    return {"key_freqs": ",".join(map(str, keys)), "n_key_freqs": float(len(keys))}


@metric("fourier_gini", "Gini coefficient of W_E's frequency norms (0 = spread evenly, (n-1)/n = one "
        "frequency)", needs=("embeddings",), tasks="modular tasks", direction="higher", applies=modular)
def fourier_gini(ckpt: "Checkpoint", ctx: "Context") -> dict[str, float]:
    p = int(ctx.task.modulus or 0)
    return {"fourier_gini": fr.gini(fr.frequency_norms(centred(ckpt.embeddings()), p))}


@metric("key_freq_energy", "share of W_E's Fourier energy (constant excluded) in the key frequencies",
        needs=("embeddings",), tasks="modular tasks", direction="higher", params=(KEY_THRESHOLD, REFERENCE),
        applies=modular)
def key_freq_energy(ckpt: "Checkpoint", ctx: "Context", key_threshold: float, reference: str) -> dict[str, float]:
    p = int(ctx.task.modulus or 0)
    keys = key_freqs_of(ctx, key_threshold, reference)
    sq = fr.frequency_norms(centred(ckpt.embeddings()), p) ** 2
    return {"key_freq_energy": float(sq[[k - 1 for k in keys]].sum() / sq.sum())}


SPLIT_ALL = Param("loss_split", str, "all", "samples the loss is computed on (default: all for restricted_loss, "
                  "train for excluded_loss)", choices=("train", "val", "all"))


SPLIT_TRAIN = Param("loss_split", str, "train", SPLIT_ALL.help, choices=("train", "val", "all"))


def _ablated_losses(ckpt: "Checkpoint", ctx: "Context", key_threshold: float, reference: str,
                    split: str) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    def compute() -> dict[str, "torch.Tensor"]:
        p = int(ctx.task.modulus or 0)
        keys = key_freqs_of(ctx, key_threshold, reference)
        hook, act = neuron_activations(ckpt, ctx)
        restricted = restricted_activations(grid(act, ctx.task), p, keys)[ctx.task.inputs[:, 0], ctx.task.inputs[:, 1]]
        excluded = excluded_activations(act, ctx.task.inputs, p, keys)
        logits = patched_answers(ckpt, ctx, hook, {"restricted": restricted, "excluded": excluded})
        logits["full"] = torch.as_tensor(clean_pass(ckpt, ctx)[2], device=ctx.device)
        return logits

    logits = ctx.memo_step(("ablated", key_threshold, reference), ckpt.index, compute)
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
        params=(KEY_THRESHOLD, REFERENCE, SPLIT_ALL), applies=modular_add_grid)
def restricted_loss(ckpt: "Checkpoint", ctx: "Context", key_threshold: float, reference: str,
                    loss_split: str) -> dict[str, float]:
    r = _ablated_losses(ckpt, ctx, key_threshold, reference, loss_split)
    return {"restricted_loss": r["restricted"], "restricted_loss_full": r["full"]}


@metric("excluded_loss", "loss with the key-frequency directions cos/sin(w_k(a+b)) removed from the neuron "
        "activations through a hook (Nanda et al. Sec. 5.1; float64 CE)", needs=("forward", "split"),
        tasks="modular addition, transformer", direction="higher", params=(KEY_THRESHOLD, REFERENCE, SPLIT_TRAIN),
        applies=modular_add_grid)
def excluded_loss(ckpt: "Checkpoint", ctx: "Context", key_threshold: float, reference: str,
                  loss_split: str) -> dict[str, float]:
    r = _ablated_losses(ckpt, ctx, key_threshold, reference, loss_split)
    return {"excluded_loss": r["excluded"], "excluded_loss_full": r["full"]}
