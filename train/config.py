"""Presets reproducing each paper's setup, YAML config files and ``--set key=value`` overrides.

Numbers follow the reference configurations in docs/design.md: Liu et al. (2022) Sec. 4 / App. G for the
toy model (p=10 addition, 45/10 split; S3 with 24/12, matrix embeddings App. H), Nanda et al.
(2023) for the one-layer transformer, Power et al. (2022) for the two-layer transformer on
division, Kitouni's two-layer MLP (p=53), and Omnigrok / Liu et al. App. J for digits.

The Liu presets use ``split_seed=1``: with 45 of the 55 unordered pairs for training, split seed 0
puts (9, 9) in validation, and its label 18 occurs in no other sample, so 100% validation accuracy
would be impossible for any model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from probe.config import SECTIONS, TrainConfig
from probe.errors import ProbeError, valid

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
    "kitouni-mlp": {
        "task": "add", "p": 53, "train_fraction": 0.6, "steps": 5000,
        "optimizer": "adamw", "lr": 3e-2, "weight_decay": 0.03, "betas": [0.9, 0.999],
        "model": {"kind": "mlp", "d_embed": 128, "hidden": [128], "act": "relu"},
        "checkpoint": {"schedule": "adaptive", "min_every": 5, "max_every": 250, "metrics_every": 5},
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
        import yaml

        p = Path(path)
        if not p.is_file():
            raise ProbeError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ProbeError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ProbeError(f"config file {p} must hold a mapping of keys to values")
        data = dict(loaded)
        preset = data.pop("preset", preset)
    base = preset_config(preset) if preset else (base if base is not None else TrainConfig())
    flat: dict[str, Any] = {}
    user_keys = set(data) | set(overrides or {})
    for key, value in data.items():
        if isinstance(value, dict) and key in SECTIONS:
            if key == "model" and "kind" in value:
                flat["model.kind"] = value["kind"]
            flat.update({f"{key}.{k}": v for k, v in value.items() if not (key == "model" and k == "kind")})
        else:
            flat[key] = value
    flat.update(overrides or {})
    if "train_fraction" in user_keys:
        # the training-set size a user sets wins over a preset's: a fraction clears the preset's n_train
        if "n_train" in user_keys and flat.get("n_train") not in (None, "", "none", "null", "None"):
            raise ProbeError("set either train_fraction or n_train, not both (n_train overrides train_fraction)")
        flat["n_train"] = None
    return base.with_overrides(flat) if flat else base


def preset_rows() -> list[tuple[str, str, str, int]]:
    """``(name, task, model kind, steps)`` of every preset, for listing."""
    rows = []
    for name, data in PRESETS.items():
        task = data["task"] + (f" p={data['p']}" if data.get("p") else "") + (f" n={data['n']}" if data.get("n") else "")
        rows.append((name, task, data["model"]["kind"], int(data["steps"])))
    return rows
