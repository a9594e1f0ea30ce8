"""Array-level measures of training dynamics: weight norms and spectra, logit margins (Varma et al.'s
efficiency) and softmax collapse (Prieto et al. 2025). Pure functions of arrays; the registered
metrics in :mod:`probe.analyses.families.dynamics` feed them checkpoints. Definitions and choices:
docs/metrics.md, "Training dynamics".
"""

from __future__ import annotations

from typing import Any

import numpy as np


def matrix_view(name: str, w: np.ndarray) -> np.ndarray | None:
    """The matrix a weight tensor acts as (``[..., d_in, d_out]`` over any leading checkpoint axes is
    not assumed: ``w`` is one tensor). 2-D tensors are themselves; TransformerLens' per-head tensors
    are joined over heads: ``W_Q/W_K/W_V [heads, d_model, d_head] -> [d_model, heads*d_head]`` and
    ``W_O [heads, d_head, d_model] -> [heads*d_head, d_model]``. Vectors (biases) are not matrices:
    None."""
    if w.ndim < 2:
        return None
    if w.ndim == 2:
        return w
    if w.ndim == 3:
        if name.endswith("W_O"):
            return w.reshape(-1, w.shape[-1])
        return np.moveaxis(w, 0, 1).reshape(w.shape[1], -1)
    return w.reshape(w.shape[0], -1)


def singular_values(mats: np.ndarray) -> np.ndarray:
    """Singular values of ``[..., m, n]`` matrices, ``[..., min(m, n)]`` in descending order (LAPACK's SVD;
    the reference for :func:`fast_singular_values`)."""
    return np.linalg.svd(np.asarray(mats, dtype=np.float64), compute_uv=False)


def fast_singular_values(mats: np.ndarray) -> np.ndarray:
    """Singular values from the eigenvalues of the smaller Gram matrix (``W^T W`` or ``W W^T``) in
    float64: several times faster than an SVD for stacks of matrices. Absolute error about
    ``1e-16 s_max^2 / s_i``, so values below ``~1e-8 s_max`` are noise (clipped at zero); the ranks and
    norms built on them change by less than that share."""
    a = np.asarray(mats, dtype=np.float64)
    m, n = a.shape[-2:]
    gram = np.swapaxes(a, -1, -2) @ a if m >= n else a @ np.swapaxes(a, -1, -2)
    eig = np.linalg.eigvalsh(gram)[..., ::-1]
    return np.sqrt(np.clip(eig, 0.0, None))


def effective_rank(s: np.ndarray) -> np.ndarray:
    """Roy and Vetterli's (2007) effective rank ``exp(H(p))`` with ``p_i = s_i / sum_j s_j`` over the
    last axis (``0 log 0 = 0``); 1 for a rank-one matrix, ``k`` for ``k`` equal singular values. A zero
    matrix has effective rank 0."""
    s = np.asarray(s, dtype=np.float64)
    total = s.sum(axis=-1, keepdims=True)
    p = np.divide(s, total, out=np.zeros_like(s), where=total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=-1)
    return np.where(total[..., 0] > 0, np.exp(h), 0.0)


def stable_rank(s: np.ndarray) -> np.ndarray:
    """``||W||_F^2 / ||W||_2^2 = sum_i s_i^2 / s_max^2`` (Rudelson and Vershynin); 0 for a zero matrix."""
    s = np.asarray(s, dtype=np.float64)
    top = s.max(axis=-1)
    fro = (s**2).sum(axis=-1)
    return np.divide(fro, top**2, out=np.zeros_like(fro), where=top > 0)


def nuclear_norm(s: np.ndarray) -> np.ndarray:
    """``||W||_* = sum_i s_i``."""
    return np.asarray(s, dtype=np.float64).sum(axis=-1)


def near_zero_fraction(w: np.ndarray, tol: float) -> np.ndarray:
    """Share of entries with ``|w| < tol`` over all but the first axis (or over all of a single tensor)."""
    w = np.asarray(w)
    return (np.abs(w) < tol).reshape(w.shape[0], -1).mean(axis=1) if w.ndim > 1 else np.array((np.abs(w) < tol).mean())


def logit_margins(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: the correct-class logit minus the largest other logit, and minus the mean of the
    other logits (``logits [N, C]``, ``labels [N]``). The first is positive exactly when the sample is
    classified correctly; Varma et al. measure a circuit's strength by the logit it produces."""
    z = np.asarray(logits, dtype=np.float64)
    n, c = z.shape
    rows = np.arange(n)
    correct = z[rows, labels]
    others = z.copy()
    others[rows, labels] = -np.inf
    top_other = others.max(axis=1)
    mean_other = (z.sum(axis=1) - correct) / max(c - 1, 1)
    return correct - top_other, correct - mean_other


def log_probs(logits: Any, softmax: str = "softmax") -> Any:
    """``log softmax`` or ``log StableMax`` (Prieto et al. 2025, Eq. 7-8) of a torch tensor over its
    last axis, in the tensor's own dtype (so float32 logits show float32 rounding)."""
    import torch

    if softmax == "softmax":
        return torch.log_softmax(logits, dim=-1)
    from probe.models.base import stablemax_log_probs

    return stablemax_log_probs(logits)


def collapse_masks(logits: np.ndarray, labels: np.ndarray, dtype: str, softmax: str = "softmax") -> tuple[np.ndarray, np.ndarray]:
    """Softmax collapse per sample (Prieto et al. 2025, Sec. 3): whether the cross-entropy is exactly
    zero, and whether its whole gradient with respect to the logits (``p - onehot``) is exactly zero,
    when computed in ``dtype`` (the run's training precision). ``logits`` must be the model's outputs
    in the precision they were computed in (float32 for probe's models: casting to float64 and back is
    exact)."""
    import torch

    z = torch.as_tensor(np.asarray(logits)).to(getattr(torch, dtype))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    lp = log_probs(z, softmax)
    loss = -lp.gather(1, y[:, None])[:, 0]
    grad = lp.exp()
    grad[torch.arange(len(y)), y] -= 1
    return (loss == 0).numpy(), (grad == 0).all(dim=1).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two flat vectors (NaN when either is zero)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.dot(a, b) / (na * nb)) if na > 0 and nb > 0 else float("nan")
