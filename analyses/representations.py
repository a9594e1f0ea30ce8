"""Pure array maths of the representation analyses: principal axes, lottery-ticket order, clock vs
pizza measures (Zhong et al. 2023), symbol angles on a plane, key-frequency projections of neuron
activations (Nanda et al. 2023 Sec. 5.1). No model, no run: arrays in, numbers out.
"""

from __future__ import annotations

import numpy as np

from probe.analyses import fourier as fr
from probe.errors import ProbeError, valid
from probe.tasks import Task


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


def grid(values: np.ndarray, task: Task) -> np.ndarray:
    """Rows indexed by sample -> ``[p, p, ...]`` indexed by (a, b)."""
    p = int(task.modulus or 0)
    out = np.zeros((p, p) + values.shape[1:], dtype=values.dtype)
    out[task.inputs[:, 0], task.inputs[:, 1]] = values
    return out


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


CIRCULARITY_METHODS: tuple[str, ...] = ("zhong", "planes")


def circularity_of(emb: np.ndarray, p: int, pcs: int = 4, method: str = "zhong") -> float:
    """Circularity of the leading principal components of the symbol embeddings.

    ``zhong`` (Zhong et al. 2023, the default): each of the first ``pcs`` (4) principal components
    ``x_i [p]`` is scored on its own, ``c_i = (2/p) max_k |sum_a x_ia e^{-2 pi i k a/p}|^2 / sum_a x_ia^2``
    (:func:`probe.analyses.fourier.component_circularity`), and ``c`` is their mean.
    ``planes`` (probe's variant): PCs are paired into planes (1,2), (3,4), ..., ``z = x + i y``,
    ``max_k |sum_a z_a e^{-2 pi i k a/p}|^2 / (p sum_a |z_a|^2)``, averaged over the ``pcs / 2`` planes.
    """
    e = centred(emb)
    ratios, vt = principal_axes(emb)
    vt = vt[ratios > 1e-12]  # components that carry variance (a 2-D clock has two)
    if method == "zhong":
        return float(np.mean([fr.component_circularity(e @ vt[i], p) for i in range(min(pcs, vt.shape[0]))]))
    if method != "planes":
        raise ProbeError(f"unknown circularity method {method!r}{valid(CIRCULARITY_METHODS)}", param="method")
    a = np.arange(p)
    ks = np.arange(1, p)
    basis = np.exp(-2j * np.pi * ks[:, None] * a[None, :] / p)
    vals = []
    for i in range(0, min(pcs, vt.shape[0]) - 1, 2):
        z = e @ vt[i] + 1j * (e @ vt[i + 1])
        denom = p * np.sum(np.abs(z) ** 2)
        vals.append(float(np.max(np.abs(basis @ z) ** 2) / denom) if denom > 0 else float("nan"))
    return float(np.mean(vals))


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


def top_incorrect_logits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The largest logit other than the correct label's, per sample (``[N, C]`` -> ``[N]``): the table
    Zhong et al.'s released results compute distance irrelevance on (fjzzq2002/pizza
    ``code/train-main.py``, the ``oc`` table; their notebook ``eval-main.ipynb`` uses the correct-label
    logit)."""
    out = np.array(logits, dtype=np.float64, copy=True)
    out[np.arange(out.shape[0]), np.asarray(labels)] = -np.inf
    return out.max(axis=1)


SYMMETRICITY_SAMPLING: tuple[str, ...] = ("probe", "zhong")


def symmetricity_triples(inputs: np.ndarray, p: int, n_classes: int, samples: int,
                         sampling: str = "probe") -> tuple[np.ndarray, np.ndarray]:
    """The (a, b, c) triples gradient symmetricity averages over, as (sample indices into ``inputs``,
    classes c). ``probe``: ``samples`` distinct pairs and a class each from numpy's generator seeded 0;
    ``zhong``: Zhong et al.'s notebook (``eval-main.ipynb``): every (a, b, c) in ``range(p)^3`` in
    lexicographic order shuffled by Python's ``random.Random(42)``, the first ``samples`` kept."""
    if sampling == "zhong":
        import itertools
        import random

        triples = list(itertools.product(range(p), range(p), range(p)))
        random.Random(42).shuffle(triples)
        chosen = np.asarray(triples[:samples], dtype=np.int64).reshape(-1, 3)
        where = {(int(a), int(b)): i for i, (a, b) in enumerate(np.asarray(inputs)[:, :2])}
        return np.array([where[(a, b)] for a, b in chosen[:, :2].tolist()], dtype=np.int64), chosen[:, 2]
    rng = np.random.default_rng(0)
    n = np.asarray(inputs).shape[0]
    idx = rng.choice(n, size=min(samples, n), replace=False)
    return idx, rng.integers(0, n_classes, size=idx.shape[0])


def gradient_symmetricity_of(grad_a: np.ndarray, grad_b: np.ndarray) -> float:
    """Zhong et al.: mean cosine similarity of the gradients of the output logit with respect to the
    two input embeddings, over sampled (a, b, c). ``[S, d]`` each."""
    num = np.sum(grad_a * grad_b, axis=1)
    den = np.linalg.norm(grad_a, axis=1) * np.linalg.norm(grad_b, axis=1)
    ok = den > 0
    return float(np.mean(num[ok] / den[ok])) if ok.any() else float("nan")


