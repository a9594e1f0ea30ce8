"""Registered parallelogram metrics: RQI (embeddings, matrices, hooks, circular), Acc-hat, the
Alexander bound and the effective-theory quantities (Liu et al. 2022, Sec. 3, App. C-E, H)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from probe.analyses import parallelograms as pg
from probe.analyses.applies import abelian, modular_add, table_task
from probe.analyses.effective import effective_theory
from probe.analyses.passes import check_position, hook_activations
from probe.analyses.registry import Param, metric, positive
from probe.analyses.families.fourier import REFERENCE
from probe.analyses.representations import circular_residuals, plane_of, symbol_angles
from probe.errors import ProbeError

if TYPE_CHECKING:
    from probe.analyses.context import Context
    from probe.run import Checkpoint

MODULAR_NOTE = ("modular task: with sum aggregation the relations E_i + E_j = E_m + E_n for i + j = m + n "
                "(mod p) admit only the collapsed solution, so Euclidean parallelograms on raw embeddings "
                "measure little and the Alexander bound is vacuous; use rqi_circular or rqi --hook")


DELTA = Param("delta", float, 0.01, "parallelogram tolerance delta (Liu App. E uses 0.01)", check=positive)
CONVENTION = Param("convention", str, "liu", "normalisation and test: 'liu' (paper, default) or "
                   "'grokking-squared' (per-dimension std, mean squared residual < delta)",
                   choices=pg.CONVENTIONS)
HOOK = Param("hook", str, None, "TransformerLens hook to read activations h(a,b) at, or 'logits' for the readout "
             "through the unembedding (default: the embeddings)")
TEST = Param("test", str, None, "which parallelograms count: 'delta' (|v_s - v_t| <= delta on normalised vectors, "
             "Liu eq. 2; the default on embeddings) or 'auc' (threshold-free: RQI is the probability that a "
             "parallelogram's two samples are closer than two samples with different results; a parallelogram "
             "counts as formed when closer than a share 1 - delta of them; the default at a hook)",
             choices=("delta", "auc"))
POSITION = Param("position", int, -1, "token position of transformer activations (default: the last)")


def _hook_needs(params: dict[str, Any]) -> frozenset[str]:
    return frozenset({"forward"}) if params.get("hook") else frozenset()


# --------------------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------------------
def p0_of(ctx: Context) -> pg.Parallelograms:
    """The permissible parallelogram set P0 of the series' task, built once per series."""
    return ctx.memo("p0", lambda: pg.Parallelograms.from_labels(ctx.task.labels))


@dataclass(frozen=True)
class Formed:
    """Which parallelograms a checkpoint forms under the chosen test, and the RQI that goes with it."""

    rqi: float
    count: int
    total: int
    mask: Callable[[], np.ndarray]  # over P0, computed on demand (Acc-hat, violations)


def resolve_test(test: str | None, hook: str | None) -> str:
    return test or ("auc" if hook else "delta")


def formed(ckpt: Checkpoint, ctx: Context, delta: float, convention: str = "liu", hook: str | None = None,
           position: int = -1, test: str | None = None) -> Formed:
    """The parallelograms of this checkpoint's representation (embeddings, or activations at ``hook``)
    under ``test`` (docs/design.md, "RQI at a hook"); shared by rqi and acc_hat at one checkpoint."""
    test = resolve_test(test, hook)
    key = ("formed", delta, convention, hook, position, test)
    out = ctx.memo_step(key, ckpt.index, lambda: _formed(ckpt, ctx, delta, convention, hook, position, test))
    if test == "auc":
        ctx.note(f"threshold-free test: RQI = P(two samples of a parallelogram are closer than two samples with "
                 f"different results); a parallelogram counts as formed when closer than {1 - delta:g} of those pairs")
    return out


