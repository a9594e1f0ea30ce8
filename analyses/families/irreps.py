"""Registered representation-theory metrics for finite groups (Chughtai, Chan and Nanda 2023, "A toy
model of universality"): the norm of the embeddings and the unembedding in each irreducible
representation (Sec. 5.2), key irreps by a declared rule, and the share of the logit variance each
irrep's character explains (Sec. 5.1). The maths is in :mod:`probe.analyses.irreps`.

They apply to tasks whose table is a group's Cayley table (``group``, ``perm``, and ``add``, the
cyclic group ``Z_p``, where the irreps are Nanda et al.'s Fourier frequencies) of order at most
:data:`probe.analyses.irreps.MAX_ORDER`. ``irrep_norms`` reads saved weights only and, over a chunk of
checkpoints, reads the unembedding once for the chunk (``batch_fn``), with the per-checkpoint form's
numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from probe.analyses import irreps as ir
from probe.analyses.applies import classification, group_task, group_task_grid
from probe.analyses.families.fourier import REFERENCE
from probe.analyses.passes import answers
from probe.analyses.registry import Param, fraction, metric
from probe.errors import ProbeError

if TYPE_CHECKING:
    from probe.analyses.context import Context
    from probe.run import Checkpoint


def _irreps(ctx: "Context") -> ir.Irreps:
    rec = ctx.memo("irreps", lambda: ir.irreps(ctx.task.table))
    ctx.note(f"irreducible representations (label: dimension, type): {rec.describe()}")
    if ctx.task.modulus is not None and ctx.task.name == "add":
        last = rec.labels[-1]
        ctx.note(f"Z_{ctx.task.modulus}: labels {rec.labels[1]}..{last} are Fourier frequencies "
                 f"1..{len(rec.labels) - 1} in order (cos k, sin k)")
    return rec


def _basis(ctx: "Context") -> ir.Basis:
    return ctx.memo("irrep_basis", lambda: ir.irrep_basis(ctx.task.table))


# irrep_norms -------------------------------------------------------------------------------------------
PARTS = Param("irrep_parts", str, None, "which of embed, unembed irrep_norms reports (comma list; default: both "
              "where the run has one unembedding column per class, else embed)")


def _unembed_problem(ctx: "Context") -> str | None:
    """Why the run has no per-class unembedding to decompose (None: it has one)."""
    cfg = ctx.config
    if cfg is None:
        return "plain arrays have no unembedding"
    if cfg.model.objective == "mse_targets":
        return "this run regresses onto random target vectors, so its outputs are not one per class"
    if cfg.model.unembed_param not in ctx.source.tensor_names:
        return f"this run did not save {cfg.model.unembed_param} (checkpoint.tensors)"
    return None


def _parts(ctx: "Context", irrep_parts: str | None) -> tuple[bool, bool]:
    if irrep_parts is None:
        problem = _unembed_problem(ctx)
        if problem:
            ctx.note(f"embedding norms only: {problem}")
        return True, problem is None
    wanted = [x.strip() for x in irrep_parts.split(",") if x.strip()]
    if not wanted or any(x not in ("embed", "unembed") for x in wanted):
        raise ProbeError(f"{irrep_parts!r}; valid parts: embed, unembed", param="irrep_parts")
    if "unembed" in wanted:
        problem = _unembed_problem(ctx)
        if problem:
            raise ProbeError(f"no unembedding to decompose: {problem}", param="irrep_parts")
    return "embed" in wanted, "unembed" in wanted


def norm_rows(labels: tuple[str, ...], basis: ir.Basis, embed: np.ndarray | None,
              unembed: np.ndarray | None) -> list[dict[str, float]]:
    """Rows of :func:`irrep_norms` for weights stacked over checkpoints: ``embed [k, |G|, d]`` and
    ``unembed [k, d, |G|]`` (either may be None)."""
    parts = {}
    if embed is not None:
        flat = embed.reshape(embed.shape[0], embed.shape[1], -1)  # matrix embeddings: k^2 numbers each
        parts["embed"] = ir.irrep_norms_of(flat, basis, axis=-2)
    if unembed is not None:
        parts["unembed"] = ir.irrep_norms_of(unembed, basis, axis=-1)
    k = next(iter(parts.values())).shape[0]
    return [{f"irrep_norm_{part}_{lab}": float(v[j, i]) for part, v in parts.items() for i, lab in enumerate(labels)}
            for j in range(k)]


def _irrep_norms_batch(ckpts: list["Checkpoint"], ctx: "Context", irrep_parts: str | None) -> list[dict[str, float]]:
    rec = _irreps(ctx)
    use_embed, use_unembed = _parts(ctx, irrep_parts)
    embed = np.stack([c.embeddings() for c in ckpts]) if use_embed else None
    unembed = None
    if use_unembed:
        assert ctx.config is not None
        unembed = ctx.source.read_series(np.array([c.index for c in ckpts], dtype=np.int64),
                                         ctx.config.model.unembed_param)
        if unembed.ndim != 3 or unembed.shape[2] != rec.order:
            raise ProbeError(f"the unembedding {ctx.config.model.unembed_param} has shape {unembed.shape[1:]}; "
                             f"irrep norms need one column per group element ({rec.order})", param="irrep_parts")
    return norm_rows(rec.labels, _basis(ctx), embed, unembed)


def _norm_needs(params: dict[str, Any]) -> frozenset[str]:
    return frozenset({"weights"}) if "unembed" in (params.get("irrep_parts") or "") else frozenset()


@metric("irrep_norms", "norm of W_E (rows: group elements) and of W_U (columns: classes) in each irreducible "
        "representation's subspace of R^G (Chughtai et al. Sec. 5.2): columns irrep_norm_embed_<irrep>, "
        "irrep_norm_unembed_<irrep>", needs=("embeddings",), params=(PARTS,), applies=group_task,
        needs_for=_norm_needs, batch_fn=_irrep_norms_batch)
def irrep_norms(ckpt: "Checkpoint", ctx: "Context", irrep_parts: str | None) -> dict[str, float]:
    return _irrep_norms_batch([ckpt], ctx, irrep_parts)[0]


# key_irreps --------------------------------------------------------------------------------------------
KEY_RULE = Param("irrep_rule", str, "energy", "key-irrep rule: 'energy' (share of W_E's squared norm beyond the "
                 "trivial irrep above what Gaussian random weights reach at family-wise level irrep_threshold; "
                 "scales with each irrep's dimension), 'share' (share >= irrep_threshold, a fixed cut) or 'logit' "
                 "(Chughtai et al.'s code: cosine similarity of the logits with the irrep's character > "
                 "irrep_threshold)", choices=ir.KEY_RULES)
KEY_THRESHOLD = Param("irrep_threshold", float, None, "threshold of the key-irrep rule (default: energy 1e-6, share "
                      "0.05, logit 0.005)", check=fraction)


def logit_cube(ckpt: "Checkpoint", ctx: "Context") -> np.ndarray:
    """The model's logits ``[a, b, c]`` over every ordered pair, from the forward pass shared by every
    metric (:func:`probe.analyses.passes.answers`)."""
    n = ctx.task.n_symbols
    out = answers(ckpt, ctx)
    if out.shape[1] != n:
        raise ProbeError(f"the model has {out.shape[1]} outputs; logits per group element need {n}")
    cube = np.empty((n, n, n))
    cube[ctx.task.inputs[:, 0], ctx.task.inputs[:, 1]] = out
    return cube


def key_irreps_of(ctx: "Context", rule: str, threshold: float | None, reference: str) -> list[str]:
    """Key irreps of the series, chosen once at ``reference`` by ``rule`` and noted with the result."""
    level = ir.KEY_DEFAULTS[rule] if threshold is None else threshold
    rec = _irreps(ctx)

    def choose() -> list[str]:
        if rule == "logit":
            for check in (group_task_grid(ctx.task), classification(ctx.config) if ctx.config is not None
                          else "plain arrays have no logits"):
                if check:
                    raise ProbeError(f"the logit rule: {check}", param="irrep_rule")
            sims = ir.logit_character_similarity(logit_cube(ctx.checkpoint_at(reference), ctx), ctx.task.table)
            return ir.key_irreps(sims, rec.labels, "logit", level)
        emb = ctx.embeddings_at(reference)
        emb = emb.reshape(emb.shape[0], -1)
        norms = ir.irrep_norms_of(emb, _basis(ctx))
        return ir.key_irreps(norms, rec.labels, rule, level, sizes=rec.block_sizes, width=emb.shape[1])

    keys = ctx.memo(("key_irreps", rule, level, reference), choose)
    what = {"energy": f"share of W_E's squared norm beyond the trivial irrep above Gaussian noise at level {level:g}",
            "share": f"share of W_E's squared norm beyond the trivial irrep >= {level:g}",
            "logit": f"cosine similarity of the logits with the character chi(a b c^-1) > {level:g} "
                     "(Chughtai et al.'s rule)"}[rule]
    ctx.note(f"key irreps [{', '.join(keys)}]: {what}, at checkpoint {reference}")
    return keys


def _key_needs(params: dict[str, Any]) -> frozenset[str]:
    return frozenset({"forward"}) if params.get("irrep_rule") == "logit" else frozenset()


@metric("key_irreps", "key irreducible representations by a declared rule (default: W_E's squared norm beyond the "
        "trivial irrep above Gaussian noise, per irrep dimension), chosen at a reference checkpoint (default: the "
        "final one) and stored with the result", needs=("embeddings",), params=(KEY_RULE, KEY_THRESHOLD, REFERENCE),
        applies=group_task, needs_for=_key_needs)
def key_irreps(ckpt: "Checkpoint", ctx: "Context", irrep_rule: str, irrep_threshold: float | None,
               reference: str) -> dict[str, Any]:
    keys = key_irreps_of(ctx, irrep_rule, irrep_threshold, reference)
    return {"key_irreps": ",".join(keys), "n_key_irreps": float(len(keys))}


# irrep_logit_share ------------------------------------------------------------------------------------
PROJECTION = Param("logit_projection", str, "character", "how logits are split by irrep: 'character' (Chughtai et "
                   "al. Sec. 5.1: squared cosine similarity with chi(a b c^-1)) or 'output' (the logits as functions "
                   "of the output c projected onto each irrep's subspace; the shares add up to 1)",
                   choices=ir.PROJECTIONS)


@metric("irrep_logit_share", "share of the logit variance (centred over the output c) each non-trivial irrep "
        "explains: by default the squared cosine similarity with its character chi(a b c^-1) (Chughtai et al. Sec. "
        "5.1); columns irrep_logit_share_<irrep> and their sum irrep_logit_fve", needs=("forward",),
        direction="higher", params=(PROJECTION,), applies=group_task_grid, applies_config=classification)
def irrep_logit_share(ckpt: "Checkpoint", ctx: "Context", logit_projection: str) -> dict[str, float]:
    rec = _irreps(ctx)
    shares = ir.logit_variance_share(logit_cube(ckpt, ctx), ctx.task.table, logit_projection)
    if logit_projection == "output":
        ctx.note("logit shares: the logits as functions of the output c, projected onto each irrep's subspace")
    else:
        ctx.note("logit shares: squared cosine similarity with each irrep's character chi(a b c^-1) "
                 "(Chughtai et al. Sec. 5.1)")
    out = {f"irrep_logit_share_{lab}": float(s) for lab, s in zip(rec.labels[1:], shares[1:])}
    out["irrep_logit_fve"] = float(np.sum(shares[1:]))
    return out
