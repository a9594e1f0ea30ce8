"""Irreducible representations of a finite group from its Cayley table, and where a network's
embeddings and logits lie among them (Chughtai, Chan and Nanda 2023, "A toy model of universality:
reverse engineering how networks learn group operations", ICML).

Their claim (Sec. 4, the GCR algorithm, "group composition via representations"): a network trained
on ``a ∘ b`` embeds ``a`` and ``b`` as the matrices ``rho(a)``, ``rho(b)`` of a few irreducible
representations ``rho`` (the key irreps), forms ``rho(a) rho(b) = rho(ab)`` in its hidden layer and
reads out the logit of class ``c`` as ``tr(rho(a) rho(b) rho(c^{-1})) = chi_rho(a b c^{-1})``, so
that ``logits(a, b, c) ~ sum over key rho of w_rho chi_rho(a b c^{-1})`` (``w_rho`` proportional to
``d_rho`` in the Fourier-inversion form ``sum_rho d_rho chi_rho(g) = |G| [g = e]``). The evidence
(Sec. 5): the logits' cosine similarity with each character ``chi_rho(a b c^{-1})`` (Sec. 5.1, logit
attribution) and the share of the embeddings and the unembedding in the span of each irrep's matrix
entries (Sec. 5.2); the subspaces are orthogonal and together span ``R^G`` (their App. D, Theorems
D.10 and D.4: Schur orthogonality, Peter-Weyl for finite groups).

Conventions: ``table[a, b] = a ∘ b`` (element indices ``0..n-1``); a function on ``G`` is a vector of
``R^n``; ``L(g)`` is the left regular representation, ``(L(g) f)(x) = f(g^{-1} x)``.

Construction (exact up to float64 rounding; no character table is assumed). The right translations
``R(h)`` commute with every ``L(g)``, so a random symmetric element ``H = sum_h c_h R(h)``
(``c_h = c_{h^{-1}}``, Gaussian) of the right group algebra acts on each isotypic component
``V ⊗ V*`` of ``R^G`` as ``1 ⊗ B`` with ``B`` generic: each eigenspace of ``H`` is one irreducible
real ``G``-module (Dixon's idea of splitting by a random commuting operator, 1970). Its character
``chi(g) = tr(U^T L(g) U)`` and Frobenius-Schur indicator ``nu = (1/|G|) sum_g chi(g^2)`` tell its
type: ``<chi, chi> = 1, nu = 1`` real (a real orthogonal form of a complex irrep), ``<chi, chi> = 2,
nu = 0`` complex (``rho ⊕ conj(rho)``), ``<chi, chi> = 4, nu = -2`` quaternionic (``rho ⊕ rho``).
The non-real ones are split over ``C`` by a complex structure ``J`` (``J^2 = -1``) in their
commutant, found by averaging a random matrix over the group. Every result is checked
(``sum d^2 = |G|``, one irrep per conjugacy class, orthonormal characters) and the split is redrawn
with the next seed if an accidental eigenvalue coincidence merged two modules.

The real orthonormal basis of ``R^G`` adapted to the irreps (:func:`irrep_basis`): for a real irrep
of dimension ``d`` the ``d^2`` matrix-entry functions ``sqrt(d/|G|) rho_ij(g)``; for a complex irrep
and its conjugate together, ``sqrt(2d/|G|) Re rho_ij`` and ``sqrt(2d/|G|) Im rho_ij`` (``2 d^2``
functions); for a quaternionic irrep an orthonormal basis of the ``d^2``-dimensional real span of the
real and imaginary parts of its entries. For ``Z_p`` this is Nanda et al.'s Fourier basis
``[1, cos_k, sin_k]``, in that order (:mod:`probe.analyses.fourier`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from probe.errors import ProbeError
from probe.tasks import group_axioms_problem

#: largest group order decomposed: S_5 (120) takes about 0.05 s, order 200 about 0.1 s
MAX_ORDER = 200
KINDS = ("real", "complex", "quaternionic")
_SEEDS = 8  # splits tried before giving up (each fails only on an accidental eigenvalue coincidence)


# --------------------------------------------------------------------------------------------------
# the group
# --------------------------------------------------------------------------------------------------
def group_problem(table: np.ndarray) -> str | None:
    """Why ``table`` is not the Cayley table of a group of order at most :data:`MAX_ORDER` (None: it
    is). One line, for refusals."""
    t = np.asarray(table)
    if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] < 1:
        return f"a Cayley table is square, got shape {t.shape}"
    n = t.shape[0]
    if not np.issubdtype(t.dtype, np.integer) or t.min() < 0 or t.max() >= n:
        return "its operation table is not a group's (some a ∘ b is undefined or falls outside the symbols)"
    if n > MAX_ORDER:
        return (f"irreducible representations are computed exactly for groups of order <= {MAX_ORDER}; "
                f"this group has order {n}")
    return _axioms(n, t.astype(np.int64).tobytes())


@lru_cache(maxsize=32)
def _axioms(n: int, raw: bytes) -> str | None:
    problem = group_axioms_problem(np.frombuffer(raw, dtype=np.int64).reshape(n, n))
    return f"its operation table is not a group's ({problem})" if problem else None


def _checked(table: np.ndarray) -> np.ndarray:
    problem = group_problem(table)
    if problem:
        raise ProbeError(problem)
    return np.asarray(table, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Structure:
    """Identity, inverses and conjugacy classes of the group of a Cayley table. Classes are ordered
    with the identity's first, then by their smallest element."""

    identity: int
    inverse: np.ndarray  # [n]
    classes: tuple[tuple[int, ...], ...]
    class_of: np.ndarray  # [n] index into classes


