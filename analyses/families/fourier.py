"""Registered Fourier metrics (Nanda et al. 2023 Sec. 4-5): frequency norms, key frequencies, Gini,
key-frequency energy, restricted and excluded loss. The maths is in :mod:`probe.analyses.fourier`
and :mod:`probe.analyses.representations`; forward passes in :mod:`probe.analyses.passes`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from probe.analyses import fourier as fr
from probe.analyses.applies import last_position_readout, modular, modular_add_grid
from probe.analyses import passes
from probe.analyses.passes import clean_pass, neuron_activations, patched_answers
from probe.analyses.registry import Param, fraction, metric
from probe.analyses.representations import (centred, excluded_activations, grid, nanda_restricted_activations,
                                             nanda_restricted_logits, restricted_activations)
from probe.errors import ProbeError

if TYPE_CHECKING:
    import torch

    from probe.analyses.context import Context
    from probe.run import Checkpoint


def _unembed_rows(ckpt: "Checkpoint", ctx: "Context") -> np.ndarray:
    assert ctx.config is not None
    w_u = ckpt.tensor(ctx.config.model.unembed_param)  # [d, n_classes]
    return w_u.T[: int(ctx.task.modulus or 0)]


@metric("fourier_norms", "norm per frequency k of W_E, W_U and of the neuron activations (Nanda et al. "
        "Sec. 4): columns we_k, wu_k, neuron_k", needs=("embeddings", "forward"),
        params=(Param("parts", str, "we,wu,neuron", "which of we, wu, neuron to report (comma list)"),),
        applies=modular)
def fourier_norms(ckpt: "Checkpoint", ctx: "Context", parts: str) -> dict[str, float]:
    p = int(ctx.task.modulus or 0)
    additive_note(ctx)
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
        if passes.batched(ctx):
            norms = _neuron_norms(ckpt, ctx)
        else:
            _, act = neuron_activations(ckpt, ctx)
            norms = fr.frequency_norms_2d(grid(act, ctx.task), p)
        out.update({f"neuron_{k + 1}": v for k, v in enumerate(norms)})
    return out


# the batched form's neuron norms ------------------------------------------------------------------
def _grid_tensor(act: "torch.Tensor", ctx: "Context") -> "torch.Tensor":
    """:func:`~probe.analyses.representations.grid` of a tensor: ``[N, n] -> [p, p, n]``."""
    import torch

    p = int(ctx.task.modulus or 0)
    flat = ctx.memo("grid_order", lambda: np.asarray(ctx.task.inputs[:, 0] * p + ctx.task.inputs[:, 1]))
    if flat.shape[0] == p * p and np.array_equal(flat, np.arange(p * p)):
        return act.reshape(p, p, -1)
    out = torch.zeros(p * p, act.shape[1], dtype=act.dtype, device=act.device)
    out[torch.as_tensor(flat, device=act.device)] = act
    return out.view(p, p, -1)


def _neuron_norms(ckpt: "Checkpoint", ctx: "Context") -> np.ndarray:
    import torch

    acts = _grid_tensor(passes.neuron_tensor(ckpt, ctx), ctx)
    scratch = ctx.memo(("scratch", tuple(acts.shape), acts.dtype), lambda: torch.empty_like(acts))
    return fr.frequency_norms_2d_batched(acts, int(ctx.task.modulus or 0), scratch)


KEY_RULE = Param("key_rule", str, "energy", "key-frequency rule: 'energy' (share of W_E's Fourier energy above "
                 "what Gaussian random weights reach at family-wise level key_threshold; scales with p), "
                 "'share' (share >= key_threshold, a fixed cut) or 'neurons' (Nanda et al.'s neuron clusters: "
                 "frequencies explaining >= key_threshold of some neuron's variance)", choices=fr.KEY_RULES)
KEY_THRESHOLD = Param("key_threshold", float, None, "threshold of the key rule (default: energy 1e-6, share "
                      "0.05, neurons 0.85)", check=fraction)


REFERENCE = Param("reference", str, "last", "checkpoint the key frequencies / final axes come from "
                  "(first, last or a step)")


def additive_note(ctx: "Context") -> None:
    """Fourier analysis over Z_p describes addition and subtraction; for other operations say so."""
    if ctx.task.name not in ("add", "sub"):
        ctx.note(f"task {ctx.task.name}: the additive Fourier basis over Z_p does not describe this operation "
                 "(for x*y and x/y the clock lives on discrete logarithms); frequencies are of the symbol index")


def key_freqs_of(ctx: "Context", rule: str, threshold: float | None, reference: str) -> list[int]:
    """Key frequencies of the series, chosen once at ``reference`` by ``rule`` and noted with the result."""
    level = fr.KEY_DEFAULTS[rule] if threshold is None else threshold
    p = int(ctx.task.modulus or 0)

    def choose() -> list[int]:
        if rule == "neurons":
            reason = modular_add_grid(ctx.task)
            if reason:
                raise ProbeError(f"the neuron-cluster rule {reason}", param="key_rule")
            ckpt = ctx.checkpoint_at(reference)
            _, act = neuron_activations(ckpt, ctx)
            return fr.neuron_key_frequencies(grid(act, ctx.task), p, level)[0]
        emb = centred(ctx.embeddings_at(reference))
        norms = fr.frequency_norms(emb, p)
        if rule == "share":
            return fr.key_frequencies(norms, level)
        return fr.significant_frequencies(norms, emb.shape[1], level)

    keys = ctx.memo(("key_freqs", rule, level, reference), choose)
    what = {"energy": f"share of W_E's Fourier energy above Gaussian noise at level {level:g}",
            "share": f"share of W_E's squared Fourier norm >= {level:g}",
            "neurons": f"neuron clusters explaining >= {level:g} of a neuron's variance (Nanda et al.)"}[rule]
    ctx.note(f"key frequencies {keys}: {what}, at checkpoint {reference}")
    additive_note(ctx)
    return keys


def _key_needs(params: dict[str, Any]) -> frozenset[str]:
    return frozenset({"forward"}) if params.get("key_rule") == "neurons" else frozenset()


@metric("key_freqs", "key frequencies by a declared rule (default: W_E's Fourier energy above Gaussian noise), "
        "chosen at a reference checkpoint (default: the final one) and stored with the result",
        needs=("embeddings",), params=(KEY_RULE, KEY_THRESHOLD, REFERENCE), applies=modular,
        needs_for=_key_needs)
def key_freqs(ckpt: "Checkpoint", ctx: "Context", key_rule: str, key_threshold: float | None,
              reference: str) -> dict[str, Any]:
    keys = key_freqs_of(ctx, key_rule, key_threshold, reference)
    return {"key_freqs": ",".join(map(str, keys)), "n_key_freqs": float(len(keys))}


@metric("fourier_gini", "Gini coefficient of W_E's frequency norms (0 = spread evenly, (n-1)/n = one "
        "frequency)", needs=("embeddings",), direction="higher", applies=modular)
def fourier_gini(ckpt: "Checkpoint", ctx: "Context") -> dict[str, float]:
    p = int(ctx.task.modulus or 0)
    additive_note(ctx)
    return {"fourier_gini": fr.gini(fr.frequency_norms(centred(ckpt.embeddings()), p))}


@metric("key_freq_energy", "share of W_E's Fourier energy (constant excluded) in the key frequencies",
        needs=("embeddings",), direction="higher", params=(KEY_RULE, KEY_THRESHOLD, REFERENCE),
        applies=modular, needs_for=_key_needs)
def key_freq_energy(ckpt: "Checkpoint", ctx: "Context", key_rule: str, key_threshold: float | None,
                    reference: str) -> dict[str, float]:
    p = int(ctx.task.modulus or 0)
    keys = key_freqs_of(ctx, key_rule, key_threshold, reference)
    sq = fr.frequency_norms(centred(ckpt.embeddings()), p) ** 2
    return {"key_freq_energy": float(sq[[k - 1 for k in keys]].sum() / sq.sum()) if keys else 0.0}


RESTRICTED = Param("convention", str, "nanda", "restricted loss: 'nanda' (Nanda et al. Sec. 5.1: the neurons' "
                   "mean plus their cos/sin(w_k(a+b)) components, read out through W_out and W_U with the mean "
                   "logit restored) or 'grid' (probe's variant: every product of key-frequency terms in a and b, "
                   "run through the rest of the network)", choices=("nanda", "grid"))
LOSS_SPLIT = Param("loss_split", str, None, "samples the loss is computed on (default: the test split for "
                   "restricted_loss as Nanda et al.; train for excluded_loss as Nanda et al.)",
                   choices=("train", "val", "all"))


def _full_logits(ckpt: "Checkpoint", ctx: "Context") -> Any:
    import torch

    if passes.batched(ctx):
        return passes.answer_tensor(ckpt, ctx).double()
    return torch.as_tensor(clean_pass(ckpt, ctx)[2], device=ctx.device)


def _key_projection(ckpt: "Checkpoint", ctx: "Context", keys: list[int]) -> tuple[Any, Any, Any]:
    """Batched form: the unit directions cos/sin(w_k (a+b)) of ``keys`` over the samples ``q [N, 2K]``,
    the neurons' mean over the samples ``[n]`` and their components ``q^T act [2K, n]``, in float64
    (the readout pass), shared by the restricted and excluded losses of one checkpoint."""
    import torch

    p = int(ctx.task.modulus or 0)
    n = ctx.task.n_samples
    order = ctx.task.inputs[:, 0] * p + ctx.task.inputs[:, 1]

    def directions() -> Any:  # q, with a last column 1/N so that one product gives the mean too
        q = fr.sum_directions(p, keys)[order]
        return torch.as_tensor(np.concatenate([q, np.full((n, 1), 1.0 / n)], axis=1), dtype=torch.float64,
                               device=ctx.device)

    q_mean = ctx.memo(("sum_directions", tuple(keys)), directions)

    def make() -> tuple[Any, Any]:
        act = passes.neuron_tensor(ckpt, ctx)
        step = max(1, (1 << 20) // act.shape[1])  # samples per slice: 8 MB in float64
        wide = ctx.memo(("scratch64", step, act.shape[1]), lambda: torch.empty(
            step, act.shape[1], dtype=torch.float64, device=act.device))
        both = torch.zeros(q_mean.shape[1], act.shape[1], dtype=torch.float64, device=act.device)
        for lo in range(0, n, step):  # float64 copies of a slice of the neurons at a time
            hi = min(n, lo + step)
            both.addmm_(q_mean[lo:hi].T, wide[: hi - lo].copy_(act[lo:hi]))
        return both[-1], both[:-1]  # [n], [2K, n]

    mean, coef = ctx.memo_step(("key_projection", tuple(keys)), ckpt.index, make)
    return q_mean[:, :-1], mean, coef


class _Rows:
    """Logits ``base + q @ low + const`` (float64) computed for the rows a loss reads (``rows[idx]``)."""

    def __init__(self, base: Any, q: Any, low: Any, const: Any) -> None:
        self.base, self.q, self.low, self.const = base, q, low, const

    def __getitem__(self, idx: Any) -> Any:
        out = self.q[idx] @ self.low
        if self.base is not None:
            out = out + self.base[idx]
        return out if self.const is None else out + self.const


def _excluded_logits(ckpt: "Checkpoint", ctx: "Context", key_rule: str, key_threshold: float | None,
                     reference: str) -> Any:
    """Logits with the key-frequency directions removed from the neurons (one patched pass per
    checkpoint; in the batched form, where the outputs are affine in the neurons, their change
    ``-q (q^T act) J`` in float64 instead)."""
    def compute() -> Any:
        keys = key_freqs_of(ctx, key_rule, key_threshold, reference)
        if passes.batched(ctx):
            jac = passes.answer_map(ckpt, ctx)
            if jac is not None:
                full = _full_logits(ckpt, ctx)  # (the clean pass: neurons and outputs in one call)
                q, _, coef = _key_projection(ckpt, ctx, keys)
                return _Rows(full, q, -(coef @ jac), None)
        hook, act, _ = clean_pass(ckpt, ctx)
        excluded = excluded_activations(act, ctx.task.inputs, int(ctx.task.modulus or 0), keys)
        return patched_answers(ckpt, ctx, hook, {"excluded": excluded})["excluded"]

    return ctx.memo_step(("excluded", key_rule, key_threshold, reference), ckpt.index, compute)


def _restricted_logits(ckpt: "Checkpoint", ctx: "Context", key_rule: str, key_threshold: float | None,
                       reference: str, convention: str) -> Any:
    """Logits of the neurons restricted to the key frequencies, under ``convention``."""
    import torch

    def compute() -> Any:
        p = int(ctx.task.modulus or 0)
        keys = key_freqs_of(ctx, key_rule, key_threshold, reference)
        if convention == "nanda":
            readout = ctx.config.model.neuron_readout if ctx.config is not None else None
            if readout is None:
                raise ProbeError("Nanda et al.'s restricted loss reads the neurons out through W_out and W_U; this "
                                 "model declares no such path (use --convention grid)", param="convention")
            if getattr(ctx.config.model, "layernorm", False) and getattr(ctx.config.model, "ln_final", True):
                ctx.note("the model has a final LayerNorm; Nanda et al.'s W_out W_U readout skips it")
            if passes.batched(ctx):  # the same readout with the restricted activations kept factored
                full = _full_logits(ckpt, ctx)  # (the clean pass: neurons and outputs in one call)
                q, mean, coef = _key_projection(ckpt, ctx, keys)
                w = (passes.parameter(ckpt, ctx, readout, torch.float64)
                     @ passes.parameter(ckpt, ctx, ctx.config.model.unembed_param, torch.float64))
                # out = mean w + q (coef w), shifted so that its mean over the samples is the model's
                shift = full.mean(dim=0) - (mean @ w + q.mean(dim=0) @ (coef @ w))
                return _Rows(None, q, coef @ w, mean @ w + shift)
            hook, act, full = clean_pass(ckpt, ctx)
            w_out = ckpt.tensor(readout)
            w_u = ckpt.tensor(ctx.config.model.unembed_param)
            approx = nanda_restricted_activations(act, ctx.task.inputs, p, keys)
            return torch.as_tensor(nanda_restricted_logits(approx, w_out, w_u, full), device=ctx.device)
        hook, act, full = clean_pass(ckpt, ctx)
        restricted = restricted_activations(grid(act, ctx.task), p, keys)[ctx.task.inputs[:, 0],
                                                                           ctx.task.inputs[:, 1]]
        return patched_answers(ckpt, ctx, hook, {"restricted": restricted})["restricted"]

    return ctx.memo_step(("restricted", key_rule, key_threshold, reference, convention), ckpt.index, compute)


def _losses(ckpt: "Checkpoint", ctx: "Context", logits: dict[str, Any], split: str) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    idx = {"train": ctx.split.train, "val": ctx.split.val, "all": np.arange(ctx.task.n_samples)}[split]
    if len(idx) == 0:
        raise ProbeError(f"the {split} split is empty", param="loss_split")
    sel = torch.as_tensor(idx, device=ctx.device)
    y = torch.as_tensor(ctx.task.labels, device=ctx.device)[sel]
    return {name: float(F.cross_entropy(v[sel], y)) for name, v in logits.items()}


@metric("restricted_loss", "loss with the neurons restricted to their key-frequency components (Nanda et al. "
        "Sec. 5.1, float64 CE; default: their definition on the test split)",
        needs=("forward", "split"), direction="lower",
        params=(KEY_RULE, KEY_THRESHOLD, REFERENCE, RESTRICTED, LOSS_SPLIT), applies=modular_add_grid,
        applies_config=last_position_readout, needs_for=_key_needs)
def restricted_loss(ckpt: "Checkpoint", ctx: "Context", key_rule: str, key_threshold: float | None,
                    reference: str, convention: str, loss_split: str | None) -> dict[str, float]:
    split = loss_split or "val"
    ctx.note(f"restricted loss: {convention} convention, on the {split} split")
    logits = {"restricted": _restricted_logits(ckpt, ctx, key_rule, key_threshold, reference, convention),
              "full": _full_logits(ckpt, ctx)}
    r = _losses(ckpt, ctx, logits, split)
    return {"restricted_loss": r["restricted"], "restricted_loss_full": r["full"]}


@metric("excluded_loss", "loss with the key-frequency directions cos/sin(w_k(a+b)) removed from the neurons, "
        "run through the rest of the network (Nanda et al. Sec. 5.1; float64 CE; default: train split)",
        needs=("forward", "split"), direction="higher",
        params=(KEY_RULE, KEY_THRESHOLD, REFERENCE, LOSS_SPLIT), applies=modular_add_grid,
        applies_config=last_position_readout, needs_for=_key_needs)
def excluded_loss(ckpt: "Checkpoint", ctx: "Context", key_rule: str, key_threshold: float | None,
                  reference: str, loss_split: str | None) -> dict[str, float]:
    split = loss_split or "train"
    key_freqs_of(ctx, key_rule, key_threshold, reference)  # (memoised; files the key-frequency note here too)
    ctx.note(f"excluded loss on the {split} split")
    logits = {"excluded": _excluded_logits(ckpt, ctx, key_rule, key_threshold, reference),
              "full": _full_logits(ckpt, ctx)}
    r = _losses(ckpt, ctx, logits, split)
    return {"excluded_loss": r["excluded"], "excluded_loss_full": r["full"]}