def _representation(ckpt: Checkpoint, ctx: Context, convention: str, hook: str | None,
                    position: int) -> tuple[pg.PairDistances, bool, Callable[[], np.ndarray]]:
    """Squared distances over ``P0`` for this checkpoint's representation (embeddings, or normalised
    activations at ``hook``), whether the test is grokking-squared's mean-square one, and the
    per-sample vectors on demand (the threshold-free test ranks against them)."""
    if not hook:
        check_position(ctx, position)
    p0 = p0_of(ctx)
    if hook:
        if convention != "liu":
            raise ProbeError("--convention grokking-squared applies to embeddings, not to --hook activations")
        acts = pg.normalize_activations(hook_activations(ckpt, ctx, hook, position))
        return pg.pair_distances(acts, p0), False, lambda: acts
    if ctx.task.modulus:
        ctx.note(MODULAR_NOTE)
    norm = pg.normalize(ckpt.embeddings(), convention)
    mean_square = convention == "grokking-squared"
    if norm.ndim == 2:  # sum aggregation: distances from the symbol Gram matrix
        dist = pg.pair_distances_sum(norm, ctx.task.inputs, p0, device=ctx.array_device)
        return dist, mean_square, lambda: pg.sample_vectors(norm, ctx.task.inputs)
    vectors = pg.sample_vectors(norm, ctx.task.inputs)
    return pg.pair_distances(vectors, p0), mean_square, lambda: vectors


def _formed(ckpt: Checkpoint, ctx: Context, delta: float, convention: str, hook: str | None,
            position: int, test: str) -> Formed:
    if test == "delta" and not hook and ckpt.embeddings().ndim == 2 and ctx.array_device is None:
        # sum aggregation on the CPU: the count in one pass that keeps no distance; the mask (Acc-hat,
        # violations) from the distances when asked for
        check_position(ctx, position)
        if ctx.task.modulus:
            ctx.note(MODULAR_NOTE)
        p0 = p0_of(ctx)
        norm = pg.normalize(ckpt.embeddings(), convention)
        mean_square = convention == "grokking-squared"
        count = pg.count_sum(norm, ctx.task.inputs, p0, delta, mean_square)
        total = len(p0)
        return Formed(count / total, count, total,
                      lambda: pg.pair_distances_sum(norm, ctx.task.inputs, p0).within(delta, mean_square))
    dist, mean_square, vectors = _representation(ckpt, ctx, convention, hook, position)
    if test == "delta":
        if hook:
            ctx.note("hook activations normalised over samples by sigma_h / sqrt(2) (equals Liu's embedding "
                     "normalisation for h = E_a + E_b over the full ordered table); |h_s - h_t| <= delta")
        count = dist.count(delta, mean_square)
        return Formed(count / dist.total, count, dist.total, lambda: dist.within(delta, mean_square))
    between = pg.between_distances(vectors(), ctx.task.labels)
    d2 = dist.d2 if dist.expand is None else dist.d2[dist.expand]
    scores = pg.rank_scores(d2, between)
    mask = scores >= 1.0 - delta
    return Formed(float(scores.mean()), int(mask.sum()), dist.total, lambda: mask)


def distances(ckpt: Checkpoint, ctx: Context, convention: str = "liu", hook: str | None = None,
              position: int = -1) -> tuple[pg.PairDistances, bool]:
    """Squared distances over ``P0`` for this checkpoint's representation under the delta test."""
    dist, mean_square, _ = _representation(ckpt, ctx, convention, hook, position)
    return dist, mean_square


def formed_mask(ckpt: Checkpoint, ctx: Context, delta: float, convention: str = "liu",
                hook: str | None = None, position: int = -1, test: str | None = None) -> np.ndarray:
    return formed(ckpt, ctx, delta, convention, hook, position, test).mask()


def _require_p0(ctx: Context) -> None:
    if len(p0_of(ctx)) == 0:
        raise ProbeError(f"task {ctx.task.describe()} has no parallelograms (no two samples share a label)")


def alexander_bound(ctx: Context) -> pg.AlexanderBound:
    def make() -> pg.AlexanderBound:
        return pg.alexander(ctx.task.inputs, p0_of(ctx), ctx.split.train, ctx.split.val, ctx.task.n_symbols)

    if ctx.task.modulus:
        ctx.note(MODULAR_NOTE)
    return ctx.memo("alexander", make)


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------
@metric("rqi", "representation quality index |P(R)|/|P0| (Liu eq. 3; matrix embeddings: product parallelograms); "
        "--hook for activations (threshold-free by default there)", needs=("embeddings",),
        direction="higher", params=(DELTA, CONVENTION, HOOK, POSITION, TEST), applies=table_task,
        needs_for=_hook_needs)