def structure(table: np.ndarray) -> Structure:
    t = _checked(table)
    n = t.shape[0]
    e = int(np.flatnonzero((t == np.arange(n)[None, :]).all(axis=1))[0])
    inv = np.argmax(t == e, axis=1)
    conj = t[t, inv[:, None]]  # conj[g, x] = (g x) g^{-1}
    found: list[tuple[int, ...]] = []
    seen = np.zeros(n, dtype=bool)
    for x in range(n):
        if not seen[x]:
            members = np.unique(conj[:, x])
            seen[members] = True
            found.append(tuple(int(m) for m in members))
    found.sort(key=lambda c: (e not in c, c[0]))
    class_of = np.empty(n, dtype=np.int64)
    for k, c in enumerate(found):
        class_of[list(c)] = k
    return Structure(e, _frozen(inv), tuple(found), _frozen(class_of))


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    a.flags.writeable = False
    return a


# --------------------------------------------------------------------------------------------------
# the irreducible representations
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Irreps:
    """The complex irreducible representations of a finite group, and their real forms.

    ``names``, ``dims``, ``kinds`` (Frobenius-Schur type: real, complex, quaternionic),
    ``characters [n_irreps, n_classes]`` (complex) and ``matrices`` (``rho_i(g)`` as ``[n, d, d]``:
    real orthogonal for real irreps, complex unitary otherwise) list the complex irreps, one per
    conjugacy class; a complex irrep and its conjugate are named ``L`` and ``L*``.

    ``labels`` name the real irreducible representations, the blocks of :func:`irrep_basis`: one per
    real or quaternionic irrep and one per conjugate pair of complex irreps (as Fourier frequency
    ``k`` covers ``+k`` and ``-k``). A label is the complex dimension and a letter (``1a`` is the
    trivial irrep, then by dimension, then by character), ``label_of`` gives each complex irrep's.
    ``real_characters [n_labels, n_classes]`` are the characters of the real forms (``chi``,
    ``chi + conj(chi)`` or ``2 chi``), ``block_sizes`` the real dimension of each label's subspace of
    ``R^G`` (``d^2``, ``2 d^2`` or ``d^2``).
    """

    order: int
    structure: Structure
    names: tuple[str, ...]
    dims: tuple[int, ...]
    kinds: tuple[str, ...]
    characters: np.ndarray
    matrices: tuple[np.ndarray, ...]
    labels: tuple[str, ...]
    label_of: tuple[str, ...]
    real_characters: np.ndarray
    block_sizes: tuple[int, ...]

    @property
    def classes(self) -> tuple[tuple[int, ...], ...]:
        return self.structure.classes

    def character(self, i: int) -> np.ndarray:
        """Character of complex irrep ``i`` on every element ``[n]``."""
        return self.characters[i][self.structure.class_of]

    def real_character(self, label: str) -> np.ndarray:
        """Character of a real irreducible representation on every element ``[n]``."""
        return self.real_characters[self.labels.index(label)][self.structure.class_of]

    def describe(self) -> str:
        """One line, runs of alike irreps joined: ``1a: 1 real (trivial), 1b..1f: 1 complex pair, 3a: 3 real``."""
        kinds = []
        for lab in self.labels:
            i = self.label_of.index(lab)
            kinds.append(f"{self.dims[i]} {self.kinds[i]}{' pair' if self.kinds[i] == 'complex' else ''}")
        kinds[0] += " (trivial)"
        parts = []
        start = 0
        for k in range(1, len(kinds) + 1):
            if k == len(kinds) or kinds[k] != kinds[start]:
                span = self.labels[start] if k - start == 1 else f"{self.labels[start]}..{self.labels[k - 1]}"
                parts.append(f"{span}: {kinds[start]}")
                start = k
        return ", ".join(parts)


