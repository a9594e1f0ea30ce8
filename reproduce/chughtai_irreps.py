"""Chughtai, Chan and Nanda 2023, "A toy model of universality: reverse engineering how networks learn
group operations" (ICML; code github.com/bilal-chughtai/rep-theory-mech-interp): a one-hidden-layer MLP
trained on group composition ``a ∘ b`` computes it through a few irreducible representations (the key
irreps), its logits a sum of their characters ``chi_rho(a b c^-1)``; which irreps are learned varies
with the seed (docs/reproductions/chughtai-irreps/README.md).

Their released results (commit 01b2063), all from their ``OneLayerMLP`` ("Main model used in paper",
``rep_theory/utils/models.py``) trained by ``rep_theory/train_with_checkpoints.py`` with the settings of
``rep_theory/create_batch_experiments.py``, evaluated by ``rep_theory/eval.py``:

* ``rep_theory/batch_experiments/{S5,D59}_MLP_seed{1..4}/``: per run ``key_reps.txt`` (the key irreps of
  the final model: cosine similarity of the logits with the irrep's character above 0.005,
  ``Metrics.determine_key_reps`` in ``rep_theory/utils/metrics.py``), ``key_reps_in_order.txt`` (the order
  in which their similarity first passed 0.05 over the checkpoints, ``rep_theory/determine_key_rep_order.py``),
  ``summary_metrics.json`` (the final model: ``test_acc``, ``percent_logits_explained`` = the sum of the
  squared similarities, the logit FVE of ``rep_theory/paper/universality_results/mlp_all.csv``) and
  ``metrics.csv`` (those metrics at 727 log-spaced checkpoints of the 250,000 epochs). The steps below
  were read from ``metrics.csv``: the first checkpoint whose ``test_acc`` is at least 0.99 and the first
  at which each key irrep's ``logit_<irrep>_rep_trace_similarity`` exceeds 0.05.
* ``rep_theory/batch_experiments/S5_MLP_seed{1..50}/``: the 50 seeds behind the paper's frequency figure
  ``rep_theory/paper/figures/S5_MLP_irrep_freq.pdf`` (its bars, read from the PDF: sign 49, standard 49,
  standard_sign 17, s5_5d_a 18, s5_5d_b 10, s5_6d 0, exactly the counts of the ``key_reps.txt`` files),
  ``S5_MLP_num_key_reps.pdf`` and ``S5_rep_learning_order.pdf``.

probe's irreps are computed from the Cayley table alone (:mod:`probe.analyses.irreps`) and labelled by
dimension and character (``4a``); :func:`authors_names` gives the authors' names, identified by
character: for ``S_n`` by the dimension and the value on a transposition (sign: -1; standard, the
``(n-1, 1)`` Specht module: ``n - 3``; standard_sign: ``3 - n``; ``s5_5d_b``, the ``(3, 2)`` module: 1;
``s5_5d_a``, ``(2, 2, 1)``: -1; ``s5_6d``, ``(3, 1, 1)``: 0), for the dihedral group ``D_n`` (odd ``n``)
by the value on the rotation ``r``, ``2 cos(2 pi k / n)`` for ``freq_k``. An irrep is faithful when its
kernel (the elements where its character equals its dimension) is the identity alone; a set of irreps
is jointly faithful when their kernels meet in the identity.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from probe.reproduce.registry import (Analysis, Artefact, Reproduction, Row, Scale, Setting, fmt_steps,
                                      reproduction)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from probe.analyses.irreps import Irreps
    from probe.tasks import Task

REPO = "github.com/bilal-chughtai/rep-theory-mech-interp"
COMMIT = "01b20634fa26dd878d121700497c4607cd945551"
PAPER = ("Chughtai, Chan and Nanda 2023, A toy model of universality: reverse engineering how networks learn "
         "group operations (ICML)")
BATCH = "rep_theory/batch_experiments"
CREATE = "rep_theory/create_batch_experiments.py"
MODELS = "rep_theory/utils/models.py"
TRAIN = "rep_theory/train_with_checkpoints.py"
GROUPS_CODE = "rep_theory/utils/groups.py"
METRICS_CODE = "rep_theory/utils/metrics.py"
ORDER_CODE = "rep_theory/determine_key_rep_order.py"
EVAL_CODE = "rep_theory/eval.py"
MLP_TABLE = "rep_theory/paper/universality_results/mlp_all.csv"
FREQ_FIG = "rep_theory/paper/figures/S5_MLP_irrep_freq.pdf"
SIM_FIG = "rep_theory/paper/figures/logit_similarity.pdf"
TRANSFORMER_TABLE = "rep_theory/paper/universality_results/transformer_all.csv"

KEY_SIM = 0.005  # determine_key_reps: cosine similarity of the final logits with the character above this
ORDER_SIM = 0.05  # determine_key_rep_order.py: a key irrep is "learned" when its similarity passes this
GEN_ACC = 0.99  # validation accuracy counted as generalised
AUTHORS_EPOCHS = 250_000  # create_batch_experiments.py: num_epochs of every OneLayerMLP run
FACTOR = 2.0  # tolerance on a step count (median over runs): the authors' four S5 seeds span 1.7x

#: the dihedral Cayley tables ship as probe's group tables D9 and D59 (``data/groups``, written by
#: :func:`write_dihedral_csv`)


# --------------------------------------------------------------------------------------------------
# the authors' released numbers
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuthorsRun:
    """One released run (``BATCH/{group}_MLP_seed{seed}/``): its key irreps in the order learned
    (``key_reps_in_order.txt``), its logit FVE (``summary_metrics.json`` ``percent_logits_explained``),
    the first checkpoint with test accuracy >= 0.99 (``metrics.csv``), each key irrep's final cosine
    similarity (``summary_metrics.json`` ``logit_<irrep>_rep_trace_similarity``) and the first checkpoint
    at which it exceeded 0.05 (``metrics.csv``; None: never)."""

    key: tuple[str, ...]
    fve: float
    gen_epoch: int
    final: dict[str, float]
    passes: dict[str, int | None]


AUTHORS_RUNS: dict[str, dict[int, AuthorsRun]] = {
    "S5": {
        1: AuthorsRun(("sign", "standard_sign", "standard", "s5_5d_a"), 0.3905, 161742,
                      {"sign": 0.309, "standard_sign": 0.2944, "standard": 0.4109, "s5_5d_a": 0.199},
                      {"sign": 444, "standard_sign": 26627, "standard": 118505, "s5_5d_a": 124552}),
        2: AuthorsRun(("sign", "standard"), 0.8481, 93556,
                      {"sign": 0.509, "standard": 0.7674},
                      {"sign": 337, "standard": 35893}),
        3: AuthorsRun(("sign", "standard", "s5_5d_b"), 0.5989, 99561,
                      {"sign": 0.4752, "standard": 0.5957, "s5_5d_b": 0.1349},
                      {"sign": 20251, "standard": 26298, "s5_5d_b": 73860}),
        4: AuthorsRun(("sign", "standard"), 0.5925, 139310,
                      {"sign": 0.3726, "standard": 0.6735},
                      {"sign": 645, "standard": 44903}),
    },
    "D59": {
        1: AuthorsRun(("freq_19", "freq_20", "freq_15", "freq_6", "freq_14", "freq_8", "freq_3", "freq_7",
                       "freq_12", "freq_16", "freq_21", "freq_29"), 0.4865, 25973,
                      {"freq_19": 0.288, "freq_20": 0.2086, "freq_15": 0.3497, "freq_6": 0.2705, "freq_14": 0.1815,
                       "freq_8": 0.2712, "freq_3": 0.2313, "freq_7": 0.0589, "freq_12": 0.0127, "freq_16": 0.0203,
                       "freq_21": 0.014, "freq_29": 0.0161},
                      {"freq_19": 9133, "freq_20": 12159, "freq_15": 12466, "freq_6": 13600, "freq_14": 14654,
                       "freq_8": 17227, "freq_3": 18562, "freq_7": 23512, "freq_12": None, "freq_16": None,
                       "freq_21": None, "freq_29": None}),
        2: AuthorsRun(("freq_18", "freq_10", "sign", "freq_19", "freq_6", "freq_26", "freq_7", "freq_20",
                       "freq_21", "freq_23"), 0.5492, 15595,
                      {"freq_18": 0.3438, "freq_10": 0.2638, "sign": 0.3279, "freq_19": 0.3711, "freq_6": 0.2445,
                       "freq_26": 0.2347, "freq_7": 0.007, "freq_20": 0.0109, "freq_21": 0.0231, "freq_23": 0.0243},
                      {"freq_18": 2801, "freq_10": 3504, "sign": 4068, "freq_19": 5416, "freq_6": 7210,
                       "freq_26": 14838, "freq_7": None, "freq_20": None, "freq_21": None, "freq_23": None}),
        3: AuthorsRun(("sign", "freq_20", "freq_22", "freq_16", "freq_9", "freq_12", "freq_11", "freq_15",
                       "freq_18", "freq_19", "freq_24"), 0.5679, 23512,
                      {"sign": 0.3942, "freq_20": 0.252, "freq_22": 0.3254, "freq_16": 0.232, "freq_9": 0.2675,
                       "freq_12": 0.3155, "freq_11": 0.1311, "freq_15": 0.0175, "freq_18": 0.0139, "freq_19": 0.0076,
                       "freq_24": 0.0211},
                      {"sign": 1009, "freq_20": 5764, "freq_22": 6946, "freq_16": 7210, "freq_9": 10215,
                       "freq_12": 14473, "freq_11": 18562, "freq_15": None, "freq_18": None, "freq_19": None,
                       "freq_24": None}),
        4: AuthorsRun(("sign", "freq_7", "freq_10", "freq_15", "freq_21", "freq_17", "freq_19", "freq_20",
                       "freq_29"), 0.5305, 17227,
                      {"sign": 0.2704, "freq_7": 0.2498, "freq_10": 0.36, "freq_15": 0.4167, "freq_21": 0.2999,
                       "freq_17": 0.0173, "freq_19": 0.0204, "freq_20": 0.0186, "freq_29": 0.0264},
                      {"sign": 496, "freq_7": 2944, "freq_10": 4782, "freq_15": 5153, "freq_21": 8268,
                       "freq_17": None, "freq_19": None, "freq_20": None, "freq_29": None}),
    },
}

#: key_reps.txt of BATCH/S5_MLP_seed{1..50}: how many runs each irrep is key in (= FREQ_FIG's bars)
S5_SEEDS = 50
S5_KEY_COUNTS: dict[str, int] = {"sign": 49, "standard": 49, "standard_sign": 17, "s5_5d_a": 18, "s5_5d_b": 10,
                                 "s5_6d": 0}
#: how many key irreps the 50 runs have: {count: runs} (S5_MLP_num_key_reps.pdf)
S5_N_KEY: dict[int, int] = {2: 20, 3: 19, 4: 9, 5: 2}
#: the first line of key_reps_in_order.txt over the 50 runs (S5_rep_learning_order.pdf)
S5_FIRST: dict[str, int] = {"sign": 45, "standard": 2, "s5_5d_a": 2, "s5_5d_b": 1}
#: summary_metrics.json percent_logits_explained over the 50 runs: smallest (seed 23), median, largest (seed 33)
S5_FVE_RANGE = (0.3098, 0.5913, 0.8622)
S5_GENERALISED = 50  # runs of the 50 with test_acc >= 0.99 (the smallest is 0.99988, seed 1)

#: the family each group's claims are compared with: the authors trained S5, S6, A5 and D59, D61, C113, C118
FAMILY_REFERENCE = {"S": "S5", "D": "D59"}


def authors_faithful(group: str, name: str) -> bool:
    """Whether the authors' irrep ``name`` of ``group`` (``S5``, ``D59``) is faithful: on ``S_n`` (n >= 5)
    every irrep but the trivial and the sign one (the only proper normal subgroup is ``A_n``); on ``D_n``
    (odd n) ``freq_k`` exactly when ``gcd(k, n) = 1`` (its kernel is the rotations by multiples of
    ``n / gcd(k, n)``), the sign irrep never."""
    if name in ("trivial", "sign"):
        return False
    if group.startswith("D"):
        n = int(group[1:])
        return math.gcd(int(name.split("_")[1]), n) == 1
    return True


def authors_jointly_faithful(group: str, key: Sequence[str]) -> bool:
    """Every released key set of S5 and D59 that contains a faithful irrep is jointly faithful (a
    faithful irrep's kernel is already the identity); the converse holds too for these groups (the
    kernels of non-faithful irreps of S5 and of D_p, p prime, are the same subgroup: A_n or the
    rotations)."""
    return any(authors_faithful(group, k) for k in key)


def authors_first(run: AuthorsRun) -> str:
    return run.key[0]


def authors_faithful_before_generalising(group: str, run: AuthorsRun) -> bool:
    """Whether the first faithful key irrep's similarity passed 0.05 before test accuracy passed 0.99."""
    steps = [s for k, s in run.passes.items() if authors_faithful(group, k) and s is not None]
    return bool(steps) and min(steps) < run.gen_epoch