def rqi(ckpt: Checkpoint, ctx: Context, delta: float, convention: str, hook: str | None,
        position: int, test: str | None) -> dict[str, float]:
    _require_p0(ctx)
    f = formed(ckpt, ctx, delta, convention, hook, position, test)
    return {"rqi": f.rqi, "parallelograms": float(f.count)}


def _delta_grid(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in str(text).split(","))
    except ValueError:
        raise ProbeError(f"--deltas: expected comma-separated numbers, got {text!r}") from None
    if not values or any(not (np.isfinite(v) and v > 0) for v in values):
        raise ProbeError(f"--deltas: every delta must be a positive number, got {text!r}")
    return values


DELTAS = Param("deltas", str, "0.001,0.002,0.005,0.01,0.02,0.05,0.1,0.2,0.5,1",
               "comma-separated deltas for rqi_curve",
               check=lambda t: None if _delta_grid(t) else "no deltas")


@metric("rqi_curve", "RQI as a function of delta (removes the arbitrariness of one threshold)",
        needs=("embeddings",), direction="higher",
        params=(DELTAS, CONVENTION, HOOK, POSITION), applies=table_task, needs_for=_hook_needs)
def rqi_curve(ckpt: Checkpoint, ctx: Context, deltas: str, convention: str, hook: str | None,
              position: int) -> dict[str, float]:
    _require_p0(ctx)
    dist, mean_square = distances(ckpt, ctx, convention, hook, position)  # once, for every delta
    return {f"rqi@{d:g}": dist.count(d, mean_square) / dist.total for d in _delta_grid(deltas)}


PLANE = Param("plane", str, "freq", "plane of the angles: 'freq' (the cos/sin components of a frequency of the "
              "embeddings) or 'pca' (the top two principal axes); taken at the reference checkpoint and kept for "
              "the whole series", choices=("freq", "pca"))
FREQ = Param("freq", int, None, "frequency k of the plane, 1..(p-1)/2 (default: the largest Fourier norm of the "
             "embeddings at the reference checkpoint)", check=lambda k: None if k >= 1 else "must be >= 1")
CIRC_DELTA = Param("circ_delta", float, round(np.pi / 10, 4), "angular tolerance in radians (default pi/10; "
                   "chance level circ_delta / pi = 0.1)", check=positive)


@metric("rqi_circular", "fraction of P0 that are circular parallelograms: theta_i + theta_j - theta_m - "
        "theta_n = 0 (mod 2 pi) within circ_delta, angles read on one plane for the whole series after an affine "
        "normalisation of the plane (Liu App. H, 2x2 rotations)",
        needs=("embeddings",), direction="higher",
        params=(CIRC_DELTA, PLANE, FREQ, REFERENCE), applies=modular_add)
def rqi_circular(ckpt: Checkpoint, ctx: Context, circ_delta: float, plane: str, freq: int | None,
                 reference: str) -> dict[str, float]:
    _require_p0(ctx)
    p = int(ctx.task.modulus or 0)
    basis, k = ctx.memo(("circular_plane", plane, freq, reference),
                        lambda: plane_of(ctx.embeddings_at(reference), p, plane, freq))
    where = f"frequency {k}" if plane == "freq" else "top two principal axes"
    ctx.note(f"angles on the plane of the {where} of the embeddings at checkpoint {reference}, kept for every "
             f"checkpoint; the plane is whitened (affine-invariant); chance level {circ_delta / np.pi:.3f}")
    theta, _ = symbol_angles(ckpt.embeddings(), p, plane, k, basis=basis)
    p0 = p0_of(ctx)
    r = circular_residuals(theta, ctx.task.inputs, p0.first, p0.second)
    return {"rqi_circular": float((np.abs(r) <= circ_delta).mean()), "plane_freq": float(k)}


@metric("acc_hat", "predicted accuracy |D-bar|/|D0| from the parallelograms formed (Liu App. D eq. 13), "
        "and its test-only variant", needs=("embeddings", "split"),
        direction="higher", params=(DELTA, CONVENTION, HOOK, POSITION, TEST), applies=table_task,
        needs_for=_hook_needs)
