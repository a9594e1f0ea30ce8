"""Fourier basis over ``Z_p`` (Nanda et al. 2023, Sec. 4): rows ``[1, cos_k, sin_k for k = 1..(p-1)/2]``.

Each row is L2-normalised, so the basis is orthonormal for odd ``p``; row ``0`` is the constant,
rows ``2k-1`` and ``2k`` are ``cos`` and ``sin`` of frequency ``k``.
"""

from __future__ import annotations

import functools

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@functools.lru_cache(maxsize=16)
def fourier_basis(p: int) -> tuple[np.ndarray, list[str]]:
    """``[p, p]`` orthonormal basis (rows) and their names (``const``, ``cos k``, ``sin k``); built once
    per ``p`` (the array is read-only)."""
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
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    basis.flags.writeable = False
    return basis, names


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


def _gram(x: "torch.Tensor") -> "torch.Tensor":
    """``x x^T`` in float64 (numpy's symmetric product on the CPU, half the work of a general one)."""
    import torch

    if x.device.type == "cpu":
        a = x.numpy()
        return torch.from_numpy(a @ a.T).double()
    return (x @ x.T).double()


@functools.lru_cache(maxsize=8)
def _batched_tables(p: int, device: str) -> dict[str, "torch.Tensor"]:
    """The constant tensors of :func:`frequency_norms_2d_batched` for ``p`` on ``device`` (built once):
    the basis, the cos / sin rows of frequencies 1..p//2, each basis row's frequency, and the flat
    ``a p + b`` indices whose rows sum to a + b = c (``plus``, ordered ``[a, c]``) and to a - b = c
    (``minus``, ordered ``[b, c]``)."""
    import torch

    x = np.arange(p)
    angle = 2 * np.pi * np.outer(np.arange(1, p // 2 + 1), x) / p
    plus = x[:, None] * p + (x[None, :] - x[:, None]) % p  # a, c -> b = c - a
    minus = ((x[None, :] + x[:, None]) % p) * p + x[:, None]  # b, c -> a = c + b
    return {"basis": torch.tensor(fourier_basis(p)[0], dtype=torch.float64, device=device),
            "cos": torch.as_tensor(np.cos(angle), device=device), "sin": torch.as_tensor(np.sin(angle), device=device),
            "comp": torch.as_tensor(frequency_of_component(p), device=device),
            "plus": torch.as_tensor(plus.ravel(), device=device), "minus": torch.as_tensor(minus.ravel(), device=device)}


def frequency_norms_2d_batched(acts: "torch.Tensor", p: int, scratch: "torch.Tensor | None" = None) -> np.ndarray:
    """:func:`frequency_norms_2d` of ``acts [p, p, n]`` without the transform:
    frequency k's energy is the energy of the basis rows of k on the a axis plus that on the b axis
    minus the (k, k) block counted twice. The first two are ``sum_i B_i G B_i^T`` over k's rows i,
    with ``G`` the Gram matrix of the activations over (b, neuron) or (a, neuron) (orthonormal B leaves
    the other axis' norms unchanged); the (k, k) block's four coefficients per neuron come from the
    Fourier components of the sums of the activations along a + b = c and a - b = c (product
    formulas of cos and sin). Gram matrices and sums in the activations' dtype, the rest in float64;
    equal to the transform within rounding (tests/analyses/test_batched_passes.py). ``scratch``: a
    tensor like ``acts`` to hold its transpose (reused, it spares the allocation)."""
    import torch

    dev = acts.device
    t = _batched_tables(p, str(dev))
    basis = t["basis"]
    turned = torch.empty_like(acts) if scratch is None else scratch
    turned.copy_(acts.transpose(0, 1))
    energy_a = ((basis @ _gram(acts.reshape(p, -1)).to(dev)) * basis).sum(dim=1)
    energy_b = ((basis @ _gram(turned.reshape(p, -1)).to(dev)) * basis).sum(dim=1)
    # sums along a + b = c and a - b = c (mod p): one gather of the table's rows each, then a sum
    flat = acts.reshape(p * p, -1)
    plus = flat.index_select(0, t["plus"]).view(p, p, -1).sum(dim=0)
    minus = flat.index_select(0, t["minus"]).view(p, p, -1).sum(dim=0)
    freqs = np.arange(1, p // 2 + 1)
    cos, sin = t["cos"], t["sin"]
    plus, minus = plus.double(), minus.double()
    sc, ss, dc, ds = cos @ plus, sin @ plus, cos @ minus, sin @ minus  # [K, n]
    cos_sq = torch.as_tensor(np.where(2 * freqs == p, p, p / 2.0), device=dev)[:, None]  # |cos_k|^2
    sin_sq = p / 2.0
    cross = 2 * np.sqrt(sin_sq) * torch.sqrt(cos_sq)
    block = ((sc + dc) / (2 * cos_sq)) ** 2  # (cos, cos); then (sin, sin), (cos, sin), (sin, cos)
    has_sin = torch.as_tensor(2 * freqs != p, device=dev)[:, None]
    block = block + torch.where(has_sin, ((dc - sc) / (2 * sin_sq)) ** 2 + ((ss - ds) / cross) ** 2
                                + ((ss + ds) / cross) ** 2, torch.zeros_like(block))
    comp = t["comp"]
    out = torch.zeros(p // 2 + 1, dtype=torch.float64, device=dev)
    out.index_add_(0, comp, energy_a + energy_b)
    total = out[1:] - block.sum(dim=1)
    return np.sqrt(np.maximum(total.cpu().numpy(), 0.0))


def gini(x: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0: all equal; ``(n-1)/n``: one non-zero value)."""
    v = np.sort(np.asarray(x, dtype=np.float64).ravel())
    n = v.shape[0]
    total = v.sum()
    if n == 0 or total <= 0:
        return float("nan")
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * v) / (n * total))


KEY_RULES: tuple[str, ...] = ("energy", "share", "neurons")
KEY_DEFAULTS: dict[str, float] = {"energy": 1e-6, "share": 0.05, "neurons": 0.85}


def key_frequencies(norms: np.ndarray, threshold: float) -> list[int]:
    """The ``share`` rule: ``k`` whose share of the total squared frequency norm (constant excluded)
    is at least ``threshold``. Sorted by decreasing share. A fixed share does not scale with ``p``:
    below ``1 / (p // 2)`` every frequency of a random embedding passes (docs/design.md)."""
    sq = np.asarray(norms, dtype=np.float64) ** 2
    share = sq / sq.sum()
    order = np.argsort(-share)
    return [int(k + 1) for k in order if share[k] >= threshold]


def energy_share_threshold(n_freq: int, dims: int, alpha: float) -> float:
    """Share of the Fourier energy that one frequency of Gaussian random weights ``[p, dims]`` exceeds
    with probability ``alpha / n_freq`` (Bonferroni over the ``n_freq`` frequencies).

    For i.i.d. Gaussian rows each frequency's energy (cos and sin components, ``2 dims`` squares) is
    ``Gamma(dims)``-distributed and the shares are ``Dirichlet(dims, ..., dims)``, so one share is
    ``Beta(dims, (n_freq - 1) dims)``; the threshold is its ``1 - alpha / n_freq`` quantile. It scales
    with ``p`` (about ``1 / n_freq`` plus a few standard deviations).
    """
    from scipy.stats import beta

    if n_freq < 2:
        return 0.0
    return float(beta.isf(alpha / n_freq, dims, (n_freq - 1) * dims))


def significant_frequencies(norms: np.ndarray, dims: int, alpha: float = KEY_DEFAULTS["energy"]) -> list[int]:
    """The ``energy`` rule (probe's default): frequencies whose share of the squared Fourier norm is
    larger than Gaussian random weights of the same shape would give at family-wise level ``alpha``
    (:func:`energy_share_threshold`). Random embeddings have no key frequency at any ``p``; a trained
    clock has its few. Sorted by decreasing share."""
    sq = np.asarray(norms, dtype=np.float64) ** 2
    if sq.sum() <= 0:
        return []
    share = sq / sq.sum()
    limit = energy_share_threshold(len(share), max(1, int(dims)), alpha)
    order = np.argsort(-share)
    return [int(k + 1) for k in order if share[k] > limit]


def neuron_frequency_fractions(acts: np.ndarray, p: int) -> np.ndarray:
    """Per neuron, the fraction of its variance over the ``p x p`` grid explained by each frequency
    (Nanda et al. Sec. 4, neuron clusters): the components whose a- and b-factors are both in
    ``{const, cos k, sin k}`` (the constant-constant term left out), over all non-constant terms.
    ``acts [p, p, n] -> [n, p // 2]``."""
    basis, _ = fourier_basis(p)
    coef = np.einsum("ia,abn,jb->ijn", basis, np.asarray(acts, dtype=np.float64), basis, optimize=True)
    sq = coef * coef
    sq[0, 0] = 0.0
    total = sq.sum(axis=(0, 1))  # [n]
    freq = frequency_of_component(p)
    out = np.empty((sq.shape[2], p // 2))
    for k in range(1, p // 2 + 1):
        rows = (freq == k) | (freq == 0)
        out[:, k - 1] = sq[np.ix_(rows, rows)].sum(axis=(0, 1))
    return out / np.where(total > 0, total, 1.0)[:, None]


def neuron_key_frequencies(acts: np.ndarray, p: int, fve: float = KEY_DEFAULTS["neurons"]) -> tuple[list[int], np.ndarray]:
    """Nanda et al.'s neuron-cluster rule: a neuron belongs to frequency ``k`` when ``k`` explains at
    least ``fve`` of its variance (:func:`neuron_frequency_fractions`); the key frequencies are the
    frequencies with a cluster, largest cluster first. Returns the keys and each neuron's frequency
    (0: none)."""
    frac = neuron_frequency_fractions(acts, p)
    best = np.argmax(frac, axis=1)
    assigned = np.where(frac[np.arange(frac.shape[0]), best] >= fve, best + 1, 0)
    ks, counts = np.unique(assigned[assigned > 0], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return [int(ks[i]) for i in order], assigned


def component_circularity(x: np.ndarray, p: int) -> float:
    """Zhong et al. (2023) circularity of one principal component ``x [p]`` (values per symbol):
    ``(2 / p) max_k |sum_a x_a e^{-2 pi i k a / p}|^2 / sum_a x_a^2``. 1 for a pure cosine at one
    frequency, about ``2 log(p) / p`` for noise."""
    v = np.asarray(x, dtype=np.float64)
    v = v - v.mean()
    denom = float(np.sum(v * v))
    if denom <= 0:
        return float("nan")
    spec = np.abs(np.fft.fft(v)[1: p // 2 + 1]) ** 2
    return float(min(1.0, 2.0 / p * spec.max() / denom))


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