# --------------------------------------------------------------------------------------------------
# groups: the dihedral tables, the authors' names, kernels
# --------------------------------------------------------------------------------------------------
def dihedral_table(n: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """The dihedral group of order ``2n`` as the authors index it (``DihedralGroup`` in
    ``rep_theory/utils/groups.py``): element ``i < n`` is the rotation ``r^i`` (``r{i}``), element
    ``n + i`` the reflection ``r^i s`` (``s{i}``); ``r^a s^x ∘ r^b s^y = r^(a + (-1)^x b) s^(x + y)``."""
    if n < 3:
        raise ValueError(f"the dihedral group D_n needs n >= 3, got {n}")
    symbols = tuple([f"r{i}" for i in range(n)] + [f"s{i}" for i in range(n)])
    rot = np.arange(2 * n) % n
    ref = np.arange(2 * n) // n
    a, b = np.meshgrid(np.arange(2 * n), np.arange(2 * n), indexing="ij")
    r = (rot[a] + np.where(ref[a] == 0, 1, -1) * rot[b]) % n
    s = (ref[a] + ref[b]) % 2
    return (r + n * s).astype(np.int64), symbols


def write_dihedral_csv(n: int, path: str | Path) -> Path:
    """Write :func:`dihedral_table` as a Cayley-table CSV that task ``group`` reads (``∘`` corner)."""
    table, symbols = dihedral_table(n)
    path = Path(path)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["∘", *symbols])
        for i, name in enumerate(symbols):
            w.writerow([name, *(symbols[j] for j in table[i])])
    return path


