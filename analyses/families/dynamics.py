"""Registered training-dynamics metrics: parameter norms, weight spectra, efficiency (Varma et al.),
softmax collapse (Prieto et al. 2025) and the local learning coefficient (devinterp).

The norms and spectra read the saved weights only (no forward pass); for a chunk of checkpoints they
read each tensor once for the whole chunk (``batch_fn``), with the same results as the per-checkpoint
form. Efficiency and the collapse fractions use the forward pass over every sample that the runner
shares between metrics (:func:`probe.analyses.passes.answers`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from probe.analyses import dynamics as dyn
from probe.analyses.applies import classification
from probe.analyses.passes import answers
from probe.analyses.registry import Param, metric, positive
from probe.errors import ProbeError

if TYPE_CHECKING:
    from probe.analyses.context import Context
    from probe.run import Checkpoint

Weights = dict[str, np.ndarray]


# weights ----------------------------------------------------------------------------------------------
def _names(ctx: "Context") -> list[str]:
    names = ctx.source.tensor_names
    if not names:
        raise ProbeError("the run saved no parameter tensors")
    return names


def _weights_of(ckpt: "Checkpoint", ctx: "Context") -> Weights:
    """Every saved tensor at ``ckpt`` (float64): from the chunk the batched metrics read, else read."""
    held = ctx.cache.get("weights_chunk")
    if held is not None and ckpt.index in held[0]:
        j = held[0].index(ckpt.index)
        return {n: v[j] for n, v in held[1].items()}
    return ctx.memo_step("weights", ckpt.index, lambda: {n: ckpt.tensor(n) for n in _names(ctx)})


def _chunk_weights(ckpts: list["Checkpoint"], ctx: "Context") -> Weights:
    """Every saved tensor at a chunk of checkpoints, ``{name: [k, *shape]}``, read once per chunk."""
    key = [c.index for c in ckpts]
    held = ctx.cache.get("weights_chunk")
    if held is None or held[0] != key:
        idx = np.asarray(key, dtype=np.int64)
        held = (key, {n: ctx.source.read_series(idx, n) for n in _names(ctx)})
        ctx.cache["weights_chunk"] = held
    return held[1]


def _initial(ctx: "Context") -> Weights:
    def read() -> Weights:
        first = ctx.checkpoint_at("first")
        if first.step != 0:
            ctx.note(f"distance from initialisation is measured from the first checkpoint, step {first.step}")
        return {n: first.tensor(n) for n in _names(ctx)}

    return ctx.memo("initial_weights", read)


def norm_rows(w: Weights, init: Weights, embed: str | None, last: str) -> list[dict[str, float]]:
    """Rows of :func:`param_norm` for tensors stacked over checkpoints (``{name: [k, *shape]}``)."""
    sq = {n: (v.reshape(v.shape[0], -1) ** 2).sum(axis=1) for n, v in w.items()}
    dist = sum(((v - init[n][None]).reshape(v.shape[0], -1) ** 2).sum(axis=1) for n, v in w.items())
    k = next(iter(w.values())).shape[0]
    rows = []
    for j in range(k):
        row = {"norm_total": float(np.sqrt(sum(s[j] for s in sq.values())))}
        if embed is not None and embed in sq:
            row["norm_embed"] = float(np.sqrt(sq[embed][j]))
            row["norm_rest"] = float(np.sqrt(sum(s[j] for n, s in sq.items() if n != embed)))
        if last in sq:
            row["norm_last"] = float(np.sqrt(sq[last][j]))
        row["dist_init"] = float(np.sqrt(dist[j]))
        row.update({f"norm.{n}": float(np.sqrt(s[j])) for n, s in sq.items()})
        rows.append(row)
    return rows


def _norm_setup(ctx: "Context") -> tuple[str | None, str]:
    cfg = ctx.config
    assert cfg is not None
    names = _names(ctx)
    if len(names) < len(ctx.source.parameters):
        ctx.note(f"the run saved {len(names)} of its parameters (checkpoint.tensors); norms cover those")
    return cfg.model.embed_param, cfg.model.unembed_param


def _param_norm_batch(ckpts: list["Checkpoint"], ctx: "Context") -> list[dict[str, float]]:
    embed, last = _norm_setup(ctx)
    return norm_rows(_chunk_weights(ckpts, ctx), _initial(ctx), embed, last)


@metric("param_norm", "L2 norms of the weights: total, per optimizer group (norm_embed: the symbol embeddings; "
        "norm_rest), per tensor (norm.<name>), the last layer's (norm_last: the unembedding, Thilak et al.'s "
        "slingshot signal) and the distance from initialisation (dist_init)", needs=("weights",),
        direction="none", batch_fn=_param_norm_batch)
def param_norm(ckpt: "Checkpoint", ctx: "Context") -> dict[str, float]:
    embed, last = _norm_setup(ctx)
    w = {n: v[None] for n, v in _weights_of(ckpt, ctx).items()}
    return norm_rows(w, _initial(ctx), embed, last)[0]


ZERO_TOL = Param("zero_tol", float, 1e-3, "weights with |w| below this count as near zero", check=positive)


def spectrum_rows(w: Weights, zero_tol: float) -> list[dict[str, float]]:
    """Rows of :func:`weight_spectrum` for tensors stacked over checkpoints."""
    k = next(iter(w.values())).shape[0]
    rows: list[dict[str, float]] = [{} for _ in range(k)]
    for name, v in w.items():
        mats = [dyn.matrix_view(name, v[j]) for j in range(k)]
        if mats[0] is None:
            continue
        s = dyn.fast_singular_values(np.stack(mats))
        cols = {"erank": dyn.effective_rank(s), "srank": dyn.stable_rank(s), "nuclear": dyn.nuclear_norm(s),
                "zero_frac": dyn.near_zero_fraction(v, zero_tol)}
        for j in range(k):
            rows[j].update({f"{c}.{name}": float(vals[j]) for c, vals in cols.items()})
    if not rows[0]:
        raise ProbeError("the run saved no weight matrices")
    return rows


def _spectrum_batch(ckpts: list["Checkpoint"], ctx: "Context", zero_tol: float) -> list[dict[str, float]]:
    return spectrum_rows(_chunk_weights(ckpts, ctx), zero_tol)


@metric("weight_spectrum", "per weight matrix (per-head tensors joined over heads): effective rank (erank.<name>, "
        "exp of the entropy of the normalised singular values), stable rank (srank.<name>), nuclear norm "
        "(nuclear.<name>) and the share of near-zero weights (zero_frac.<name>)", needs=("weights",),
        params=(ZERO_TOL,), batch_fn=_spectrum_batch)
def weight_spectrum(ckpt: "Checkpoint", ctx: "Context", zero_tol: float) -> dict[str, float]:
    return spectrum_rows({n: v[None] for n, v in _weights_of(ckpt, ctx).items()}, zero_tol)[0]


# logits -----------------------------------------------------------------------------------------------
def _total_norm(ckpt: "Checkpoint", ctx: "Context") -> float:
    return float(np.sqrt(sum((v**2).sum() for v in _weights_of(ckpt, ctx).values())))


@metric("efficiency", "Varma et al.'s efficiency: the correct-class logit margin over the largest other logit "
        "(margin_train, margin_val) and over the mean of the others (margin_mean_*), mean over samples, and "
        "the margin per unit parameter norm (efficiency_train, efficiency_val)", needs=("forward", "weights"),
        direction="higher", applies_config=classification)
def efficiency(ckpt: "Checkpoint", ctx: "Context") -> dict[str, float]:
    out = answers(ckpt, ctx)
    labels = ctx.task.labels
    norm = _total_norm(ckpt, ctx)
    row: dict[str, float] = {}
    for part, idx in (("train", ctx.split.train), ("val", ctx.split.val)):
        if len(idx) == 0:
            row.update({f"margin_{part}": float("nan"), f"margin_mean_{part}": float("nan"),
                        f"efficiency_{part}": float("nan")})
            continue
        top, mean = dyn.logit_margins(out[idx], labels[idx])
        row[f"margin_{part}"] = float(top.mean())
        row[f"margin_mean_{part}"] = float(mean.mean())
        row[f"efficiency_{part}"] = float(top.mean() / norm) if norm > 0 else float("nan")
    return row


@metric("softmax_collapse", "Prieto et al.'s softmax collapse on the training samples, in the run's softmax and "
        "training precision: share whose loss is exactly zero (zero_loss_frac) and whose gradient is exactly "
        "zero (zero_grad_frac), and the cosine between the update direction -grad L and the weights "
        "(nlm_cos: 1 when training only scales the weights up, the naive loss minimisation direction)",
        needs=("forward", "weights"), direction="none",
        params=(Param("dtype", str, "run", "precision of the check: the run's softmax_dtype, float32 or float64",
                      choices=("run", "float32", "float64")),),
        applies_config=classification)
def softmax_collapse(ckpt: "Checkpoint", ctx: "Context", dtype: str) -> dict[str, float]:
    import torch

    cfg = ctx.config
    assert cfg is not None
    precision = cfg.softmax_dtype if dtype == "run" else dtype
    ctx.note(f"softmax collapse in {precision} through {cfg.softmax}")
    tr = ctx.split.train
    out = answers(ckpt, ctx)[tr]
    zero_loss, zero_grad = dyn.collapse_masks(out.astype(np.float32), ctx.task.labels[tr], precision, cfg.softmax)
    model = ckpt.model()
    params = [p for _, p in model.named_parameters()]
    x = ctx.model_inputs(model)[torch.as_tensor(tr, device=ctx.device)]
    y = torch.as_tensor(ctx.task.labels[tr], device=ctx.device)
    from probe.models.base import cross_entropy

    with torch.enable_grad():
        loss = cross_entropy(model.answer(x), y, cfg.softmax, getattr(torch, precision))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    g = np.concatenate([(torch.zeros_like(p) if gr is None else gr).detach().double().cpu().numpy().ravel()
                        for p, gr in zip(params, grads)])
    w = np.concatenate([p.detach().double().cpu().numpy().ravel() for p in params])
    return {"zero_loss_frac": float(zero_loss.mean()), "zero_grad_frac": float(zero_grad.mean()),
            "nlm_cos": dyn.cosine(-g, w)}


# local learning coefficient -------------------------------------------------------------------------------
LLC_PARAMS = (
    Param("llc_lr", float, 3e-4, "SGLD step size epsilon", check=positive),
    Param("llc_gamma", float, 300.0, "SGLD localization strength gamma (pull towards the checkpoint)",
          check=lambda x: None if x >= 0 else "must be >= 0"),
    Param("llc_nbeta", float, None, "SGLD inverse temperature n*beta [default: n / log n over the n training samples]",
          check=positive),
    Param("llc_chains", int, 4, "SGLD chains", check=lambda x: None if x >= 2 else "must be >= 2 (for r-hat)"),
    Param("llc_draws", int, 200, "SGLD draws per chain", check=lambda x: None if x >= 4 else "must be >= 4"),
    Param("llc_batch", int, 256, "SGLD minibatch size", check=lambda x: None if x >= 1 else "must be >= 1"),
    Param("llc_seed", int, 0, "SGLD seed", check=lambda x: None if x >= 0 else "must be >= 0"),
)


def rhat(traces: np.ndarray) -> float:
    """Gelman and Rubin's potential scale reduction of ``traces [chains, draws]``: close to 1 when the
    chains sample one distribution (NaN when every chain is constant)."""
    t = np.asarray(traces, dtype=np.float64)
    m, n = t.shape
    within = t.var(axis=1, ddof=1).mean()
    between = n * t.mean(axis=1).var(ddof=1)
    if within <= 0:
        return float("nan")
    return float(np.sqrt(((n - 1) / n * within + between / n) / within))


def _devinterp() -> object:
    try:
        from devinterp.slt.llc import llc as run_llc
    except ImportError:
        raise ProbeError("metric llc needs devinterp, which is not installed (pip install 'probe[llc]')") from None
    return run_llc


@metric("llc", "local learning coefficient at each checkpoint (Lau et al.; Hoogland et al.): devinterp's SGLD "
        "around the checkpoint on the training samples, llc = n*beta (mean sampled loss - loss there); with its "
        "spread over chains (llc_std), Gelman-Rubin r-hat of the chains' loss traces (llc_rhat), each chain's "
        "estimate (llc_chain<k>) and the loss traces' means over their first and last tenth", needs=("forward",),
        params=LLC_PARAMS)
def llc(ckpt: "Checkpoint", ctx: "Context", llc_lr: float, llc_gamma: float, llc_nbeta: float | None,
        llc_chains: int, llc_draws: int, llc_batch: int, llc_seed: int) -> dict[str, float]:
    import contextlib
    import logging
    import math
    import os
    import tempfile
    import warnings

    import torch

    run_llc = _devinterp()
    from datasets import Dataset

    model = ckpt.model()
    tr = ctx.split.train
    n = len(tr)
    if n < 2:
        raise ProbeError("the local learning coefficient needs at least two training samples")
    nbeta = llc_nbeta if llc_nbeta is not None else n / math.log(n)
    ctx.note(f"llc: SGLD on the {n} training samples, n*beta {nbeta:.4g}, eps {llc_lr:g}, gamma {llc_gamma:g}, "
             f"{llc_chains} chains x {llc_draws} draws, batch {llc_batch}, seed {llc_seed}")
    x = ctx.model_inputs(model)[torch.as_tensor(tr, device=ctx.device)]
    y = torch.as_tensor(ctx.task.labels[tr], device=ctx.device)

    class Sampled(torch.nn.Module):  # devinterp sees a plain module of the run's model
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, ids: "torch.Tensor") -> "torch.Tensor":
            return self.inner.answer(x[ids[:, 0].to(x.device)])

    def per_sample(m: torch.nn.Module, ids: "torch.Tensor") -> "torch.Tensor":
        out = m(ids)
        return m.inner.sample_losses(out, y[ids[:, 0].to(y.device)]).float()[:, None]

    ds = Dataset.from_dict({"input_ids": [[i, i] for i in range(n)]})
    ds.set_format("torch")
    wrapped = Sampled(model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        # devinterp draws a progress bar per chain; the runner's own bar counts checkpoints
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), open(os.devnull, "w") as null, \
                contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
            warnings.simplefilter("ignore")
            logging.getLogger("devinterp").setLevel(logging.ERROR)
            res = run_llc(wrapped, ds, observables={}, lr=llc_lr, n_beta=nbeta, localization=llc_gamma,
                          num_chains=llc_chains, num_draws=llc_draws, batch_size=min(llc_batch, n),
                          init_seed=llc_seed, device=str(ctx.device), num_init_loss_batches=max(1, math.ceil(n / llc_batch)),
                          loss_fn=per_sample, output_path=os.path.join(tmp, "samples.zarr"))
    finally:
        model.load_state_dict(state)  # the runner's model is shared: leave its weights as they were
    traces = np.asarray(res["loss_trace"].values, dtype=np.float64)
    tenth = max(1, traces.shape[1] // 10)
    row = {"llc": float(res["llc_mean"]), "llc_std": float(res["llc_std"]), "llc_rhat": rhat(traces),
           "llc_init_loss": float(res["init_loss"]), "llc_trace_first": float(traces[:, :tenth].mean()),
           "llc_trace_last": float(traces[:, -tenth:].mean())}
    row.update({f"llc_chain{k}": float(v) for k, v in enumerate(np.asarray(res["llc_per_chain"].values))})
    return row