def acc_hat(ckpt: Checkpoint, ctx: Context, delta: float, convention: str, hook: str | None,
            position: int, test: str | None) -> dict[str, float]:
    mask = formed_mask(ckpt, ctx, delta, convention, hook, position, test)
    test = pg.acc_hat(p0_of(ctx), mask, ctx.split.train, ctx.split.val) if len(ctx.split.val) else float("nan")
    return {"acc_hat": pg.acc_hat(p0_of(ctx), mask, ctx.split.train), "acc_hat_test": test}


@metric("rqi_bar", "Alexander-principle upper bound on RQI, |P(D)|/|P0| (Liu App. E eq. 16); split only",
        needs=("split",), scope="split", direction="higher", applies=abelian)
def rqi_bar(ckpt: None, ctx: Context) -> dict[str, float]:
    _require_p0(ctx)
    b = alexander_bound(ctx)
    return {"rqi_bar": b.rqi_bar, "implied_parallelograms": float(b.implied.sum()),
            "explicit_parallelograms": float(b.explicit.sum())}


@metric("acc_bar", "Alexander-principle upper bound on Acc-hat (Liu App. E eq. 17), all and test-only; "
        "split only", needs=("split",), scope="split", direction="higher",
        applies=abelian)
def acc_bar(ckpt: None, ctx: Context) -> dict[str, float]:
    b = alexander_bound(ctx)
    return {"acc_bar": b.acc_bar, "acc_bar_test": b.acc_bar_test}


@metric("alexander_violations", "parallelograms formed at a checkpoint that the training data do not "
        "imply (not in P(D), Liu App. E eq. 15)", needs=("embeddings", "split"),
        direction="lower", params=(DELTA, CONVENTION), applies=abelian)
def alexander_violations(ckpt: Checkpoint, ctx: Context, delta: float, convention: str) -> dict[str, float]:
    _require_p0(ctx)
    b = alexander_bound(ctx)
    mask = formed_mask(ckpt, ctx, delta, convention)
    return {"alexander_violations": float(np.sum(mask & ~b.implied))}


@metric("dof", "degrees of freedom of the ground states: nullity of A(P0(D)); 2 = unique linear "
        "representation (Liu Sec. 3.2); split only", needs=("split",),
        scope="split", applies=abelian)
def dof(ckpt: None, ctx: Context) -> dict[str, float]:
    if ctx.task.modulus:
        ctx.note(MODULAR_NOTE)
    th = ctx.memo("effective", lambda: effective_theory(ctx.task, ctx.split.train, p0_of(ctx)))
    return {"dof": float(th.dof)}


ETA = Param("eta", float, None, "embedding learning rate for the grokking timescale (default: the run's embed_lr, "
            "else lr)", check=positive)


@metric("lambda3", "grokking rate: third-smallest eigenvalue of H = A_D^T A_D, and the timescale n_h = "
        "1/(lambda3 eta) in steps (Liu Sec. 3.2; about 3 n_h steps to converge in their toy runs); split only",
        needs=("split",), scope="split", direction="higher", params=(ETA,),
        applies=abelian)
def lambda3(ckpt: None, ctx: Context, eta: float | None) -> dict[str, float]:
    if ctx.task.modulus:
        ctx.note(MODULAR_NOTE)
    th = ctx.memo("effective", lambda: effective_theory(ctx.task, ctx.split.train, p0_of(ctx)))
    rate = eta if eta is not None else ctx.embed_lr
    if rate is None:
        raise ProbeError("lambda3: give --eta (the embedding learning rate) for plain arrays")
    ctx.note(f"grokking_timescale n_h = 1/(lambda3 eta) with eta = {rate:g}: the e-folding time of the slowest "
             "component under gradient flow of the effective loss (Liu Sec. 3.2), a timescale and not the step of "
             "generalisation; Liu et al. see convergence after about 3 n_h steps, and Adam-trained networks "
             "with a decoder follow it only up to a factor (compare with probe theory effective-dynamics' fit)")
    n_h = th.timescale_steps(rate)
    return {"lambda3": th.lambda3, "grokking_timescale": n_h, "grokking_timescale_x3": 3.0 * n_h}