def irreps(table: np.ndarray) -> Irreps:
    """The irreducible representations of the group with Cayley table ``table`` (``table[a, b] = a ∘ b``).

    Computed once per table (memoised); S_5 takes about 0.05 s. Raises :class:`ProbeError` for a table
    that is not a group or is larger than :data:`MAX_ORDER`.
    """
    t = _checked(table)
    return _irreps(t.shape[0], t.tobytes())


@lru_cache(maxsize=16)
def _irreps(n: int, raw: bytes) -> Irreps:
    t = np.frombuffer(raw, dtype=np.int64).reshape(n, n)
    st = structure(t)
    for seed in range(_SEEDS):
        modules = _split(t, st, seed)
        if modules is not None:
            return _assemble(n, st, modules)
    raise ProbeError(f"could not split the regular representation of this group of order {n} into irreducibles")


@dataclass
class _Module:
    """One real irreducible representation: its real character on elements, type, complex dimension,
    the complex irrep ``rho`` (real orthogonal for the real type)."""

    chi: np.ndarray
    kind: str
    dim: int
    rho: np.ndarray


def _split(t: np.ndarray, st: Structure, seed: int) -> list[_Module] | None:
    """Split ``R^G`` by a random symmetric element of the right group algebra; None when the split
    is not clean (an accidental coincidence of eigenvalues)."""
    n = t.shape[0]
    inv = st.inverse
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n)
    c = (z + z[inv]) / 2
    left = t[inv]  # left[g, y] = g^{-1} y
    h = c[left]  # H[x, y] = c(x^{-1} y): sum_h c_h R(h), symmetric, commutes with every L(g)
    w, v = np.linalg.eigh(h)
    scale = max(1.0, float(np.abs(w).max()))
    groups = np.split(np.arange(n), np.flatnonzero(np.diff(w) > 1e-8 * scale) + 1)
    rows = np.arange(n)[None, :]
    modules: list[_Module] = []
    seen: list[np.ndarray] = []
    for idx in groups:
        u = v[:, idx]
        p = u @ u.T
        chi = p[rows, left].sum(axis=1)  # chi(g) = tr(U^T L(g) U) = sum_y P[y, g^{-1} y]
        if any(np.allclose(chi, s, atol=1e-6) for s in seen):
            continue
        seen.append(chi)
        m = len(idx)
        norm = float(chi @ chi) / n
        nu = float(chi[np.diagonal(t)].sum()) / n
        kind = next((k for k, (a, b) in zip(KINDS, ((1, 1), (2, 0), (4, -2)))
                     if abs(norm - a) < 1e-6 and abs(nu - b) < 1e-6), None)
        if kind is None or abs(chi[st.identity] - m) > 1e-6:
            return None
        sigma = np.einsum("yi,gyj->gij", u, u[left], optimize=True)  # U^T L(g) U, real orthogonal
        if kind == "real":
            modules.append(_Module(chi, kind, m, sigma))
            continue
        rho = _complex_part(sigma, rng)
        if rho is None:
            return None
        if kind == "complex":
            ch = np.trace(rho, axis1=1, axis2=2)
            first = next((k for k in range(len(st.classes)) if abs(ch[st.classes[k][0]].imag) > 1e-6), None)
            if first is None:
                return None
            if ch[st.classes[first][0]].imag < 0:
                rho = rho.conj()
        modules.append(_Module(chi, kind, m // 2, rho))
    dims = sum((mod.dim ** 2) * (2 if mod.kind == "complex" else 1) for mod in modules)
    count = sum(2 if mod.kind == "complex" else 1 for mod in modules)
    if dims != n or count != len(st.classes):
        return None
    return modules


def _complex_part(sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """The complex irrep inside a real module of complex or quaternionic type: an eigenspace of a
    complex structure ``J`` (``J^2 = -1``) commuting with every ``sigma(g)``. ``J`` is the
    antisymmetric part of a random matrix averaged over the group, ``(1/|G|) sum_g sigma(g) X
    sigma(g)^T`` (the commutant is ``C`` or the quaternions; its antisymmetric part squares to a
    negative multiple of the identity)."""
    n, m, _ = sigma.shape
    x = rng.standard_normal((m, m))
    avg = np.einsum("gij,jk,glk->il", sigma, x, sigma, optimize=True) / n
    a = avg - avg.T
    sq = a @ a
    s = -np.trace(sq) / m
    if s <= 1e-12 or not np.allclose(sq, -s * np.eye(m), atol=1e-8 * max(1.0, s)):
        return None
    ew, ev = np.linalg.eigh(1j * a / np.sqrt(s))
    vec = ev[:, ew > 0]
    if vec.shape[1] != m // 2:
        return None
    return np.einsum("ia,gij,jb->gab", vec.conj(), sigma, vec, optimize=True)


def _letters(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(97 + r) + s
    return s


def _assemble(n: int, st: Structure, modules: list[_Module]) -> Irreps:
    reps = [c[0] for c in st.classes]

    def key(mod: _Module) -> tuple:
        m = float(mod.chi[st.identity])
        return (mod.dim, tuple(-round(float(mod.chi[r]) / m, 6) for r in reps[1:]))

    modules = sorted(modules, key=key)
    names: list[str] = []
    dims: list[int] = []
    kinds: list[str] = []
    chars: list[np.ndarray] = []
    mats: list[np.ndarray] = []
    labels: list[str] = []
    label_of: list[str] = []
    real_chars: list[np.ndarray] = []
    sizes: list[int] = []
    per_dim: dict[int, int] = {}
    for mod in modules:
        lab = f"{mod.dim}{_letters(per_dim.get(mod.dim, 0))}"
        per_dim[mod.dim] = per_dim.get(mod.dim, 0) + 1
        labels.append(lab)
        real_chars.append(mod.chi[reps])
        sizes.append(mod.dim ** 2 * (2 if mod.kind == "complex" else 1))
        rho = mod.rho.real.copy() if mod.kind == "real" else mod.rho
        ch = np.trace(mod.rho, axis1=1, axis2=2).astype(np.complex128)
        members = [(lab, rho, ch)]
        if mod.kind == "complex":
            members.append((f"{lab}*", rho.conj(), ch.conj()))
        for name, r, c in members:
            names.append(name)
            dims.append(mod.dim)
            kinds.append(mod.kind)
            chars.append(c[reps])
            mats.append(_frozen(r))
            label_of.append(lab)
    characters = np.array(chars)
    sizes_c = np.array([len(c) for c in st.classes])
    gram = (characters * sizes_c) @ characters.conj().T / n
    if not np.allclose(gram, np.eye(len(names)), atol=1e-8):
        raise ProbeError("the irreducible characters found are not orthonormal (numerical failure)")
    return Irreps(order=n, structure=st, names=tuple(names), dims=tuple(dims), kinds=tuple(kinds),
                  characters=_frozen(characters), matrices=tuple(mats), labels=tuple(labels),
                  label_of=tuple(label_of), real_characters=_frozen(np.array(real_chars)),
                  block_sizes=tuple(sizes))


# --------------------------------------------------------------------------------------------------
# the basis of R^G and norms in it
# --------------------------------------------------------------------------------------------------
Basis = tuple[np.ndarray, tuple[str, ...]]


def irrep_basis(table: np.ndarray) -> Basis:
    """Real orthonormal basis of ``R^G`` adapted to the irreps: ``[n, n]`` rows (functions on the
    group, like :func:`probe.analyses.fourier.fourier_basis`) and the label of each row.

    Rows come in blocks, one per real irreducible representation in :attr:`Irreps.labels` order:
    ``sqrt(d/|G|) rho_ij`` for a real irrep (Schur orthogonality: ``sum_g rho_ij(g) rho_kl(g) =
    (|G|/d) [i=k][j=l]``), ``sqrt(2d/|G|) Re rho_ij, sqrt(2d/|G|) Im rho_ij`` for a complex one (``rho_ij``
    is orthogonal to ``conj(rho_kl)``, so the real and imaginary parts are orthogonal with half the
    norm each), and for a quaternionic one the leading right singular vectors of those real and
    imaginary parts (they span a ``d^2``-dimensional space, ``rho`` being equivalent to its conjugate).
    """
    t = _checked(table)
    return _basis(t.shape[0], t.tobytes())


@lru_cache(maxsize=16)
def _basis(n: int, raw: bytes) -> Basis:
    rec = _irreps(n, raw)
    rows: list[np.ndarray] = []
    row_labels: list[str] = []
    for lab, size in zip(rec.labels, rec.block_sizes):
        i = rec.label_of.index(lab)
        d, kind, rho = rec.dims[i], rec.kinds[i], rec.matrices[i]
        entries = rho.reshape(n, d * d).T  # [d^2, n], row i*d + j is rho_ij
        if kind == "real":
            block = np.sqrt(d / n) * entries
        else:
            parts = np.stack([entries.real, entries.imag], axis=1).reshape(2 * d * d, n) * np.sqrt(2 * d / n)
            block = parts if kind == "complex" else np.linalg.svd(parts, full_matrices=False)[2][:size]
        rows.append(block)
        row_labels += [lab] * size
    basis = np.concatenate(rows, axis=0)
    return _frozen(basis), tuple(row_labels)


def _block_starts(row_labels: Sequence[str]) -> np.ndarray:
    labels = list(row_labels)
    return np.array([i for i in range(len(labels)) if i == 0 or labels[i] != labels[i - 1]], dtype=np.int64)


def irrep_norms_of(weights: np.ndarray, basis: Basis, axis: int = -2) -> np.ndarray:
    """Norm of ``weights`` projected onto each irrep's block of ``basis`` (:func:`irrep_basis`),
    ``||B_rho W||_F`` (Chughtai et al. Sec. 5.2: the embeddings and unembedding in "representation
    space"). ``axis`` is the group-element axis: ``-2`` for an embedding ``[..., |G|, d]``, ``-1``
    for an unembedding ``[..., d, |G|]``; leading axes are checkpoints. Returns ``[..., n_labels]``
    in label order (trivial first). The squared norms add up to ``||W||_F^2``; each is invariant under
    any orthogonal map of the ``d`` axis.
    """
    b, row_labels = basis
    w = np.moveaxis(np.asarray(weights, dtype=np.float64), axis, -2)  # [..., |G|, d]
    if w.shape[-2] != b.shape[0]:
        raise ProbeError(f"the group-element axis has {w.shape[-2]} entries; the group has order {b.shape[0]}")
    lead = w.shape[:-2]
    flat = w.reshape((-1,) + w.shape[-2:])
    starts = _block_starts(row_labels)
    out = np.empty((flat.shape[0], len(starts)))
    for k in range(flat.shape[0]):  # one product per checkpoint: the same numbers however many are stacked
        coef = b @ np.ascontiguousarray(flat[k])
        out[k] = np.add.reduceat(np.einsum("rd,rd->r", coef, coef), starts)
    return np.sqrt(out).reshape(lead + (len(starts),))


# --------------------------------------------------------------------------------------------------
# key irreps
# --------------------------------------------------------------------------------------------------
KEY_RULES: tuple[str, ...] = ("energy", "share", "logit")
KEY_DEFAULTS: dict[str, float] = {"energy": 1e-6, "share": 0.05, "logit": 0.005}


def energy_thresholds(sizes: Sequence[int], width: int, alpha: float) -> np.ndarray:
    """Per non-trivial irrep, the share of the non-trivial squared norm that Gaussian random weights
    ``[|G|, width]`` exceed with probability ``alpha / n_irreps`` (Bonferroni).

    For i.i.d. Gaussian weights the coefficients in an orthonormal basis are i.i.d. Gaussian, so the
    energy of a block of ``k`` basis functions is ``Gamma(k width / 2)`` and the shares are
    Dirichlet: one share is ``Beta(k width / 2, (N - k) width / 2)`` with ``N = sum(sizes) = |G| - 1``.
    For ``Z_p`` (``k = 2``) this is :func:`probe.analyses.fourier.energy_share_threshold`.
    """
    from scipy.stats import beta

    k = np.asarray(sizes, dtype=np.float64)
    if k.size < 2:
        return np.zeros(k.size)
    total = k.sum()
    return np.array([float(beta.isf(alpha / k.size, ki * width / 2, (total - ki) * width / 2)) for ki in k])


def key_irreps(values: np.ndarray, labels: Sequence[str], rule: str = "energy", threshold: float | None = None,
               *, sizes: Sequence[int] | None = None, width: int | None = None) -> list[str]:
    """The key irreps by a declared ``rule``, largest first; the trivial irrep (``labels[0]``) is never key.

    ``values`` are per label: norms (:func:`irrep_norms_of`) for ``energy`` and ``share``, signed
    logit similarities (:func:`logit_character_similarity`) for ``logit``.

    - ``energy`` (probe's default, as for Fourier frequencies): a share of the squared norm beyond the
      trivial irrep larger than Gaussian random weights of the same shape reach at family-wise level
      ``threshold`` (:func:`energy_thresholds`; needs ``sizes``, the block sizes, and ``width``). It
      accounts for the irreps' dimensions: a 6-dimensional irrep of S_5 holds 36/119 of a random
      embedding's energy, a 1-dimensional one 1/119.
    - ``share``: a share of the squared norm beyond the trivial irrep of at least ``threshold``.
    - ``logit`` (Chughtai et al.'s code, ``rep_theory/utils/metrics.py`` ``determine_key_reps`` at
      bilal-chughtai/rep-theory-mech-interp@01b2063): the cosine similarity of the logits with the
      irrep's character ``chi(a b c^{-1})`` exceeds ``threshold`` (their 0.005).
    """
    v = np.asarray(values, dtype=np.float64)
    if len(v) != len(labels):
        raise ProbeError(f"{len(v)} values for {len(labels)} irreps")
    level = KEY_DEFAULTS[rule] if threshold is None else threshold
    nontrivial = np.arange(1, len(v))
    if rule == "logit":
        score = v
        keep = [i for i in nontrivial if v[i] > level]
    else:
        sq = v[1:] ** 2
        total = sq.sum()
        if total <= 0:
            return []
        score = np.concatenate([[0.0], sq / total])
        if rule == "share":
            keep = [i for i in nontrivial if score[i] >= level]
        elif rule == "energy":
            if sizes is None or width is None:
                raise ProbeError("the energy rule needs the block sizes and the weights' width")
            limit = np.concatenate([[0.0], energy_thresholds(list(sizes)[1:], int(width), level)])
            keep = [i for i in nontrivial if score[i] > limit[i]]
        else:
            raise ProbeError(f"unknown key-irrep rule {rule!r} (valid: {', '.join(KEY_RULES)})", param="irrep_rule")
    keep.sort(key=lambda i: -score[i])
    return [labels[i] for i in keep]


# --------------------------------------------------------------------------------------------------
# logits
# --------------------------------------------------------------------------------------------------
PROJECTIONS = ("character", "output")


def _centred_cube(logits: np.ndarray, n: int) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    if x.shape != (n, n, n):
        raise ProbeError(f"logits must be [{n}, {n}, {n}] (a, b, c) for a group of order {n}, got {x.shape}")
    return x - x.mean(axis=2, keepdims=True)


def logit_character_similarity(logits: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Cosine similarity of the logits with each real irrep's character ``chi(a b c^{-1})`` over all
    ``(a, b, c)`` (Chughtai et al. Sec. 5.1; their ``logit_trace_similarity``), per label ``[n_labels]``.

    ``logits [a, b, c]`` are centred over ``c`` first (softmax ignores a shift per pair), as their code
    does; the trivial irrep's similarity is then 0. ``chi`` is the real character (a complex irrep with
    its conjugate: ``2 Re chi``, as their rotation-matrix representations of ``Z_n``). Computed as
    ``sum_g chi(g) F(g)`` with ``F(g) = sum_s M[s, g^{-1} s]`` and ``M[s, c]`` the logits summed over the
    pairs with ``a b = s``: ``O(|G|^3)``, no ``|G|^3`` character cube.
    """
    t = _checked(table)
    n = t.shape[0]
    rec = irreps(t)
    x = _centred_cube(logits, n)
    total = float(np.einsum("abc,abc->", x, x))
    order = np.argsort(t.ravel(), kind="stable")  # each s = a b occurs n times in a Latin square
    m = x.reshape(n * n, n)[order].reshape(n, n, n).sum(axis=1)  # M[s, c]
    left = t[rec.structure.inverse]  # left[g, s] = g^{-1} s
    f = m[np.arange(n)[None, :], left].sum(axis=1)  # F(g)
    chi = rec.real_characters[:, rec.structure.class_of]  # [n_labels, n]
    inner = chi @ f
    norms = n * n * np.einsum("lg,lg->l", chi, chi)  # sum over (a, b, c) of chi(a b c^{-1})^2
    if total <= 0:
        return np.zeros(len(rec.labels))
    sims = inner / np.sqrt(total * norms)
    sims[0] = 0.0  # the trivial character is constant in c: orthogonal to logits centred over c
    return sims


def logit_variance_share(logits: np.ndarray, table: np.ndarray, projection: str = "character") -> np.ndarray:
    """Share of the logit variance (logits centred over the output ``c``) explained by each irrep,
    per label ``[n_labels]`` (the trivial irrep's share is 0).

    - ``character`` (Chughtai et al. Sec. 5.1, the default): the squared cosine similarity with the
      character ``chi_rho(a b c^{-1})`` (:func:`logit_character_similarity`). The characters are
      orthogonal over ``(a, b, c)`` (their Theorem D.10), so the shares add up to the fraction of
      variance the GCR algorithm's form explains (their "logit FVE", ``percent_logits_explained``).
    - ``output``: the logits as functions of the output ``c``, for every pair, projected onto each
      irrep's block of :func:`irrep_basis` (as they project the unembedding, Sec. 5.2). These shares
      add up to 1 whatever the logits; the character's share is the part of it that is the GCR form.
    """
    if projection == "character":
        return logit_character_similarity(logits, table) ** 2
    if projection != "output":
        raise ProbeError(f"unknown projection {projection!r} (valid: {', '.join(PROJECTIONS)})",
                         param="logit_projection")
    t = _checked(table)
    n = t.shape[0]
    b, row_labels = irrep_basis(t)
    x = _centred_cube(logits, n).reshape(n * n, n)
    total = float(np.einsum("ic,ic->", x, x))
    coef = x @ b.T  # [pairs, basis rows]
    energy = np.add.reduceat(np.einsum("ir,ir->r", coef, coef), _block_starts(row_labels))
    energy[0] = 0.0  # the trivial row is the constant in c, removed by the centring
    return energy / total if total > 0 else np.zeros(len(energy))