def dihedral_csv(n: int) -> Path:
    """The shipped table of ``D_n`` (the group table ``D{n}``)."""
    from probe.tasks import group_table_path

    return group_table_path(f"D{n}")


def group_name(task: "Task") -> str:
    """``S{n}`` for task ``perm``, the table's name (``D59``) for task ``group``."""
    if task.name == "perm":
        return f"S{task.spec['n']}"
    return str(task.spec.get("group") or task.name)


def authors_names(task: "Task", rec: "Irreps") -> dict[str, str]:
    """probe's irrep labels -> the authors' names (``utils/groups.py``), for ``S_n`` (n <= 5) and the
    dihedral tables of :func:`dihedral_table` (odd n); other groups keep probe's labels."""
    names = {rec.labels[0]: "trivial"}
    group = group_name(task)
    if task.name == "perm":
        n = int(task.spec["n"])
        fixed = np.array([sum(c == str(i) for i, c in enumerate(s)) for s in task.symbols])
        t = int(np.flatnonzero(fixed == n - 2)[0])  # a transposition
        by_value = {(1, -1): "sign", (n - 1, 3 - n): "standard_sign", (n - 1, n - 3): "standard"}
        by_value.update({4: {(2, 0): "s4_2d"}, 5: {(5, 1): "s5_5d_b", (5, -1): "s5_5d_a", (6, 0): "s5_6d"}}.get(n, {}))
        for lab in rec.labels[1:]:
            d = rec.dims[rec.label_of.index(lab)]
            key = (d, int(round(float(rec.real_character(lab)[t]))))
            names[lab] = by_value.get(key, lab)
        return names
    m = re.fullmatch(r"D(\d+)", group)
    if m and "r1" in task.symbols and int(m.group(1)) % 2 == 1:
        n = int(m.group(1))
        r1 = task.symbols.index("r1")
        for lab in rec.labels[1:]:
            d = rec.dims[rec.label_of.index(lab)]
            chi = float(rec.real_character(lab)[r1])
            if d == 1:
                names[lab] = "sign"
            else:
                k = int(round(n * math.acos(max(-1.0, min(1.0, chi / 2))) / (2 * math.pi)))
                names[lab] = f"freq_{k}"
        return names
    return {lab: lab for lab in rec.labels}


def kernel(rec: "Irreps", label: str) -> np.ndarray:
    """Elements on which the real irrep ``label`` is the identity (its character equals its value at e)."""
    chi = rec.real_character(label)
    return np.flatnonzero(np.abs(chi - chi[rec.structure.identity]) < 1e-8)


def jointly_faithful(rec: "Irreps", labels: Sequence[str]) -> bool:
    """Whether the kernels of ``labels`` meet in the identity alone."""
    common = set(range(rec.order))
    for lab in labels:
        common &= set(kernel(rec, lab).tolist())
    return common == {rec.structure.identity}


# --------------------------------------------------------------------------------------------------
# specs
# --------------------------------------------------------------------------------------------------
INIT_ALPHA = 1.0 / 3.0  # every weight matrix x 1/3: the total embedding W_E W_left starts at the authors' scale


