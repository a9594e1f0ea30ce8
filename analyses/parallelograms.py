"""Parallelograms, RQI, predicted accuracy and the Alexander bound (Liu et al. 2022).

Everything here is a pure function of arrays: a :class:`Parallelograms` set built from a task's
labels, and embeddings ``[n_symbols, d]`` (``[n_symbols, d, d]`` for matrix embeddings) or
activations ``[n_samples, d]``. No run on disk is needed, so the functions can be scripted on any
checkpoints.

Definitions (docs/design.md, "Metric definitions"; details in docs/metrics.md):

* ``P0`` (Liu eq. 1): unordered pairs of distinct samples ``{s, t}`` with the same label. The samples
  are the task's own (unordered pairs ``i <= j`` for Liu's non-modular addition).
* A pair is a delta-parallelogram of a representation when ``|v_s - v_t| <= delta`` (Liu Def. 1,
  eq. 2), with ``v_(a,b) = E~_a + E~_b`` for sum aggregation and ``E~_a E~_b`` (Frobenius norm) for
  matrix embeddings (App. H). RQI ``= |P(R)| / |P0|`` (eq. 3).
* ``Acc-hat`` (App. D, eqs. 12-13), ``P(D)``, ``RQI-bar`` and ``Acc-bar`` (App. E, eqs. 14-17).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np

from probe.errors import ProbeError, valid

Convention = Literal["liu", "grokking-squared"]
CONVENTIONS: tuple[str, ...] = ("liu", "grokking-squared")


# --------------------------------------------------------------------------------------------------
# the permissible parallelogram set P0
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Parallelograms:
    """``P0``: every unordered pair of distinct samples with equal labels, grouped by class.

    ``first[q]``, ``second[q]`` are sample indices (into the task's samples) of pair ``q``. Pairs are
    stored class by class in upper-triangle order, which is what lets :func:`formed` fill the mask
    from one Gram matrix per class. ``blocks`` lists, per class size ``n``, the classes of that size as
    ``(members [C, n], offset of each class's first pair [C])``.
    """

    first: np.ndarray  # [Q] int64
    second: np.ndarray  # [Q] int64
    n_samples: int
    blocks: tuple[tuple[np.ndarray, np.ndarray], ...] = field(repr=False)
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.first.shape[0])

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> "Parallelograms":
        labels = np.asarray(labels)
        order = np.argsort(labels, kind="stable")
        classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        pairs_per_class = counts * (counts - 1) // 2
        offsets = np.concatenate([[0], np.cumsum(pairs_per_class)[:-1]]).astype(np.int64)
        total = int(pairs_per_class.sum())
        first = np.empty(total, dtype=np.int64)
        second = np.empty(total, dtype=np.int64)
        blocks = []
        for n in np.unique(counts):
            if n < 2:
                continue
            which = np.flatnonzero(counts == n)
            members = np.stack([order[starts[c]: starts[c] + n] for c in which])  # [C, n]
            iu, ju = np.triu_indices(int(n), k=1)
            slots = offsets[which][:, None] + np.arange(iu.shape[0])[None, :]
            first[slots] = members[:, iu]
            second[slots] = members[:, ju]
            blocks.append((members, offsets[which]))
        return cls(first=first, second=second, n_samples=int(labels.shape[0]), blocks=tuple(blocks))

    def symbols(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Symbol indices ``(a, b, c, d)`` of every quadruple ``{(a, b), (c, d)}`` (memoised)."""
        key = id(inputs)
        if self._memo.get("symbols_key") != key:
            x = np.asarray(inputs)
            self._memo["symbols"] = (x[self.first, 0], x[self.first, 1], x[self.second, 0], x[self.second, 1])
            self._memo["symbols_key"] = key
        return self._memo["symbols"]

    def within(self, samples: np.ndarray) -> np.ndarray:
        """Mask of the pairs with both samples in ``samples`` (``P0(D)``, Liu eq. 1)."""
        inside = np.zeros(self.n_samples, dtype=bool)
        inside[np.asarray(samples)] = True
        return inside[self.first] & inside[self.second]


# --------------------------------------------------------------------------------------------------
# normalisation and the per-sample vectors
# --------------------------------------------------------------------------------------------------
def normalize(embeddings: np.ndarray, convention: Convention = "liu") -> np.ndarray:
    """Normalised embeddings (Liu Sec. 3.2): ``(E_k - mu) / sigma``, ``sigma^2 = mean_k |E_k - mu|^2``.

    ``grokking-squared``: each dimension divided by its own standard deviation over symbols
    (``ddof=1``, torch's default), as the grokking-squared code does.
    Matrix embeddings ``[n, d, d]`` are only rescaled (a translation would break the product
    structure): ``E / s`` with ``s^2 = mean_k |E_k|_F^2 / d``, so orthogonal matrices are unchanged.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim == 3:
        scale = np.sqrt(np.mean(np.sum(e * e, axis=(1, 2))) / e.shape[1])
        return e / _nonzero(scale, "matrix embeddings are all zero")
    if e.ndim != 2:
        raise ProbeError(f"embeddings must be [n_symbols, d] or [n_symbols, d, d], got shape {e.shape}")
    centred = e - e.mean(axis=0, keepdims=True)
    if convention == "grokking-squared":
        std = e.std(axis=0, ddof=1, keepdims=True)
        return centred / np.where(std > 0, std, 1.0)
    if convention != "liu":
        raise ProbeError(f"unknown RQI convention {convention!r}{valid(CONVENTIONS)}", param="convention")
    sigma = np.sqrt(np.mean(np.sum(centred * centred, axis=1)))
    return centred / _nonzero(sigma, "embeddings are all equal (sigma = 0); RQI is undefined")


def normalize_activations(acts: np.ndarray) -> np.ndarray:
    """Activations ``h(a, b)`` over samples, normalised so that ``h = E_a + E_b`` reproduces Liu.

    Centre over samples and divide by ``sigma_h / sqrt(2)``: over the full ordered table
    ``Var(E_a + E_b) = 2 Var(E)``, so this equals Liu's per-symbol normalisation exactly there.
    """
    h = np.asarray(acts, dtype=np.float64).reshape(acts.shape[0], -1)
    centred = h - h.mean(axis=0, keepdims=True)
    sigma = np.sqrt(np.mean(np.sum(centred * centred, axis=1)))
    return centred / _nonzero(sigma / np.sqrt(2.0), "activations are all equal (sigma = 0)")


def _nonzero(x: float, message: str) -> float:
    if not np.isfinite(x) or x <= 0:
        raise ProbeError(message)
    return float(x)


def sample_vectors(normalized: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """``v_(a,b)``: ``E~_a + E~_b`` (vectors) or ``E~_a E~_b`` flattened (matrices). ``[N, D]``."""
    a, b = inputs[:, 0], inputs[:, 1]
    if normalized.ndim == 3:
        return np.matmul(normalized[a], normalized[b]).reshape(len(a), -1)
    return normalized[a] + normalized[b]


# --------------------------------------------------------------------------------------------------
# which parallelograms a representation forms
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PairDistances:
    """Squared distances ``|v_s - v_t|^2`` over ``P0``, computed once and thresholded at any delta.

    ``d2`` comes from Gram matrices; ``scale`` (the sum of the magnitudes of the Gram terms it adds up:
    ``|v_s|^2 + |v_t|^2`` from the vectors' Gram matrix) bounds its rounding error (:func:`_slack`), and
    ``diff(q)`` recomputes the difference vectors of pairs ``q`` directly for the exact recheck.
    When several quadruples share one distance (sum aggregation is symmetric in the operands, see
    :meth:`Parallelograms.sum_classes`), ``d2`` holds one entry per distinct pair, ``expand`` maps every
    quadruple of ``P0`` to its entry and ``weight`` counts the quadruples of each entry.
    """

    d2: np.ndarray
    scale: np.ndarray
    dim: int
    diff: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    expand: np.ndarray | None = field(default=None, repr=False)
    weight: np.ndarray | None = field(default=None, repr=False)

    def _distinct(self, delta: float, mean_square: bool) -> np.ndarray:
        bound = delta * self.dim if mean_square else delta * delta
        slack = _slack(self.dim) * (self.scale + bound)
        mask = self.d2 < bound if mean_square else self.d2 <= bound
        unsure = np.flatnonzero(np.abs(self.d2 - bound) <= slack)
        if unsure.size:
            mask[unsure] = _exact(self.diff(unsure), delta, mean_square)
        return mask

    def within(self, delta: float, mean_square: bool = False) -> np.ndarray:
        """Mask over ``P0``: ``|v_s - v_t| <= delta`` (or, ``mean_square``, ``mean_dim (v_s - v_t)^2 < delta``).

        Pairs within rounding error of the threshold are recomputed from their difference vector, so
        the mask equals :func:`formed_reference` exactly.
        """
        mask = self._distinct(delta, mean_square)
        return mask if self.expand is None else mask[self.expand]

    def count(self, delta: float, mean_square: bool = False) -> int:
        """``|P(R)|``: the number of quadruples of ``P0`` that :meth:`within` accepts."""
        mask = self._distinct(delta, mean_square)
        return int(mask.sum()) if self.weight is None else int(self.weight[mask].sum())

    @property
    def total(self) -> int:
        """``|P0|``."""
        return int(self.d2.shape[0] if self.weight is None else self.weight.sum())


def pair_distances(vectors: np.ndarray, p0: Parallelograms) -> PairDistances:
    """:class:`PairDistances` of per-sample vectors: per class, all pairwise squared distances come
    from one Gram matrix (batched over the classes of equal size)."""
    v = np.asarray(vectors, dtype=np.float64)
    if v.shape[0] != p0.n_samples:
        raise ProbeError(f"got vectors for {v.shape[0]} samples, the parallelogram set has {p0.n_samples}")
    sq = np.einsum("nd,nd->n", v, v)
    d2 = np.empty(len(p0), dtype=np.float64)
    for members, offsets in p0.blocks:
        n = members.shape[1]
        iu, ju = np.triu_indices(n, k=1)
        block = v[members]  # [C, n, D]
        gram = np.matmul(block, block.transpose(0, 2, 1))
        s = sq[members]
        dist = s[:, iu] + s[:, ju] - 2.0 * gram[:, iu, ju]  # [C, n(n-1)/2]
        d2[offsets[:, None] + np.arange(iu.shape[0])[None, :]] = dist
    return PairDistances(d2=d2, scale=sq[p0.first] + sq[p0.second], dim=v.shape[1],
                         diff=lambda q: v[p0.first[q]] - v[p0.second[q]])


@dataclass(frozen=True)
class SumClasses:
    """Quadruples of ``P0`` that share one distance under sum aggregation (``v_(a,b) = v_(b,a)``).

    ``rep``: one quadruple per distinct pair of unordered operand sets; ``expand[q]``: the entry of
    quadruple ``q``; ``weight``: quadruples per entry. Ordered tables have about four quadruples per
    entry ({(a,b),(c,d)}, {(b,a),(c,d)}, {(a,b),(d,c)}, {(b,a),(d,c)}), so distances are computed
    once per entry. The four are equal in floating point too (addition commutes exactly).
    """

    rep: np.ndarray
    expand: np.ndarray
    weight: np.ndarray
    symbols: tuple[np.ndarray, ...] = field(repr=False)  # (a, b, c, d) of the representatives
    gather: tuple[np.ndarray, ...] = field(repr=False)  # flat Gram indices of the representatives
    #: flat indices of (|v_s|^2, |v_t|^2) into ``_sum_tables``' norms and (ac, ad, bc, bd) into its Gram matrix
    flat: tuple[np.ndarray, ...] = field(default=(), repr=False)


def sum_classes(inputs: np.ndarray, p0: Parallelograms) -> SumClasses:
    """:class:`SumClasses` of ``P0`` for a task's inputs (memoised on ``p0``)."""
    key = ("sum_classes", id(inputs))
    if key not in p0._memo:
        x = np.asarray(inputs, dtype=np.int64)
        n = int(x.max()) + 1 if x.size else 1
        unordered = np.minimum(x[:, 0], x[:, 1]) * n + np.maximum(x[:, 0], x[:, 1])  # [N]
        k1, k2 = unordered[p0.first], unordered[p0.second]
        pair = np.minimum(k1, k2) * (n * n) + np.maximum(k1, k2)
        _, rep, expand, weight = np.unique(pair, return_index=True, return_inverse=True, return_counts=True)
        sa, sb, ta, tb = (s[rep] for s in p0.symbols(inputs))
        p = n
        gather = (sa * p + ta, sa * p + tb, sb * p + ta, sb * p + tb, sa * p + sa, sb * p + sb, sa * p + sb,
                  ta * p + ta, tb * p + tb, ta * p + tb)
        flat = tuple(np.ascontiguousarray(i, dtype=np.int64) for i in (sa * p + sb, ta * p + tb, *gather[:4]))
        p0._memo[key] = SumClasses(rep=rep, expand=expand.reshape(-1), weight=weight.astype(np.int64),
                                   symbols=(sa, sb, ta, tb), gather=gather, flat=flat)
    return p0._memo[key]


def _sum_tables(e: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The symbol Gram matrix ``G = E~ E~^T``, ``|E~_a + E~_b|^2 = (G_aa + G_bb) + 2 G_ab`` and
    ``4 (G_aa + G_bb)``, flat ``[p^2]``. The last is the magnitude bound of a sum distance's terms: with
    ``|G_xy| <= (G_xx + G_yy) / 2``, the ten Gram terms of ``|v_s - v_t|^2`` add up in magnitude to at most
    ``4 (G_aa + G_bb + G_cc + G_dd)``, which can be far above ``|v_s|^2 + |v_t|^2`` (``E~_a + E~_b`` near 0)."""
    g = e @ e.T  # e: a numpy array or a torch tensor (the device path), the same expressions for both
    diag = g.diagonal()
    pair = diag[:, None] + diag[None, :]
    return g.ravel(), (pair + 2.0 * g).ravel(), (4.0 * pair).ravel()


def _gathered_sums(gf: Any, nf: Any, hf: Any, flat: Sequence[Any]) -> tuple[Any, Any]:
    """:func:`_distances_loop`'s sums as whole-array gathers (numpy arrays or torch tensors): ``d2`` and
    ``scale`` for every entry."""
    s1, s2, ac, ad, bc, bd = flat
    return (nf[s1] + nf[s2]) - 2.0 * (((gf[ac] + gf[ad]) + gf[bc]) + gf[bd]), hf[s1] + hf[s2]


def _distances_loop(gf: np.ndarray, nf: np.ndarray, hf: np.ndarray, s1: np.ndarray, s2: np.ndarray, ac: np.ndarray,
                    ad: np.ndarray, bc: np.ndarray, bd: np.ndarray, d2: np.ndarray, scale: np.ndarray) -> None:
    """``d2[q] = |v_s|^2 + |v_t|^2 - 2 (G_ac + G_ad + G_bc + G_bd)`` and ``scale[q]``, the magnitude bound
    of its terms (:func:`_sum_tables`), for every entry ``q`` (one pass; compiled by numba, see
    :func:`_compiled`)."""
    for q in range(s1.shape[0]):
        scale[q] = hf[s1[q]] + hf[s2[q]]
        d2[q] = (nf[s1[q]] + nf[s2[q]]) - 2.0 * (((gf[ac[q]] + gf[ad[q]]) + gf[bc[q]]) + gf[bd[q]])


def _count_loop(gf: np.ndarray, nf: np.ndarray, hf: np.ndarray, s1: np.ndarray, s2: np.ndarray, ac: np.ndarray,
                ad: np.ndarray, bc: np.ndarray, bd: np.ndarray, weight: np.ndarray, bound: float, strict: bool,
                rel: float, unsure: np.ndarray) -> tuple[int, int]:
    """:func:`_distances_loop` and the threshold in one pass without storing the distances: the weights
    of the entries with ``d2 <= bound`` (``<`` when ``strict``), and the entries within rounding
    (``rel (scale + bound)``) of the bound written to ``unsure`` (their count returned) for the exact recheck."""
    count = 0
    n_unsure = 0
    for q in range(s1.shape[0]):
        d2 = (nf[s1[q]] + nf[s2[q]]) - 2.0 * (((gf[ac[q]] + gf[ad[q]]) + gf[bc[q]]) + gf[bd[q]])
        if abs(d2 - bound) <= rel * (hf[s1[q]] + hf[s2[q]] + bound):
            unsure[n_unsure] = q
            n_unsure += 1
        elif d2 < bound or (d2 == bound and not strict):
            count += weight[q]
    return count, n_unsure


_COMPILED: dict[Callable[..., object], Callable[..., object] | None] = {}


def _compiled(fn: Callable[..., object]) -> Callable[..., object] | None:
    """``fn`` compiled by numba (once per process, cached on disk), or None without numba (the numpy
    path is used then)."""
    if fn not in _COMPILED:
        try:
            import numba
        except ImportError:  # pragma: no cover - numba comes with umap-learn
            _COMPILED[fn] = None
        else:
            _COMPILED[fn] = numba.njit(cache=True, nogil=True)(fn)
    return _COMPILED[fn]


def _slack(dim: int) -> float:
    """The rounding margin of a squared distance computed from Gram entries, relative to the magnitude
    of its terms plus the bound: each Gram entry is a dot product over ``dim`` coordinates (error at
    most about ``dim`` ulps of the magnitudes), and a handful of additions follow. Generous on purpose:
    everything inside the margin is rechecked exactly, so a wider margin only costs rechecks."""
    return float((64 + 4 * dim) * np.finfo(np.float64).eps)


def pair_distances_sum(normalized: np.ndarray, inputs: np.ndarray, p0: Parallelograms,
                       device: str | None = None) -> PairDistances:
    """:class:`PairDistances` for sum aggregation ``v_(a,b) = E~_a + E~_b`` without building the vectors.

    With the symbol Gram matrix ``G = E~ E~^T`` (``p x p``), ``|v_s - v_t|^2 = |v_s|^2 + |v_t|^2 -
    2 (G_ac + G_ad + G_bc + G_bd)``: a handful of gathers per quadruple instead of ``d`` flops, and
    only once per :class:`SumClasses` entry (one compiled pass over the entries). ``device``
    (``"cuda"``, ...) computes the distances with torch on that device, in float64.
    """
    e = np.asarray(normalized, dtype=np.float64)
    x = np.asarray(inputs)
    if int(x.max()) + 1 > e.shape[0]:
        raise ProbeError(f"the task uses {int(x.max()) + 1} symbols, the embeddings have {e.shape[0]}")
    sc = sum_classes(inputs, p0)
    p = int(x.max()) + 1
    loop = _compiled(_distances_loop) if device is None else None
    if device is not None:
        d2, base = _sum_distances_torch(e[:p], sc, device)
    else:
        gf, nf, hf = _sum_tables(e[:p])
        if loop is not None:
            d2 = np.empty(sc.rep.shape[0])
            base = np.empty(sc.rep.shape[0])
            loop(gf, nf, hf, *sc.flat, d2, base)
        else:
            d2, base = _gathered_sums(gf, nf, hf, sc.flat)
    sa, sb, ta, tb = sc.symbols
    return PairDistances(d2=d2, scale=base, dim=e.shape[1],
                         diff=lambda q: (e[sa[q]] + e[sb[q]]) - (e[ta[q]] + e[tb[q]]),
                         expand=sc.expand, weight=sc.weight)


def count_sum(normalized: np.ndarray, inputs: np.ndarray, p0: Parallelograms, delta: float,
              mean_square: bool = False, device: str | None = None) -> int:
    """``|P(R)|`` for sum aggregation: :meth:`PairDistances.count` of :func:`pair_distances_sum`, in one
    compiled pass that keeps no distance (the entries within rounding of the threshold rechecked
    exactly from their difference vectors, so the count equals :func:`formed_reference`'s)."""
    e = np.asarray(normalized, dtype=np.float64)
    loop = _compiled(_count_loop) if device is None else None
    if loop is None:
        return pair_distances_sum(e, inputs, p0, device).count(delta, mean_square)
    x = np.asarray(inputs)
    if int(x.max()) + 1 > e.shape[0]:
        raise ProbeError(f"the task uses {int(x.max()) + 1} symbols, the embeddings have {e.shape[0]}")
    sc = sum_classes(inputs, p0)
    p = int(x.max()) + 1
    gf, nf, hf = _sum_tables(e[:p])
    bound = delta * e.shape[1] if mean_square else delta * delta
    unsure = np.empty(sc.rep.shape[0], dtype=np.int64)
    count, n_unsure = loop(gf, nf, hf, *sc.flat, sc.weight, float(bound), bool(mean_square),
                           _slack(e.shape[1]), unsure)
    if n_unsure:
        q = unsure[:n_unsure]
        sa, sb, ta, tb = sc.symbols
        diff = (e[sa[q]] + e[sb[q]]) - (e[ta[q]] + e[tb[q]])
        count += int(sc.weight[q][_exact(diff, delta, mean_square)].sum())
    return int(count)


def formed(vectors: np.ndarray, p0: Parallelograms, delta: float, *, mean_square: bool = False) -> np.ndarray:
    """Mask over ``P0``: ``|v_s - v_t| <= delta`` (or ``mean_dim (v_s - v_t)^2 < delta``); equals
    :func:`formed_reference` exactly (see :meth:`PairDistances.within`)."""
    return pair_distances(vectors, p0).within(delta, mean_square)


def formed_sum(normalized: np.ndarray, inputs: np.ndarray, p0: Parallelograms, delta: float, *,
               mean_square: bool = False, device: str | None = None) -> np.ndarray:
    """:func:`formed` for sum aggregation, from the symbol Gram matrix (:func:`pair_distances_sum`)."""
    return pair_distances_sum(normalized, inputs, p0, device).within(delta, mean_square)


def _sum_distances_torch(e: np.ndarray, sc: SumClasses, device: str) -> tuple[np.ndarray, np.ndarray]:
    import torch

    key = ("torch", str(device))
    if sc.__dict__.get("_torch_key") != key:  # index tensors moved to the device once
        object.__setattr__(sc, "_torch", [torch.as_tensor(i, device=device) for i in sc.flat])
        object.__setattr__(sc, "_torch_key", key)
    d2, base = _gathered_sums(*_sum_tables(torch.as_tensor(e, device=device)), sc.__dict__["_torch"])
    return d2.cpu().numpy(), base.cpu().numpy()


def _within(diff: np.ndarray, delta: float, mean_square: bool) -> bool:
    """The threshold test of one difference vector (the definition; :func:`formed_reference` and the
    exact rechecks both call it, so a distance exactly at ``delta`` gets one answer: numpy's 1-D and
    row-wise reductions may round differently on a given CPU)."""
    if mean_square:
        return bool(np.mean(diff * diff) < delta)
    return bool(np.sqrt(np.sum(diff * diff)) <= delta)


def _exact(diff: np.ndarray, delta: float, mean_square: bool) -> np.ndarray:
    """:func:`_within` per row of ``diff`` (the few entries within rounding of the threshold)."""
    return np.fromiter((_within(d, delta, mean_square) for d in diff), dtype=bool, count=len(diff))


def formed_reference(vectors: np.ndarray, p0: Parallelograms, delta: float, *,
                     mean_square: bool = False) -> np.ndarray:
    """Straightforward reference for :func:`formed`: one difference vector per quadruple, in a loop."""
    v = np.asarray(vectors, dtype=np.float64)
    out = np.zeros(len(p0), dtype=bool)
    for q in range(len(p0)):
        out[q] = _within(v[p0.first[q]] - v[p0.second[q]], delta, mean_square)
    return out


# --------------------------------------------------------------------------------------------------
# the threshold-free test: how a parallelogram's distance ranks among different-label distances
# --------------------------------------------------------------------------------------------------
MAX_BETWEEN = 2_000_000


def between_distances(vectors: np.ndarray, labels: np.ndarray, max_pairs: int = MAX_BETWEEN,
                      seed: int = 0) -> np.ndarray:
    """Sorted squared distances ``|v_u - v_w|^2`` over pairs of samples with different labels: all of
    them, or a fixed random sample of ``max_pairs`` (seeded, so a series uses the same pairs at every
    checkpoint) when there are more."""
    v = np.asarray(vectors, dtype=np.float64)
    y = np.asarray(labels)
    n = v.shape[0]
    total = n * (n - 1) // 2
    if total <= max_pairs:
        iu, ju = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        iu = rng.integers(0, n, size=max_pairs)
        ju = rng.integers(0, n, size=max_pairs)
    keep = y[iu] != y[ju]
    iu, ju = iu[keep], ju[keep]
    if iu.size == 0:
        raise ProbeError("no two samples have different labels; the threshold-free test is undefined")
    d2 = np.empty(iu.size)
    for lo in range(0, iu.size, 1 << 18):  # bounded memory for wide activations
        diff = v[iu[lo: lo + (1 << 18)]] - v[ju[lo: lo + (1 << 18)]]
        d2[lo: lo + (1 << 18)] = np.einsum("nd,nd->n", diff, diff)
    return np.sort(d2)


def rank_scores(d2: np.ndarray, between: np.ndarray) -> np.ndarray:
    """Per parallelogram, the fraction of different-label pairs that are farther apart than its two
    samples (ties count half): ``P(|v_s - v_t| < |v_u - v_w|)`` for ``{s, t}`` in ``P0`` and ``u, w``
    with different labels. Its mean over ``P0`` is the threshold-free RQI (0.5 for a representation
    that ignores the labels, 1 when every same-result pair is closer than every other pair)."""
    n = between.shape[0]
    left = np.searchsorted(between, d2, side="left")
    right = np.searchsorted(between, d2, side="right")
    return (n - right + 0.5 * (right - left)) / n


# --------------------------------------------------------------------------------------------------
# RQI and friends on arrays
# --------------------------------------------------------------------------------------------------
def rqi(embeddings: np.ndarray, inputs: np.ndarray, labels: np.ndarray, delta: float = 0.01,
        convention: Convention = "liu", p0: Parallelograms | None = None) -> float:
    """Liu et al. eq. (3): the fraction of ``P0`` that the embeddings form within ``delta``.

    ``convention="grokking-squared"`` counts a pair when the mean over dimensions of the squared
    residual is below ``delta`` (use ``delta=0.01`` to reproduce that code's numbers).
    """
    p0 = p0 if p0 is not None else Parallelograms.from_labels(labels)
    if len(p0) == 0:
        raise ProbeError("the task has no parallelograms (no two samples share a label)")
    norm = normalize(embeddings, convention)
    ms = convention == "grokking-squared"
    x = np.asarray(inputs)
    dist = pair_distances_sum(norm, x, p0) if norm.ndim == 2 else pair_distances(sample_vectors(norm, x), p0)
    return dist.count(delta, ms) / len(p0)


def augmented(p0: Parallelograms, mask: np.ndarray, train: np.ndarray) -> np.ndarray:
    """``D-bar(D, P)`` (Liu App. D eq. 12) as a mask over samples: D plus every sample that forms a
    parallelogram in ``P`` (``mask`` over ``P0``) with a training sample."""
    in_d = np.zeros(p0.n_samples, dtype=bool)
    in_d[np.asarray(train)] = True
    out = in_d.copy()
    out[p0.first[mask & in_d[p0.second]]] = True
    out[p0.second[mask & in_d[p0.first]]] = True
    return out


def acc_hat(p0: Parallelograms, mask: np.ndarray, train: np.ndarray, val: np.ndarray | None = None) -> float:
    """``Acc-hat = |D-bar| / |D0|`` (Liu App. D eq. 13); with ``val``, the share of ``val`` in D-bar."""
    dbar = augmented(p0, mask, train)
    if val is None:
        return float(dbar.mean())
    val = np.asarray(val)
    if val.size == 0:
        raise ProbeError("the split has no validation samples; the test-only Acc-hat is undefined")
    return float(dbar[val].mean())


# --------------------------------------------------------------------------------------------------
# implicit parallelograms: the Alexander principle (Liu App. E) and the effective theory (Sec. 3.2)
# --------------------------------------------------------------------------------------------------
def constraint_matrix(inputs: np.ndarray, p0: Parallelograms, mask: np.ndarray, n_symbols: int) -> np.ndarray:
    """``A(P)`` (Liu eq. 7): one row ``e_i + e_j - e_m - e_n`` per parallelogram in ``mask``. ``[|P|, p]``."""
    s, t = p0.first[mask], p0.second[mask]
    rows = np.zeros((s.shape[0], n_symbols), dtype=np.float64)
    r = np.arange(s.shape[0])
    for col, sign in ((inputs[s, 0], 1.0), (inputs[s, 1], 1.0), (inputs[t, 0], -1.0), (inputs[t, 1], -1.0)):
        np.add.at(rows, (r, col), sign)
    return rows


def hessian(inputs: np.ndarray, p0: Parallelograms, train: np.ndarray, n_symbols: int) -> np.ndarray:
    """``H = A_D^T A_D`` with ``A_D = A(P0(D))`` (Liu Sec. 3.2), built without forming ``A_D``."""
    mask = p0.within(train)
    s, t = p0.first[mask], p0.second[mask]
    idx = np.stack([inputs[s, 0], inputs[s, 1], inputs[t, 0], inputs[t, 1]], axis=1)  # [Q, 4]
    sign = np.array([1.0, 1.0, -1.0, -1.0])
    h = np.zeros((n_symbols, n_symbols), dtype=np.float64)
    for u in range(4):
        for w in range(4):
            np.add.at(h, (idx[:, u], idx[:, w]), sign[u] * sign[w])
    return h


def spectrum(h: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Eigenvalues (ascending), eigenvectors and the nullity of a constraint Hessian ``H``."""
    evals, evecs = np.linalg.eigh(h)
    tol = max(1.0, float(np.abs(evals).max(initial=0.0))) * h.shape[0] * 1e-10
    nullity = int(np.sum(evals <= tol))
    return evals, evecs, nullity


@dataclass(frozen=True)
class AlexanderBound:
    """``P(D)`` and the bounds it sets (Liu App. E): ``RQI <= RQI-bar``, ``Acc-hat <= Acc-bar``."""

    implied: np.ndarray  # mask over P0: P(D) (explicit P0(D) plus implicit parallelograms)
    explicit: np.ndarray  # mask over P0: P0(D)
    nullity: int  # dof of the ground states of A(P0(D))
    rqi_bar: float
    acc_bar: float
    acc_bar_test: float


def alexander(inputs: np.ndarray, p0: Parallelograms, train: np.ndarray, val: np.ndarray,
              n_symbols: int, tol: float = 1e-6) -> AlexanderBound:
    """Implicit parallelograms (Liu App. E, eq. 14) for every candidate at once.

    A candidate row ``q`` lies in the row space of ``A(P0(D))`` iff its projection on the null space
    ``N`` of ``H = A^T A`` vanishes: ``|N^T q| <= tol``. One eigendecomposition of the ``p x p`` matrix
    ``H`` and one gather per candidate replace a rank computation per candidate.
    """
    explicit = p0.within(train)
    _, evecs, nullity = spectrum(hessian(inputs, p0, train, n_symbols))
    null = evecs[:, :nullity]  # [p, k] orthonormal basis of the null space
    s, t = p0.first, p0.second
    proj = null[inputs[s, 0]] + null[inputs[s, 1]] - null[inputs[t, 0]] - null[inputs[t, 1]]  # [Q, k]
    implied = explicit | (np.sqrt(np.sum(proj * proj, axis=1)) <= tol)
    return AlexanderBound(implied=implied, explicit=explicit, nullity=nullity,
                          rqi_bar=float(implied.mean()) if len(p0) else float("nan"),
                          acc_bar=acc_hat(p0, implied, train),
                          acc_bar_test=acc_hat(p0, implied, train, val) if len(val) else float("nan"))


def alexander_reference(inputs: np.ndarray, p0: Parallelograms, train: np.ndarray, n_symbols: int) -> np.ndarray:
    """Straightforward eq. (14): one rank computation per candidate. Slow; for tests only."""
    explicit = p0.within(train)
    a = constraint_matrix(inputs, p0, explicit, n_symbols)
    rank = np.linalg.matrix_rank(a) if a.shape[0] else 0
    out = explicit.copy()
    everything = np.ones(len(p0), dtype=bool)
    rows = constraint_matrix(inputs, p0, everything, n_symbols)
    for q in np.flatnonzero(~explicit):
        out[q] = np.linalg.matrix_rank(np.vstack([a, rows[q]])) == rank
    return out
