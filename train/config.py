"""Presets reproducing each paper's setup, YAML config files and ``--set key=value`` overrides.

Numbers follow the reference configurations in docs/design.md: Liu et al. (2022) Sec. 4 / App. G for the
toy model (p=10 addition, 45/10 split; S3 with 24/12, matrix embeddings App. H), Nanda et al.
(2023) for the one-layer transformer, Power et al. (2022) for the two-layer transformer on
division, Kitouni's two-layer MLP (p=53), Omnigrok / Liu et al. App. J for digits, and Lee et al.'s
(2024) Grokfast setting (github.com/ironjr/grokfast main.py with the README's EMA command line:
multiplication mod 97 without b = 0, their two-layer block, Adam with L2 weight decay 0.005, epochs of
512-row batches, the EMA filter alpha 0.98, lamb 2).

The Liu presets use ``split_seed=1``: with 45 of the 55 unordered pairs for training, split seed 0
puts (9, 9) in validation, and its label 18 occurs in no other sample, so 100% validation accuracy
would be impossible for any model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from probe.config import SECTIONS, TrainConfig
from probe.errors import ProbeError, valid
from probe.yamlfile import load_yaml

PRESETS: dict[str, dict[str, Any]] = {
    "liu-toy-add": {
        "task": "nonmod-add", "p": 10, "n_train": 45, "steps": 10000, "seed": 0, "split_seed": 1,
        "optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.0, "embed_lr": 1e-3, "embed_weight_decay": 0.0,
        "betas": [0.9, 0.999],
        "model": {"kind": "toy", "d_embed": 1, "aggregation": "sum", "decoder": [200, 200], "act": "tanh",
                  "objective": "mse_targets", "d_out": 30, "init_scale": 1.0},
        "checkpoint": {"schedule": "adaptive", "min_every": 10, "max_every": 500, "metrics_every": 10},
    },
    "liu-toy-add-cls": {
        "task": "nonmod-add", "p": 10, "n_train": 45, "steps": 10000, "split_seed": 1,
        "optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.0, "embed_lr": 1e-3, "embed_weight_decay": 0.0,
        "betas": [0.9, 0.999],
        "model": {"kind": "toy", "d_embed": 1, "aggregation": "sum", "decoder": [200, 200], "act": "tanh",
                  "objective": "cross_entropy"},
        "checkpoint": {"schedule": "adaptive", "min_every": 10, "max_every": 500, "metrics_every": 10},
    },
    "liu-toy-s3": {
        "task": "perm", "n": 3, "p": None, "n_train": 24, "steps": 20000,
        "optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.0, "embed_lr": 1e-3, "embed_weight_decay": 0.0,
        "betas": [0.9, 0.999],
        "model": {"kind": "toy", "d_embed": 3, "aggregation": "matrix", "decoder": [200, 200], "act": "tanh",
                  "objective": "mse_targets", "d_out": 30, "init_scale": 1.0},
        "checkpoint": {"schedule": "adaptive", "min_every": 10, "max_every": 500, "metrics_every": 10},
    },
    "nanda-modadd": {
        "task": "add", "p": 113, "train_fraction": 0.3, "steps": 20000,
        "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1.0, "betas": [0.9, 0.98], "warmup_steps": 10,
        "model": {"kind": "transformer", "n_layers": 1, "d_model": 128, "n_heads": 4, "d_mlp": 512, "act": "relu",
                  "layernorm": False, "op_token": False},
        "checkpoint": {"schedule": "every", "every": 100, "metrics_every": 10},
    },
    "power-moddiv": {
        "task": "div", "p": 97, "train_fraction": 0.5, "steps": 100000, "batch_size": 512,
        "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1.0, "betas": [0.9, 0.98], "warmup_steps": 10,
        "model": {"kind": "transformer", "n_layers": 2, "d_model": 128, "n_heads": 4, "d_mlp": 512, "act": "relu",
                  "layernorm": True, "op_token": True},
        "checkpoint": {"schedule": "geometric", "count": 300, "metrics_every": 50},
    },
    "lee-grokfast": {
        "task": "mul-b-nonzero", "p": 97, "train_fraction": 0.5, "steps": 300000, "batch_size": 512,
        "batching": "epochs", "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.005, "betas": [0.9, 0.98],
        "eps": 1e-8, "warmup_steps": 10, "softmax_dtype": "float32",
        "model": {"kind": "transformer", "n_layers": 2, "d_model": 128, "n_heads": 4, "d_mlp": 512, "act": "gelu",
                  "layernorm": True, "op_token": True, "block": "ln_replaces_residual", "init": "pytorch",
                  "head_bias": False},
        "grokfast": {"filter": "ema", "alpha": 0.98, "lamb": 2.0},
        "checkpoint": {"schedule": "geometric", "count": 300, "metrics_every": 10},
    },
    # Zhong et al. 2023 (fjzzq2002/pizza code/train-main.py): p = 59, all 59^2 ordered pairs split 80/20,
    # inputs [a, b] read at b, bidirectional attention, no LayerNorm, no attention biases, a bias-free
    # unembedding, W_in N(0, 1/d_mlp), AdamW lr 1e-3 weight decay 2 betas (0.9, 0.98), 10 warm-up
    # steps, full batch, 20,000 steps, float64 loss; Model A (pizza) has attention rate 0, Model B
    # (clock) 1
    "zhong-pizza": {
        "task": "add", "p": 59, "train_fraction": 0.8, "steps": 20000,
        "optimizer": "adamw", "lr": 1e-3, "weight_decay": 2.0, "betas": [0.9, 0.98], "warmup_steps": 10,
        "model": {"kind": "transformer", "n_layers": 1, "d_model": 128, "n_heads": 4, "d_mlp": 512, "act": "relu",
                  "layernorm": False, "op_token": False, "eq_token": False, "causal": False, "head_bias": False,
                  "attn_bias": False, "init": "zhong", "attention_rate": 0.0},
        "checkpoint": {"schedule": "geometric", "count": 200, "metrics_every": 10},
    },
    "zhong-clock": {
        "task": "add", "p": 59, "train_fraction": 0.8, "steps": 20000,
        "optimizer": "adamw", "lr": 1e-3, "weight_decay": 2.0, "betas": [0.9, 0.98], "warmup_steps": 10,
        "model": {"kind": "transformer", "n_layers": 1, "d_model": 128, "n_heads": 4, "d_mlp": 512, "act": "relu",
                  "layernorm": False, "op_token": False, "eq_token": False, "causal": False, "head_bias": False,
                  "attn_bias": False, "init": "zhong", "attention_rate": 1.0},
        "checkpoint": {"schedule": "geometric", "count": 200, "metrics_every": 10},
    },
    "kitouni-mlp": {
        "task": "add", "p": 53, "train_fraction": 0.6, "steps": 5000,
        "optimizer": "adamw", "lr": 3e-2, "weight_decay": 0.03, "betas": [0.9, 0.999],
        "model": {"kind": "mlp", "d_embed": 128, "hidden": [128], "act": "relu"},
        "checkpoint": {"schedule": "adaptive", "min_every": 5, "max_every": 250, "metrics_every": 5},
    },
    # Prieto et al. 2025 (grokking_experiments.py's defaults on add_mod; lr from Fig. 1's runs): the operands'
    # one-hot vectors concatenated into a bias-free 226-200-200-113 ReLU MLP, 40% of the pairs, AdamW without
    # weight decay, betas (0.9, 0.99), eps 1e-25, full batch, softmax cross-entropy in float32
    "prieto-mlp": {
        "task": "add", "p": 113, "n_train": 5107, "steps": 80000,
        "optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.0, "betas": [0.9, 0.99], "eps": 1e-25,
        "softmax_dtype": "float32",
        "model": {"kind": "mlp", "input": "onehot", "bias": False, "hidden": [200, 200], "act": "relu"},
        "checkpoint": {"schedule": "every", "every": 2000, "metrics_every": 50},
    },
    "kitouni-mlp-comprehension": {
        "task": "add", "p": 53, "train_fraction": 0.6, "steps": 5000,
        "optimizer": "adamw", "lr": 3e-2, "weight_decay": 5.0, "betas": [0.9, 0.999],
        "model": {"kind": "mlp", "d_embed": 128, "hidden": [128], "act": "relu"},
        "checkpoint": {"schedule": "adaptive", "min_every": 5, "max_every": 250, "metrics_every": 5},
    },
    "omnigrok-digits": {
        "task": "digits", "p": None, "n_train": 1000, "steps": 50000, "batch_size": 200,
        "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "betas": [0.9, 0.999],
        "model": {"kind": "digits", "width": 200, "depth": 3, "act": "relu", "init_alpha": 8.0,
                  "objective": "mse_onehot"},
        "checkpoint": {"schedule": "geometric", "count": 200, "metrics_every": 50},
    },
}


def preset_config(name: str) -> TrainConfig:
    """The TrainConfig of a named preset; unknown names list the valid ones."""
    if name not in PRESETS:
        raise ProbeError(f"unknown preset {name!r}{valid(PRESETS)}", param="preset")
    return TrainConfig.from_dict(PRESETS[name])


_UNSET = (None, "", "none", "null", "None")  # how a user writes "no value" for an optional key


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``["lr=0.01", "model.d_model=64"]`` -> ``{"lr": "0.01", "model.d_model": "64"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ProbeError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def load_config(preset: str | None = None, path: str | Path | None = None,
                overrides: dict[str, Any] | None = None, base: TrainConfig | None = None) -> TrainConfig:
    """Resolve a config from a preset and/or a YAML file (which may name ``preset:``), then overrides.
    ``base``: the config to start from when neither names a preset (a parent run's, for ``--from``)."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ProbeError(f"config file {p} does not exist")
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ProbeError(f"cannot read config file {p}: {getattr(exc, 'strerror', None) or exc}") from None
        loaded = load_yaml(text, f"config file {p}")
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ProbeError(f"config file {p} must hold a mapping of keys to values")
        data = dict(loaded)
        preset = data.pop("preset", preset)
    base = preset_config(preset) if preset else (base if base is not None else TrainConfig())
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in SECTIONS:
            if key == "model" and "kind" in value:
                flat["model.kind"] = value["kind"]
            flat.update({f"{key}.{k}": v for k, v in value.items() if not (key == "model" and k == "kind")})
        else:
            flat[key] = value
    flat.update(overrides or {})
    # The training-set size a layer sets (the file over the preset, the overrides over both) wins over
    # the layers below: a fraction alone clears their n_train. A file may hold both keys (every config
    # probe writes does; n_train overrides train_fraction), the overrides one of them.
    over = overrides or {}
    if "train_fraction" in over:
        if "n_train" in over and over["n_train"] not in _UNSET:
            raise ProbeError("set either train_fraction or n_train, not both (n_train overrides train_fraction)")
        flat["n_train"] = None
    elif "train_fraction" in data and "n_train" not in data and "n_train" not in over:
        flat["n_train"] = None
    return base.with_overrides(flat) if flat else base


def preset_rows() -> list[tuple[str, str, str, int]]:
    """``(name, task, model kind, steps)`` of every preset, for listing."""
    rows = []
    for name, data in PRESETS.items():
        task = data["task"] + (f" p={data['p']}" if data.get("p") else "") + (f" n={data['n']}" if data.get("n") else "")
        rows.append((name, task, data["model"]["kind"], int(data["steps"])))
    return rows


def check_data(cfg: TrainConfig, memo: dict[Any, Any] | None = None) -> None:
    """Build ``cfg``'s task and check its split sizes, as training does first, without training: a
    group table that is not there or not a group, or an ``n_train`` larger than the task, is refused
    before a run directory is made. ``memo`` shares the work between many configs (a sweep's grid)."""
    from probe.tasks import make_split, make_task

    memo = {} if memo is None else memo
    key = tuple(sorted(cfg.task_params.items()))
    if key not in memo:
        memo[key] = make_task(**cfg.task_params)
    sizes = (key, cfg.train_fraction, cfg.n_train)
    if sizes not in memo:
        make_split(memo[key].n_samples, cfg.train_fraction, 0, cfg.n_train)
        memo[sizes] = True