@dataclass(frozen=True)
class GroupRuns:
    """The runs of one group in a scale: its task, training fraction and seeds."""

    name: str  # S4, S5, D9, D59
    train_fraction: float
    seeds: tuple[int, ...]

    @property
    def task(self) -> dict[str, Any]:
        if self.name.startswith("S"):
            return {"task": "perm", "n": int(self.name[1:]), "group": None}
        return {"task": "group", "n": None, "group": self.name}


def _yaml_list(xs: list[Any]) -> str:
    return "[" + ", ".join("null" if x is None else json.dumps(x) if isinstance(x, str) else repr(x)
                           for x in xs) + "]"


def spec(groups: Sequence[GroupRuns], steps: int, lr: float, d_embed: int, hidden: int, count: int,
         every: int, train_fraction: float | None = None) -> str:
    """A sweep spec: every group's seeds (split seed = seed) with Chughtai et al.'s optimiser and the
    concatenating MLP; ``train_fraction`` set once when every group shares it."""
    points = [(g, s) for g in groups for s in g.seeds]
    zips = {"task": [g.task["task"] for g, _ in points], "n": [g.task["n"] for g, _ in points],
            "group": [g.task["group"] for g, _ in points]}
    if train_fraction is None:
        zips["train_fraction"] = [float(g.train_fraction) for g, _ in points]
    zips["seed"] = [int(s) for _, s in points]
    zips["split_seed"] = [int(s) for _, s in points]
    fixed = (f"p: null, lr: {lr!r}, weight_decay: 1.0, betas: [0.9, 0.98], steps: {steps}, "
             f"init_alpha: {INIT_ALPHA!r}, model.d_embed: {d_embed}, model.hidden: [{hidden}], "
             f"checkpoint.schedule: geometric, checkpoint.count: {count}, checkpoint.metrics_every: {every}")
    if train_fraction is not None:
        fixed += f", train_fraction: {train_fraction!r}"
    body = "".join(f"  {k}: {_yaml_list(v)}\n" for k, v in zips.items())
    return f"preset: kitouni-mlp\nset: {{{fixed}}}\nzip:\n{body}"


QUICK_GROUPS = (GroupRuns("S4", 0.8, (1, 2)), GroupRuns("D9", 0.8, (1, 2)))
QUICK = dict(steps=2000, lr=1e-2, d_embed=64, hidden=128, count=40, every=20, train_fraction=0.8)
PAPER_GROUPS = (GroupRuns("S5", 0.4, (1, 2, 3, 4)), GroupRuns("D59", 0.3, (1, 2, 3, 4)))
PAPER_RUNS = dict(steps=250_000, lr=1e-3, d_embed=256, hidden=128, count=150, every=100)


SETTING = (
    Setting("task", "composition a ∘ b over all n^2 ordered pairs of S5 (sympy's SymmetricGroup(5), order 120) and "
            "of the dihedral group D59 (order 118, elements r^i and r^i s); also S6, A5, D61, C113, C118", GROUPS_CODE,
            "perm, n = 5 (probe's S5 table, a ∘ b = a(b(x))); group D59 (data/groups/D59.csv, dihedral_table(59), "
            "the authors' indexing)",
            "S6 (720 elements), A5, D61 and the cyclic groups are not trained (S6 is beyond probe's 200-element "
            "irrep limit; the others add no claim beyond S5 and D59); sympy composes permutations the other way "
            "round, the opposite group, whose irreps have the same characters and names"),
    Setting("split", "torch.manual_seed(seed); torch.randperm(n^2); the first int(frac_train n^2) pairs train, the "
            "rest test; frac_train 0.4 for S5 ('min needed to generalise on wd = 1'), 0.3 for D59", GROUPS_CODE + ", "
            + CREATE, "train_fraction 0.4 (S5: 5,760 pairs) and 0.3 (D59: 4,177), split_seed = seed in 1..4",
            "other draws of the same sizes (numpy's generator, not torch's randperm)"),
    Setting("model", "OneLayerMLP: separate embeddings W_x, W_y [n, 256], concatenated (512) @ W [512, 128], ReLU, "
            "@ W_U [128, n]; no biases", MODELS,
            "mlp: one embedding W_E [n, 256] for both operands, concatenated, decoder.0 [512, 128] with bias, ReLU, "
            "unembed [128, n] with bias",
            "probe's MLP shares one embedding between the operands and has biases: with d_embed >= n its "
            "W_E W_left and W_E W_right are still any two [n, 128] matrices, so every function of the authors' "
            "model is one of probe's (biases zero), but the weights weight decay acts on differ (the analyses "
            "read the logits, which both have)"),
    Setting("init", "W_x, W_y ~ N(0, 1/256), W ~ N(0, 1/512), W_U ~ N(0, 1/128) after torch.manual_seed(seed)",
            MODELS, f"W_E N(0, 1), decoder and unembedding U(+-1/sqrt(fan_in)) (biases too), every matrix x "
            f"{INIT_ALPHA:.4g} (init_alpha): the total embedding W_E W_left starts at std 0.045 per entry (theirs "
            "W_x W[:256]: 0.044)", "the unembedding starts about 5 times smaller than theirs, the biases are extra"),
    Setting("optimizer", "AdamW(model.parameters(), lr 1e-3, betas (0.9, 0.98), weight_decay 1), no warm-up, no "
            "schedule", TRAIN + ", " + CREATE,
            "adamw, lr 0.001, betas (0.9, 0.98), weight_decay 1.0 on every parameter"),
    Setting("batches", "full batch: the whole training split every epoch", TRAIN, "batch_size unset (full batch)"),
    Setting("steps", "num_epochs 250,000 for the OneLayerMLP runs (S5, D59), seeds 1-4; S5 also seeds 5-50",
            CREATE, "steps 250000, seeds 1-4 (quick: 2,000 steps on S4 and D9, seeds 1-2)",
            "4 seeds of S5 against the authors' 50 for the per-irrep frequencies"),
    Setting("loss", "cross-entropy on float64 log-softmax (loss_fn)", MODELS, "cross_entropy, softmax_dtype float64"),
    Setting("checkpoints", "1,000 log-spaced checkpoints (np.logspace), metrics.csv evaluated on 727 distinct ones; "
            "test accuracy logged every 100 epochs", TRAIN + ", " + EVAL_CODE,
            "150 geometric checkpoints, metrics every 100 steps (quick: 40 and 20)",
            "the similarity passes are read on the checkpoints, about 9% apart in step (theirs about 2%); the "
            "generalisation step on the metrics, to 100 steps"),
    Setting("key irreps", "determine_key_reps: the final model's logits over all n^2 pairs, centred over the output, "
            "cosine similarity with the character cube tr(rho(a) rho(b) rho(c^-1)) above 0.005", METRICS_CODE,
            "key_irreps --irrep-rule logit (threshold 0.005) at the last checkpoint; real characters from the "
            "Cayley table (probe.analyses.irreps)"),
    Setting("logit FVE", "percent_logits_explained: sum over non-trivial irreps of the squared similarity",
            METRICS_CODE, "irrep_logit_fve of irrep_logit_share (the same sum)"),
    Setting("order learned", "the first checkpoint at which a key irrep's (signed) similarity exceeds 0.05, at most "
            "one irrep per checkpoint, the others appended in key_reps.txt's order", ORDER_CODE,
            "the first checkpoint at which sqrt(irrep_logit_share) exceeds 0.05; ties broken by the larger share",
            "probe reads the unsigned similarity (a share is its square)"),
    Setting("transformer", "a one-layer TransformerLens model (4 heads, d_model 128, d_mlp 512, biases frozen at 0, "
            "no LayerNorm) on S5 (frac 0.6, 50,000 epochs) and the other groups", MODELS + ", " + TRANSFORMER_TABLE,
            "not trained", "the MLP is the paper's main model; a transformer on S5 costs about 1 s a step on a CPU "
            "core (14 h a run)"),
)