def plane_of(emb: np.ndarray, p: int, plane: str, freq: int | None) -> tuple[np.ndarray, int]:
    """An orthonormal ``[d, 2]`` basis of the plane the angles are read on and its frequency (0 for
    ``pca``): the ``cos k`` / ``sin k`` components of the embeddings (``freq``, default the largest
    Fourier norm), or their top two principal axes."""
    e = centred(emb)
    if plane == "pca":
        _, _, vt = np.linalg.svd(e, full_matrices=False)
        if vt.shape[0] < 2:
            raise ProbeError("the embeddings have fewer than two principal components; use --plane freq")
        return vt[:2].T, 0
    n_freq = p // 2
    if freq is not None and not 1 <= freq <= (p - 1) // 2:
        raise ProbeError(f"must be in 1..{(p - 1) // 2} for p = {p}, got {freq}", param="freq")
    k = int(freq) if freq is not None else int(np.argmax(fr.frequency_norms(e, p)[:n_freq])) + 1
    return fr.frequency_plane(e, k), k


def whitened_angles(xy: np.ndarray) -> np.ndarray:
    """Angles of points ``[n, 2]`` after an affine normalisation of their plane: centre, then map the
    covariance to the identity (``C^{-1/2}``). Any invertible affine map of the plane changes the
    result only by a rotation or reflection, which a circular parallelogram's residual
    ``theta_i + theta_j - theta_m - theta_n`` ignores (a reflection flips its sign)."""
    c = np.asarray(xy, dtype=np.float64)
    c = c - c.mean(axis=0)
    cov = c.T @ c / c.shape[0]
    evals, evecs = np.linalg.eigh(cov)
    if evals[0] <= max(evals[-1], 0.0) * 1e-12:
        raise ProbeError("the symbols lie on a line in this plane (degenerate covariance); circular angles "
                         "are undefined")
    w = c @ evecs @ np.diag(evals ** -0.5) @ evecs.T
    return np.arctan2(w[:, 1], w[:, 0])


def symbol_angles(emb: np.ndarray, p: int, plane: str, freq: int | None,
                  basis: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Affine-invariant angles of the symbols (:func:`whitened_angles`) on a key-frequency plane or
    the top-2 PC plane (``k = 0`` for PCA); ``basis [d, 2]`` fixes the plane (e.g. the final
    checkpoint's) instead of choosing it from ``emb``."""
    e = centred(emb)
    if basis is None:
        basis, k = plane_of(emb, p, plane, freq)
    else:
        k = int(freq or 0)
    return whitened_angles(e @ basis), k


def circular_residuals(theta: np.ndarray, inputs: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``theta_i + theta_j - theta_m - theta_n`` wrapped to ``(-pi, pi]`` for quadruples
    ``{(i, j), (m, n)}`` given as sample indices (Liu App. H, 2x2 rotations)."""
    x = inputs
    r = theta[x[first, 0]] + theta[x[first, 1]] - theta[x[second, 0]] - theta[x[second, 1]]
    return np.angle(np.exp(1j * r))


def restricted_activations(act_grid: np.ndarray, p: int, keys: list[int]) -> np.ndarray:
    """probe's ``grid`` variant of the restricted loss's activations: neuron activations on the ``p x p`` grid restricted to their key-frequency components:
    ``P_R A P_R`` with ``P_R`` the projector on ``{const, cos k, sin k : k key}`` applied to the a and
    b axes (every product of key-frequency terms in a and b is kept). ``[p, p, n] -> [p, p, n]``."""
    basis, _ = fr.fourier_basis(p)
    rows = [0] + [r for k in keys for r in (2 * k - 1, 2 * k) if r < p]
    b_r = basis[rows]  # [r, p]: P_R = b_r^T b_r, applied as two thin products on each side
    coef = np.einsum("ia,abn,jb->ijn", b_r, act_grid, b_r, optimize=True)  # [r, r, n]
    return np.einsum("ia,ijn,jb->abn", b_r, coef, b_r, optimize=True)


def nanda_restricted_activations(act: np.ndarray, inputs: np.ndarray, p: int, keys: list[int]) -> np.ndarray:
    """Nanda et al. (2023, Sec. 5.1) restricted neuron activations: the mean over the grid plus the
    components along the unit directions ``cos(w_k (a+b))``, ``sin(w_k (a+b))`` of the key
    frequencies, nothing else. Rows are samples ``(a, b)`` of the full ordered table. ``[N, n]``."""
    order = inputs[:, 0] * p + inputs[:, 1]
    q = fr.sum_directions(p, keys)[order]  # [N, 2K], orthonormal over the full grid
    return act.mean(axis=0, keepdims=True) + q @ (q.T @ act)


def nanda_restricted_logits(approx: np.ndarray, w_out: np.ndarray, w_u: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Nanda et al.'s readout of restricted activations: ``approx @ W_out @ W_U`` (the neurons' direct
    path to the logits, no other residual-stream term), shifted so that its mean over samples equals
    the full model's (their "bias term"). ``[N, n] -> [N, n_out]``."""
    out = np.asarray(approx, dtype=np.float64) @ np.asarray(w_out, np.float64) @ np.asarray(w_u, np.float64)
    return out + (logits.mean(axis=0, keepdims=True) - out.mean(axis=0, keepdims=True))


def excluded_activations(act: np.ndarray, inputs: np.ndarray, p: int, keys: list[int]) -> np.ndarray:
    """Activations ``[N, n]`` with the directions ``cos(w_k(a+b))``, ``sin(w_k(a+b))`` removed
    (Nanda et al. Sec. 5.1); rows are samples ``(a, b)`` of the full ordered table."""
    order = inputs[:, 0] * p + inputs[:, 1]  # sample -> grid row
    q = fr.sum_directions(p, keys)[order]  # [N, 2K], orthonormal over the full grid
    return act - q @ (q.T @ act)
