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
