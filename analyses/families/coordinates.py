"""Registered 2-D coordinates of the symbol embeddings for figures: PCA, UMAP, t-SNE."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from probe.analyses.applies import table_task
from probe.analyses.families.fourier import REFERENCE
from probe.analyses.registry import Param, metric, positive_int
from probe.analyses.representations import centred, principal_axes
from probe.errors import ProbeError

if TYPE_CHECKING:
    from probe.analyses.context import Context
    from probe.run import Checkpoint


def _coords(tag: str, xy: np.ndarray) -> dict[str, float]:
    out = {}
    for k in range(xy.shape[0]):
        out[f"{tag}_x{k}"] = float(xy[k, 0])
        out[f"{tag}_y{k}"] = float(xy[k, 1])
    return out


AXES = Param("axes", str, "refit", "PCA axes: refit at each step, or fixed to the reference (final) checkpoint",
             choices=("refit", "final"))


@metric("pca2d", "embeddings on their first two principal components (axes refit per step or fixed to the "
        "final checkpoint's): columns pca2d_x{k}, pca2d_y{k} per symbol", needs=("embeddings",),
        params=(AXES, REFERENCE), applies=table_task)
def pca2d(ckpt: "Checkpoint", ctx: "Context", axes: str, reference: str) -> dict[str, float]:
    e = centred(ckpt.embeddings())
    if axes == "final":
        vt = ctx.memo(("final_axes", reference), lambda: principal_axes(ctx.embeddings_at(reference))[1])
    else:
        vt = principal_axes(ckpt.embeddings())[1]
    xy = e @ vt[:2].T
    if xy.shape[1] < 2:  # 1-D embeddings: the line itself, y = 0
        ctx.note("the embeddings have one principal component: pca2d_y is 0")
        xy = np.concatenate([xy, np.zeros((xy.shape[0], 1))], axis=1)
    return _coords("pca2d", xy)


@metric("umap", "UMAP (umap-learn) 2-D coordinates of the symbol embeddings: umap_x{k}, umap_y{k}",
        needs=("embeddings",),
        params=(Param("neighbors", int, 10, "UMAP n_neighbors", check=positive_int),), applies=table_task)
def umap_coords(ckpt: "Checkpoint", ctx: "Context", neighbors: int) -> dict[str, float]:
    import sys
    import warnings

    import umap

    e = centred(ckpt.embeddings())
    torch = sys.modules.get("torch")  # numba's OpenMP pool resets the process's thread count, torch's too
    threads = torch.get_num_threads() if torch is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xy = umap.UMAP(n_neighbors=min(neighbors, e.shape[0] - 1), random_state=0, n_jobs=1).fit_transform(e)
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return _coords("umap", xy)


@metric("tsne", "t-SNE (scikit-learn) 2-D coordinates of the symbol embeddings: tsne_x{k}, tsne_y{k}",
        needs=("embeddings",),
        params=(Param("perplexity", float, 5.0, "t-SNE perplexity", check=lambda x: None if x > 0 else "must be > 0"),),
        applies=table_task)
def tsne_coords(ckpt: "Checkpoint", ctx: "Context", perplexity: float) -> dict[str, float]:
    from sklearn.manifold import TSNE

    e = centred(ckpt.embeddings())
    if e.shape[0] < 3:
        raise ProbeError(f"t-SNE needs at least 3 symbols, the embeddings have {e.shape[0]}")
    init = "pca" if e.shape[1] >= 2 else "random"  # PCA initialisation needs two dimensions
    try:
        xy = TSNE(n_components=2, perplexity=min(perplexity, e.shape[0] - 1.0), random_state=0,
                  init=init).fit_transform(e)
    except ValueError as exc:
        raise ProbeError(f"t-SNE failed on these embeddings: {str(exc).splitlines()[0]}") from None
    return _coords("tsne", xy)