# --------------------------------------------------------------------------------------------------
# the runs
# --------------------------------------------------------------------------------------------------
def first_passing(steps: np.ndarray, values: np.ndarray, level: float) -> float:
    """The first step whose value exceeds ``level`` (inf: never)."""
    hit = np.flatnonzero(np.asarray(values, dtype=np.float64) > level)
    return float(steps[hit[0]]) if len(hit) else math.inf


def _run_table(sweep_dir: str) -> "pd.DataFrame":
    """One row per finished run: its group and seed, generalisation, key irreps (probe's labels and the
    authors' names), logit FVE, faithfulness, the order learned; the curves in ``metrics``, ``sims``."""
    import pandas as pd

    from probe.analyses import compute
    from probe.analyses import irreps as ir
    from probe.sweep import load_sweep

    sw = load_sweep(sweep_dir)
    records = []
    for name, run in sw.done_runs():
        cfg, metrics, task = run.config, run.metrics, run.task
        if cfg is None or not len(metrics):
            continue
        share = compute(run, "irrep_logit_share")
        keys = compute(run, "key_irreps", steps="last", irrep_rule="logit", irrep_threshold=KEY_SIM)
        rec = ir.irreps(task.table)
        names = authors_names(task, rec)
        key = [k for k in str(keys["key_irreps"].iloc[-1]).split(",") if k.strip()]
        steps = share["step"].to_numpy(dtype=np.float64)
        sims = {lab: np.sqrt(np.clip(share[f"irrep_logit_share_{lab}"].to_numpy(dtype=np.float64), 0, None))
                for lab in rec.labels[1:]}
        passes = {lab: first_passing(steps, sims[lab], ORDER_SIM) for lab in key}
        passed = [lab for lab in key if math.isfinite(passes[lab])]
        passed.sort(key=lambda lab: (passes[lab], -float(sims[lab][int(np.searchsorted(steps, passes[lab]))])))
        ms = metrics["step"].to_numpy(dtype=np.float64)
        gen = first_passing(ms, metrics["val_acc"].to_numpy(dtype=np.float64), GEN_ACC - 1e-12)
        faithful_steps = [passes[lab] for lab in key if jointly_faithful(rec, [lab])]
        last = metrics.iloc[-1]
        records.append({
            "run": name, "group": group_name(task), "seed": int(cfg.seed), "budget": int(cfg.steps),
            "last_step": int(last["step"]), "final_train_acc": float(last["train_acc"]),
            "final_val_acc": float(last["val_acc"]), "gen_step": gen,
            "key_irreps": ",".join(key), "key_names": ",".join(names[k] for k in key), "n_key": len(key),
            "n_irreps": len(rec.labels) - 1, "fve": float(share["irrep_logit_fve"].iloc[-1]),
            "jointly_faithful": bool(key) and jointly_faithful(rec, key),
            "first_key": names[passed[0]] if passed else "",
            "faithful_before_gen": bool(faithful_steps) and math.isfinite(gen) and min(faithful_steps) < gen,
            "metrics": metrics[["step", "train_acc", "val_acc"]].copy(),
            "sims": {names[lab]: (steps, v) for lab, v in sims.items()},
        })
    cols = ["run", "group", "seed", "budget", "last_step", "final_train_acc", "final_val_acc", "gen_step",
            "key_irreps", "key_names", "n_key", "n_irreps", "fve", "jointly_faithful", "first_key",
            "faithful_before_gen", "metrics", "sims"]
    table = pd.DataFrame(records, columns=cols)
    order = sorted(range(len(table)), key=lambda i: (_group_order(table["group"].iloc[i]), table["seed"].iloc[i]))
    return table.iloc[order].reset_index(drop=True)


def _group_order(name: str) -> tuple[int, int]:
    m = re.fullmatch(r"([A-Z])(\d+)", str(name))
    return ("SDAC".find(m.group(1)), int(m.group(2))) if m else (9, 0)


def median(values: Sequence[float]) -> float:
    v = np.asarray(list(values), dtype=np.float64)
    return float(np.median(v)) if len(v) else math.nan


