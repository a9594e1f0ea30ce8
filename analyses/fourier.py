"""Fourier basis over ``Z_p`` (Nanda et al. 2023, Sec. 4): rows ``[1, cos_k, sin_k for k = 1..(p-1)/2]``.

Each row is L2-normalised, so the basis is orthonormal for odd ``p``; row ``0`` is the constant,
rows ``2k-1`` and ``2k`` are ``cos`` and ``sin`` of frequency ``k``.
"""

from __future__ import annotations

import numpy as np


def fourier_basis(p: int) -> tuple[np.ndarray, list[str]]:
    """``[p, p]`` orthonormal basis (rows) and their names (``const``, ``cos k``, ``sin k``)."""
    x = np.arange(p)
    rows = [np.ones(p)]
    names = ["const"]
    for k in range(1, p // 2 + 1):
        rows.append(np.cos(2 * np.pi * k * x / p))
        names.append(f"cos {k}")
        if 2 * k != p:
            rows.append(np.sin(2 * np.pi * k * x / p))
            names.append(f"sin {k}")
    basis = np.stack(rows)
    return basis / np.linalg.norm(basis, axis=1, keepdims=True), names


def frequency_norms(weights: np.ndarray, p: int) -> np.ndarray:
    """Norm of ``weights [p, d]`` (rows indexed by symbol) per frequency ``k = 1..p//2`` (cos and sin
    combined). ``[p//2]``; the constant component is left out."""
    basis, _ = fourier_basis(p)
    coef = basis @ np.asarray(weights, dtype=np.float64)  # [p, d]
    sq = np.sum(coef * coef, axis=1)
    n_freq = p // 2
    out = np.empty(n_freq)
    for k in range(1, n_freq + 1):
        out[k - 1] = sq[2 * k - 1] + (sq[2 * k] if 2 * k < p else 0.0)
    return np.sqrt(out)


def frequency_plane(weights: np.ndarray, k: int) -> np.ndarray:
    """Orthonormal ``[d, 2]`` basis of the plane spanned by the ``cos k`` and ``sin k`` components of
    ``weights [p, d]``; a symbol's angle on it is ``2 pi k a / p`` (up to a shared phase and
    orientation) for a perfect clock representation."""
    w = np.asarray(weights, dtype=np.float64)
    p = w.shape[0]
    x = np.arange(p)
    c = np.cos(2 * np.pi * k * x / p) @ w
    s = np.sin(2 * np.pi * k * x / p) @ w
    q, _ = np.linalg.qr(np.stack([c, s], axis=1))
    return q


def frequency_of_component(p: int) -> np.ndarray:
    """Frequency ``k`` of each basis row of :func:`fourier_basis` (0 for the constant)."""
    _, names = fourier_basis(p)
    return np.array([0 if n == "const" else int(n.split()[1]) for n in names])


def frequency_norms_2d(acts: np.ndarray, p: int) -> np.ndarray:
    """Per-frequency norm of activations on the ``p x p`` input grid: ``acts [p, p, n]`` (axis 0 = a,
    axis 1 = b). Coefficients ``c = F A F^T`` per unit; frequency ``k`` collects every component whose
    a- or b-factor has frequency ``k``. ``[p//2]``."""
    basis, _ = fourier_basis(p)
    coef = np.einsum("ia,abn,jb->ijn", basis, np.asarray(acts, dtype=np.float64), basis, optimize=True)
    sq = np.sum(coef * coef, axis=2)  # [p, p]
    freq = frequency_of_component(p)
    out = np.empty(p // 2)
    for k in range(1, p // 2 + 1):
        sel = (freq[:, None] == k) | (freq[None, :] == k)
        out[k - 1] = sq[sel].sum()
    return np.sqrt(out)


def gini(x: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0: all equal; ``(n-1)/n``: one non-zero value)."""
    v = np.sort(np.asarray(x, dtype=np.float64).ravel())
    n = v.shape[0]
    total = v.sum()
    if n == 0 or total <= 0:
        return float("nan")
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * v) / (n * total))


def key_frequencies(norms: np.ndarray, threshold: float) -> list[int]:
    """Key frequencies by the declared rule: ``k`` whose share of the total squared frequency norm
    (constant excluded) is at least ``threshold``. Sorted by decreasing share."""
    sq = np.asarray(norms, dtype=np.float64) ** 2
    share = sq / sq.sum()
    order = np.argsort(-share)
    return [int(k + 1) for k in order if share[k] >= threshold]


def sum_directions(p: int, freqs: list[int]) -> np.ndarray:
    """Orthonormal columns ``cos(w_k (a+b))``, ``sin(w_k (a+b))`` on the grid (row ``a*p + b``),
    ``w_k = 2 pi k / p`` (Nanda et al. Sec. 5.1). ``[p*p, 2 len(freqs)]``."""
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    s = (a + b).ravel()
    cols = []
    for k in freqs:
        cols.append(np.cos(2 * np.pi * k * s / p))
        cols.append(np.sin(2 * np.pi * k * s / p))
    q = np.stack(cols, axis=1) if cols else np.zeros((p * p, 0))
    return q / np.linalg.norm(q, axis=0, keepdims=True) if cols else q
