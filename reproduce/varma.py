"""What the three Varma et al. reproductions share (``varma-ungrokking``, ``varma-dcrit``,
``varma-semigrokking``): the paper they cite and the rows of its setting they all train in.

Varma, Shah, Kenton, Kramár, Kumar 2023, "Explaining grokking through circuit efficiency" (arXiv
2309.02390) released no code and no numbers, so the artefact every row cites is the paper's text
(version v1), section by section. Its modular-addition setting (App. A) is Nanda et al.'s one-layer
transformer, which probe trains as the ``nanda-modadd`` preset.
"""

from __future__ import annotations

from probe.reproduce.registry import Setting

PAPER = "arXiv 2309.02390"
REPO = "arxiv.org/abs/2309.02390"
VERSION = "v1"  # the paper has no code release; its text is the artefact
TITLE = f"Varma, Shah, Kenton, Kramár, Kumar 2023, Explaining grokking through circuit efficiency ({PAPER})"
ABSTRACT = f"{PAPER} Abstract"
SEC1 = f"{PAPER} Sec. 1 (Introduction)"
SEC5 = f"{PAPER} Sec. 5"
APP_A = f"{PAPER} App. A"
A2 = f"{PAPER} App. A.2"
FIG7 = f"{PAPER} App. A.2, Fig. 7 caption"

#: the rows of App. A's setting that every Varma reproduction's paper scale trains in (nanda-modadd);
#: each reproduction adds the rows of what it varies (dataset sizes, labels, the norm, the steps)
TASK = Setting("task", "modular addition with P = 113: all 12,769 pairs (App. A; Sec. 5)", APP_A,
               "task add, p = 113 (ordered pairs, 12,769 samples)")
MODEL = Setting("model", "1-layer decoder-only transformer, learned positional embeddings, untied embedding and "
                "unembedding, d_model 128, d_head 32, 4 heads, d_mlp 512", APP_A,
                "the nanda-modadd transformer: 1 layer, d_model 128, 4 heads of 32, d_mlp 512, ReLU, no LayerNorm, "
                "learned positions, untied unembedding", "the activation and LayerNorm are not stated in the text "
                "read here; probe uses Nanda et al.'s (ReLU, none), whose setting the paper follows")
OPTIMIZER_TEXT = "AdamW, beta1 0.9, beta2 0.98, learning rate 1e-3, weight decay 1.0, full batch"
OPTIMIZER = Setting("optimizer", OPTIMIZER_TEXT, APP_A,
                    "adamw, lr 0.001, betas (0.9, 0.98), weight_decay 1, full batch (nanda-modadd)")