def steps_agree(paper: float, ours: float) -> bool:
    if not (math.isfinite(paper) and math.isfinite(ours)) or min(paper, ours) <= 0:
        return False
    return max(paper, ours) <= FACTOR * min(paper, ours)


def _count(flags: Sequence[bool]) -> tuple[int, int]:
    return int(sum(bool(f) for f in flags)), len(flags)


def _majority(hits: int, total: int) -> bool:
    return total > 0 and hits > total / 2


def _reference(group: str) -> tuple[str, bool]:
    """The authors' group the claims of ``group`` are compared with, and whether it is the same group."""
    if group in AUTHORS_RUNS:
        return group, True
    return FAMILY_REFERENCE.get(group[:1], "S5"), False


def _runs_text(values: Sequence[Any], seeds: Sequence[int]) -> str:
    return ", ".join(f"seed {s}: {v}" for s, v in zip(seeds, values))


# --------------------------------------------------------------------------------------------------
# the comparison
# --------------------------------------------------------------------------------------------------
def analyse(sweep_dir: str, scale: str) -> Analysis:
    """Per group: how many runs generalise (and, for the authors' own groups, at which step), whether the
    key irreps are jointly faithful, the logit variance the characters explain, how many irreps are key,
    how often each irrep is key (S5, against the 50 released seeds), which is learned first, and whether a
    faithful irrep is learned before generalisation, recomputed from the runs."""
    table = _run_table(sweep_dir)
    rows: list[Row] = []
    for group in dict.fromkeys(table["group"]):
        g = table[table["group"] == group]
        seeds = [int(s) for s in g["seed"]]
        ref, same = _reference(group)
        auth = AUTHORS_RUNS[ref]
        aseeds = sorted(auth)
        src = f"{REPO} {BATCH}/{ref}_MLP_seed{{1..4}}"
        where = f"{len(g)} run{'s' if len(g) > 1 else ''}, budget {int(g['budget'].max()):,}"
        of = "" if same else f" (authors' {ref}, the nearest group they trained)"

        def claim(quantity: str, paper: str, source: str, flags: Sequence[bool], detail: str) -> None:
            hits, total = _count(flags)
            rows.append(Row(f"{quantity}, {group}{of}", paper, source, f"{hits}/{total} runs ({detail}; {where})",
                            "more than half of the runs", "agrees" if _majority(hits, total) else "differs"))

        # 1. generalisation
        gen_paper = f"{len(aseeds)}/{len(aseeds)} (seeds 1-4)"
        if ref == "S5":
            gen_paper += f"; {S5_GENERALISED}/{S5_SEEDS} over seeds 1-50"
        claim(f"runs whose validation accuracy reaches {GEN_ACC:g}", gen_paper, f"{src}/summary_metrics.json",
              [v >= GEN_ACC for v in g["final_val_acc"]],
              "final val acc " + _runs_text([f"{v:.3f}" for v in g["final_val_acc"]], seeds))
        # 2. when (the authors' own groups only)
        if same:
            paper_steps = [float(auth[s].gen_epoch) for s in aseeds]
            ours = [float(v) for v in g["gen_step"]]
            rows.append(Row(f"steps to validation accuracy {GEN_ACC:g} (median over runs), {group}",
                            f"{fmt_steps(median(paper_steps))} (seeds 1-4: "
                            f"{', '.join(fmt_steps(v) for v in paper_steps)})", f"{src}/metrics.csv",
                            f"{fmt_steps(median(ours))} ({_runs_text([fmt_steps(v) for v in ours], seeds)}; {where})",
                            f"within a factor {FACTOR:g}", "agrees" if steps_agree(median(paper_steps), median(ours))
                            else "differs"))
        # 3. jointly faithful key irreps
        hits = sum(authors_jointly_faithful(ref, auth[s].key) for s in aseeds)
        fpaper = f"{hits}/{len(aseeds)} (seeds 1-4)"
        if ref == "S5":
            fpaper += f"; {S5_SEEDS}/{S5_SEEDS} over seeds 1-50 (each holds standard, standard_sign or a 5d irrep)"
        claim("runs whose key irreps are jointly faithful (their kernels meet in the identity)", fpaper,
              f"{src}/key_reps.txt", list(g["jointly_faithful"]),
              "key irreps " + _runs_text([f"[{k}]" for k in g["key_names"]], seeds))
        # 4. logit FVE
        fves = [float(v) for v in g["fve"]]
        afve = [auth[s].fve for s in aseeds]
        lo, hi = min(afve), max(afve)
        apaper = f"{median(afve):.3f} (seeds 1-4: {', '.join(f'{v:.3f}' for v in afve)})"
        if ref == "S5":
            lo, hi = S5_FVE_RANGE[0], S5_FVE_RANGE[2]
            apaper += f"; {lo:.3f} to {hi:.3f} over seeds 1-50"
        ok = (lo <= median(fves) <= hi) if same else median(fves) >= lo
        rows.append(Row(f"logit variance explained by the characters (logit FVE) at the last step, median over "
                        f"runs, {group}{of}", apaper, f"{src}/summary_metrics.json (percent_logits_explained); "
                        f"{MLP_TABLE}", f"{median(fves):.3f} ({_runs_text([f'{v:.3f}' for v in fves], seeds)}; "
                        f"{where})", f"inside {lo:.3f} to {hi:.3f}" if same else f"at least {lo:.3f}, the authors' "
                        "smallest", "agrees" if ok else "differs"))
        # 5. how many irreps are key
        nk = [int(v) for v in g["n_key"]]
        n_irreps = int(g["n_irreps"].iloc[0])
        ank = [len(auth[s].key) for s in aseeds]
        if same:
            if ref == "S5":
                dist = ", ".join(f"{c} in {r}" for c, r in S5_N_KEY.items())
                paper = f"3 of 6 (seeds 1-50: {dist} runs)"
                lo_k, hi_k = min(S5_N_KEY), max(S5_N_KEY)
            else:
                paper = f"{median(ank):g} of {n_irreps} (seeds 1-4: {', '.join(map(str, ank))})"
                lo_k, hi_k = min(ank), max(ank)
            rows.append(Row(f"key irreps per run (median), {group}", paper, f"{src}/key_reps.txt",
                            f"{median(nk):g} of {n_irreps} ({_runs_text(nk, seeds)}; {where})",
                            f"inside {lo_k} to {hi_k}", "agrees" if lo_k <= median(nk) <= hi_k else "differs"))
        else:
            lo_k, hi_k = (min(S5_N_KEY), max(S5_N_KEY)) if ref == "S5" else (min(ank), max(ank))
            runs_of = f"{S5_SEEDS} runs" if ref == "S5" else f"{len(aseeds)} runs"
            claim(f"runs with fewer key irreps than the {n_irreps} non-trivial ones",
                  f"every run ({ref}, {runs_of}: {lo_k} to {hi_k} of {len(AUTHORS_N_IRREPS[ref])})",
                  f"{src}/key_reps.txt", [k < n_irreps for k in nk], "key irreps " + _runs_text(nk, seeds))
        # 6. how often each irrep is key (the authors' own groups)
        if same and ref == "S5":
            for name, count in S5_KEY_COUNTS.items():
                flags = [name in str(k).split(",") for k in g["key_names"]]
                hits, total = _count(flags)
                both = (count > S5_SEEDS / 2) == _majority(hits, total)
                rows.append(Row(f"runs in which {name} is a key irrep, {group}", f"{count}/{S5_SEEDS} (seeds 1-50)",
                                f"{REPO} {BATCH}/S5_MLP_seed{{1..50}}/key_reps.txt; {FREQ_FIG}",
                                f"{hits}/{total} runs ({where})", "the same side of one half",
                                "agrees" if both else "differs"))
        elif same:
            count = sum("sign" in auth[s].key for s in aseeds)
            flags = [("sign" in str(k).split(",")) for k in g["key_names"]]
            hits, total = _count(flags)
            both = (count > len(aseeds) / 2) == _majority(hits, total)
            rows.append(Row(f"runs in which sign is a key irrep, {group}", f"{count}/{len(aseeds)} (seeds 1-4)",
                            f"{src}/key_reps.txt", f"{hits}/{total} runs ({where})", "the same side of one half",
                            "agrees" if both else "differs"))
        # 7. sign learned first (S_n)
        if ref == "S5":
            claim("runs whose first key irrep learned (similarity above 0.05) is sign",
                  f"{S5_FIRST['sign']}/{S5_SEEDS} (seeds 1-50)",
                  f"{REPO} {BATCH}/S5_MLP_seed{{1..50}}/key_reps_in_order.txt",
                  [f == "sign" for f in g["first_key"]], "first " + _runs_text([f or "none" for f in g["first_key"]],
                                                                              seeds))
        # 8. a faithful irrep before generalisation
        hits = sum(authors_faithful_before_generalising(ref, auth[s]) for s in aseeds)
        claim(f"runs in which a faithful key irrep's similarity passes {ORDER_SIM:g} before validation accuracy "
              f"passes {GEN_ACC:g}", f"{hits}/{len(aseeds)} (seeds 1-4)", f"{src}/metrics.csv",
              list(g["faithful_before_gen"]),
              "generalised at " + _runs_text([fmt_steps(v) for v in g["gen_step"]], seeds))
    runs = table.drop(columns=["metrics", "sims"]).reset_index(drop=True)
    curves = {str(r["run"]): {"group": r["group"], "seed": int(r["seed"]), "metrics": r["metrics"],
                              "sims": r["sims"], "key_names": str(r["key_names"])} for _, r in table.iterrows()}
    return Analysis(tuple(rows), runs, {"scale": scale, "curves": curves})


#: the non-trivial irreps of the authors' groups (their irreps.txt less trivial)
AUTHORS_N_IRREPS: dict[str, tuple[str, ...]] = {
    "S5": ("sign", "standard", "standard_sign", "s5_5d_a", "s5_5d_b", "s5_6d"),
    "D59": ("sign", *(f"freq_{k}" for k in range(1, 30))),
}


# --------------------------------------------------------------------------------------------------
# the figure
# --------------------------------------------------------------------------------------------------
def _key_share(curves: dict[str, dict[str, Any]], group: str) -> tuple[list[str], list[float]]:
    runs = [c for c in curves.values() if c["group"] == group]
    names = list(next(iter(runs))["sims"]) if runs else []
    share = [sum(n in c["key_names"].split(",") for c in runs) / len(runs) for n in names] if runs else []
    return names, share


def draw(analysis: Analysis) -> "Figure":
    """Laid out like the paper's logit-similarity figure (``logit_similarity.pdf``: each irrep's cosine
    similarity with the logits against the epoch, log axis), one column per group, the lowest seed drawn
    (for the authors' own groups, their run of the same seed: its key irreps' 0.05 passes as circles and
    final similarities as crosses at epoch 250,000); above it the accuracies, below it how often each
    irrep is key, probe's runs against the authors' (``S5_MLP_irrep_freq.pdf``: 50 seeds of S5)."""
    from probe.analyses import plots

    plt = plots._plt()
    curves: dict[str, dict[str, Any]] = analysis.extra["curves"]
    groups = list(dict.fromkeys(c["group"] for c in sorted(curves.values(), key=lambda c: (_group_order(c["group"]),
                                                                                          c["seed"]))))
    ncol = max(1, len(groups))
    fig, axes = plt.subplots(3, ncol, figsize=(6.2 * ncol, 11), squeeze=False, constrained_layout=True,
                             gridspec_kw={"height_ratios": [1, 1.6, 1.6]})
    for col, group in enumerate(groups):
        ax_acc, ax_sim, ax_bar = axes[0, col], axes[1, col], axes[2, col]
        runs = sorted((c for c in curves.values() if c["group"] == group), key=lambda c: c["seed"])
        shown = runs[0]
        for c in runs:
            m = c["metrics"][c["metrics"]["step"] > 0]
            alpha = 0.9 if c is shown else 0.3
            ax_acc.plot(m["step"], m["train_acc"], color="tab:blue", lw=1, alpha=alpha,
                        label="train" if c is shown else None)
            ax_acc.plot(m["step"], m["val_acc"], color="tab:orange", lw=1, alpha=alpha,
                        label="validation" if c is shown else None)
        ax_acc.set_xscale("log")
        ax_acc.set_ylabel("accuracy")
        ax_acc.set_title(f"{group}: probe's runs (seed {shown['seed']} bold)", fontsize=10)
        ax_acc.legend(fontsize=7, frameon=False)
        keys = shown["key_names"].split(",")
        cmap = plt.get_cmap("tab10")
        colours: dict[str, Any] = {}
        for name, (steps, sim) in shown["sims"].items():
            on = steps > 0
            if name in keys or len(shown["sims"]) <= 8:
                colours[name] = cmap(len(colours) % 10)
                ax_sim.plot(steps[on], sim[on], color=colours[name], lw=1.4, label=name)
            else:
                ax_sim.plot(steps[on], sim[on], color="0.75", lw=0.6)
        auth = AUTHORS_RUNS.get(group, {}).get(shown["seed"])
        if auth is not None:
            for name, step in auth.passes.items():
                if step is not None:
                    ax_sim.plot([step], [ORDER_SIM], "o", color=colours.get(name, "k"), ms=5, mfc="none")
                ax_sim.plot([AUTHORS_EPOCHS], [auth.final[name]], "x", color=colours.get(name, "k"), ms=6, mew=1.5)
            ax_sim.plot([], [], "o", color="k", mfc="none",
                        label=f"authors' seed {shown['seed']}: passes {ORDER_SIM:g}")
            ax_sim.plot([], [], "x", color="k", label=f"authors' seed {shown['seed']}: final ({AUTHORS_EPOCHS:,})")
        ax_sim.axhline(ORDER_SIM, color="0.6", lw=0.6, ls=":")
        ax_sim.set_xscale("log")
        ax_sim.set_xlabel("step")
        ax_sim.set_ylabel("cosine similarity of the logits with chi(a b c^-1)")
        ax_sim.legend(fontsize=7, frameon=False, ncol=2, loc="upper left")
        names, share = _key_share(curves, group)
        y = np.arange(len(names))
        ax_bar.barh(y + 0.2, share, height=0.4, color="tab:blue", label=f"probe ({len(runs)} runs)")
        ref = AUTHORS_RUNS.get(group)
        if group == "S5":
            ax_bar.barh(y - 0.2, [S5_KEY_COUNTS.get(n, 0) / S5_SEEDS for n in names], height=0.4, color="tab:gray",
                        label=f"authors ({S5_SEEDS} seeds, {FREQ_FIG.rsplit('/', 1)[-1]})")
        elif ref is not None:
            ax_bar.barh(y - 0.2, [sum(n in r.key for r in ref.values()) / len(ref) for n in names], height=0.4,
                        color="tab:gray", label=f"authors ({len(ref)} seeds, key_reps.txt)")
        ax_bar.set_yticks(y)
        ax_bar.set_yticklabels(names, fontsize=7 if len(names) <= 10 else 5)
        ax_bar.invert_yaxis()
        ax_bar.set_xlim(0, 1.05)
        ax_bar.set_xlabel("fraction of runs in which the irrep is key (logit similarity > 0.005)")
        ax_bar.legend(fontsize=7, frameon=False, loc="lower right")
    fig.suptitle(f"Chughtai et al. 2023, irreps learned by the one-layer MLP, {analysis.extra['scale']} scale",
                 fontsize=11)
    return fig


reproduction(Reproduction(
    name="chughtai-irreps",
    paper=f"{PAPER}; code {REPO}",
    figure="the irreps learned over training (logit_similarity.pdf) and across seeds (S5_MLP_irrep_freq.pdf), "
           "Table mlp_all (key irreps and logit FVE per group and seed)",
    artefact=Artefact(REPO, COMMIT, BATCH,
                      "per run (S5 and D59 MLPs, seeds 1-4; S5 seeds 5-50): key_reps.txt, key_reps_in_order.txt, "
                      "summary_metrics.json (test accuracy, logit FVE) and metrics.csv over 727 checkpoints (S5 "
                      "seed 2: sign and standard key, logit FVE 0.848, test accuracy 0.99 at epoch 93,556)"),
    trains="the concatenating MLP (d_embed 256, hidden 128, AdamW lr 1e-3, weight decay 1) on S5 and the dihedral "
           "group D59, four seeds each",
    setting=SETTING,
    scales={
        "quick": Scale("quick", spec(QUICK_GROUPS, **QUICK), "17 s (--jobs 1)",
                       "S4 and D9 (the nearest small groups of the two families the authors trained), two seeds "
                       "each, 2,000 full-batch steps at lr 0.01 (ten times the authors'), training fraction 0.8, "
                       "d_embed 64: every run generalises within about 1,500 steps; the claims are compared with "
                       "the authors' S5 and D59 runs"),
        "paper": Scale("paper", spec(PAPER_GROUPS, **PAPER_RUNS), "unmeasured",
                       "the authors' batch setting: S5 (training fraction 0.4) and D59 (0.3), seeds 1-4, 250,000 "
                       "full-batch steps at lr 0.001; unmeasured: 35 ms a step for S5 and 31 ms for D59 on one core "
                       "(measured over 1,000 steps), so about 18 core-hours, about 9 hours with --jobs 2"),
    },
    analyse=analyse,
    draw=draw,
    claims=("a network trained on group composition learns a few irreducible representations (key irreps), jointly "
            "faithful, whose characters explain much of its logits' variance",
            "which irreps are learned varies with the seed; on S5 the sign and standard irreps are learned in almost "
            "every run, the 6-dimensional one never, the sign irrep first"),
))
