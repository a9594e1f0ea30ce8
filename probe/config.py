"""Frozen, validated configuration of a training run (stored as JSON in every run file).

Building a config does no I/O, seeding or device probing. Validation errors name the field and the
value. The flat keys users type most (``steps``, ``seed``, ``p``, ``lr`` ...) live on
:class:`TrainConfig`; model and checkpoint settings are nested (``model.d_model``,
``checkpoint.every``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Union

from probe.errors import ProbeError
from probe.tasks import TASK_NAMES

Objective = Literal["cross_entropy", "mse_targets", "mse_onehot"]


def _check(cond: bool, name: str, value: Any, why: str) -> None:
    if not cond:
        raise ProbeError(f"invalid config value {name}={value!r}: {why}")


@dataclass(frozen=True)
class TransformerConfig:
    """Decoder-only transformer (Nanda et al. 2023; Power et al. 2022); logits at the last position."""

    kind: Literal["transformer"] = "transformer"
    n_layers: int = 1
    d_model: int = 128
    n_heads: int = 4
    d_head: int | None = None  # None: d_model // n_heads
    d_mlp: int = 512
    act: Literal["relu", "gelu"] = "relu"
    layernorm: bool = False
    dropout: float = 0.0
    op_token: bool = False  # tokens [a, op, b, =] (Power) instead of [a, b, =] (Nanda)
    objective: Objective = "cross_entropy"

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "d_mlp"):
            _check(getattr(self, name) >= 1, f"model.{name}", getattr(self, name), "must be >= 1")
        if self.d_head is None:
            _check(self.d_model % self.n_heads == 0, "model.n_heads", self.n_heads,
                   f"must divide d_model={self.d_model} (or set model.d_head)")
        else:
            _check(self.d_head >= 1, "model.d_head", self.d_head, "must be >= 1")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "must be in [0, 1)")
        _check(self.objective == "cross_entropy", "model.objective", self.objective,
               "the transformer is trained with cross_entropy")

    @property
    def head_dim(self) -> int:
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads


@dataclass(frozen=True)
class ToyConfig:
    """Liu et al. (2022) toy model: Dec(E_a + E_b) or Dec(E_a E_b) with matrix embeddings (App. H)."""

    kind: Literal["toy"] = "toy"
    d_embed: int = 1  # vector embeddings; for aggregation=matrix, each embedding is d_embed x d_embed
    aggregation: Literal["sum", "matrix"] = "sum"
    decoder: tuple[int, ...] = (200, 200)
    act: Literal["tanh", "relu", "gelu"] = "tanh"
    objective: Objective = "mse_targets"
    d_out: int = 30  # regression target dimension (mse_targets)
    init_scale: float = 1.0  # embeddings ~ U(-s/2, s/2) (Liu et al. App. G)

    def __post_init__(self) -> None:
        _check(self.d_embed >= 1, "model.d_embed", self.d_embed, "must be >= 1")
        _check(all(w >= 1 for w in self.decoder), "model.decoder", self.decoder, "widths must be >= 1")
        _check(self.d_out >= 1, "model.d_out", self.d_out, "must be >= 1")
        _check(self.init_scale > 0, "model.init_scale", self.init_scale, "must be > 0")


@dataclass(frozen=True)
class MLPConfig:
    """Two embeddings concatenated, then an MLP (Kitouni's simple grokking; Gromov)."""

    kind: Literal["mlp"] = "mlp"
    d_embed: int = 128
    hidden: tuple[int, ...] = (128,)
    act: Literal["relu", "tanh", "gelu"] = "relu"
    objective: Objective = "cross_entropy"

    def __post_init__(self) -> None:
        _check(self.d_embed >= 1, "model.d_embed", self.d_embed, "must be >= 1")
        _check(all(w >= 1 for w in self.hidden), "model.hidden", self.hidden, "widths must be >= 1")
        _check(self.objective != "mse_targets", "model.objective", self.objective,
               "mse_targets is for the toy model")


@dataclass(frozen=True)
class DigitsConfig:
    """Omnigrok-style MLP on scikit-learn's digits: ReLU MLP, initial weights scaled by alpha."""

    kind: Literal["digits"] = "digits"
    width: int = 200
    depth: int = 3
    act: Literal["relu", "tanh", "gelu"] = "relu"
    init_alpha: float = 8.0
    objective: Objective = "mse_onehot"

    def __post_init__(self) -> None:
        _check(self.width >= 1, "model.width", self.width, "must be >= 1")
        _check(self.depth >= 1, "model.depth", self.depth, "must be >= 1")
        _check(self.init_alpha > 0, "model.init_alpha", self.init_alpha, "must be > 0")
        _check(self.objective != "mse_targets", "model.objective", self.objective,
               "mse_targets is for the toy model")


ModelConfig = Union[TransformerConfig, ToyConfig, MLPConfig, DigitsConfig]
MODEL_KINDS: dict[str, type] = {"transformer": TransformerConfig, "toy": ToyConfig, "mlp": MLPConfig,
                                "digits": DigitsConfig}


@dataclass(frozen=True)
class CheckpointConfig:
    """When checkpoints are written, which tensors they hold, and how often metrics are recorded.

    ``schedule``: ``every`` (each ``every`` steps), ``geometric`` (``count`` log-spaced steps, as
    Power et al. and Omnigrok), ``adaptive`` (at metric steps, when train/val accuracy or log-loss moved
    by more than ``threshold`` since the last checkpoint, at least ``min_every`` and at most
    ``max_every`` steps apart). Step 0 and the final step are always saved.
    """

    schedule: Literal["every", "geometric", "adaptive"] = "every"
    every: int = 100
    count: int = 200
    min_every: int = 1
    max_every: int = 1000
    threshold: float = 0.02
    tensors: tuple[str, ...] = ("*",)  # glob patterns over parameter names
    metrics_every: int = 1
    dtype: Literal["float32", "float16", "float64"] = "float32"

    def __post_init__(self) -> None:
        for name in ("every", "count", "min_every", "max_every", "metrics_every"):
            _check(getattr(self, name) >= 1, f"checkpoint.{name}", getattr(self, name), "must be >= 1")
        _check(self.min_every <= self.max_every, "checkpoint.min_every", self.min_every,
               f"must be <= checkpoint.max_every={self.max_every}")
        _check(self.threshold > 0, "checkpoint.threshold", self.threshold, "must be > 0")
        _check(len(self.tensors) > 0, "checkpoint.tensors", self.tensors, "must name at least one pattern")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run. ``seed`` seeds the model and batches; ``split_seed`` the split."""

    task: str = "add"
    p: int | None = 113
    n: int | None = None  # S_n for task=perm
    group: str | None = None  # CSV table name or path for task=group
    ordered: bool | None = None  # None: task default (unordered pairs only for nonmod-add)
    train_fraction: float = 0.3
    n_train: int | None = None  # overrides train_fraction when set
    split_seed: int = 0
    seed: int = 0
    steps: int = 10000
    batch_size: int | None = None  # None: full batch
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1.0
    embed_lr: float | None = None  # None: same as lr
    embed_weight_decay: float | None = None  # None: same as weight_decay
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    momentum: float = 0.0
    warmup_steps: int = 0
    device: str = "auto"
    model: ModelConfig = field(default_factory=TransformerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        _check(self.task in TASK_NAMES, "task", self.task, f"unknown task (valid: {', '.join(TASK_NAMES)})")
        _check(0.0 < self.train_fraction <= 1.0, "train_fraction", self.train_fraction, "must be in (0, 1]")
        _check(self.n_train is None or self.n_train >= 1, "n_train", self.n_train, "must be >= 1")
        _check(self.steps >= 1, "steps", self.steps, "must be >= 1")
        _check(self.batch_size is None or self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        _check(self.lr > 0, "lr", self.lr, "must be > 0")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        _check(self.embed_lr is None or self.embed_lr > 0, "embed_lr", self.embed_lr, "must be > 0")
        _check(self.embed_weight_decay is None or self.embed_weight_decay >= 0, "embed_weight_decay",
               self.embed_weight_decay, "must be >= 0")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", self.betas,
               "must be two numbers in [0, 1)")
        _check(self.eps > 0, "eps", self.eps, "must be > 0")
        _check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be >= 0")
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
               self.device, "must be auto, cpu, cuda or cuda:N")
        if self.task == "digits":
            _check(self.model.kind == "digits", "model.kind", self.model.kind, "task digits needs model.kind=digits")
        else:
            _check(self.model.kind != "digits", "model.kind", self.model.kind, "the digits model needs task=digits")
        if self.model.kind == "toy" and self.model.aggregation == "sum" and self.task in ("perm", "group"):
            pass  # allowed: sum aggregation on a non-abelian group is a (failing) baseline

    @property
    def task_params(self) -> dict[str, Any]:
        return {"name": self.task, "p": self.p, "n": self.n, "group": self.group, "ordered": self.ordered}

    @property
    def resolved_embed_lr(self) -> float:
        return self.lr if self.embed_lr is None else self.embed_lr

    @property
    def resolved_embed_weight_decay(self) -> float:
        return self.weight_decay if self.embed_weight_decay is None else self.embed_weight_decay

    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from a (possibly partial) nested dict; unknown keys raise with the valid ones."""
        return _build(cls, data, prefix="")

    def with_overrides(self, overrides: dict[str, Any]) -> "TrainConfig":
        """Apply ``{"lr": 0.01, "model.d_model": 64}``-style overrides (values may be strings)."""
        data = self.to_dict()
        for key, value in overrides.items():
            parts = key.split(".")
            target = data
            for part in parts[:-1]:
                if part not in ("model", "checkpoint") or not isinstance(target.get(part), dict):
                    raise ProbeError(f"unknown config key {key!r}{_valid_keys_hint()}")
                target = target[part]
            if parts[0] == "model" and parts[-1] == "kind" and len(parts) == 2 and value != target.get("kind"):
                data["model"] = {"kind": value}  # switching model kind starts from that kind's defaults
                continue
            target[parts[-1]] = value
        return TrainConfig.from_dict(data)


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    return obj


def valid_keys() -> list[str]:
    """All settable keys, flat and dotted (model keys of every model kind)."""
    keys = [f.name for f in fields(TrainConfig) if f.name not in ("model", "checkpoint")]
    keys += [f"checkpoint.{f.name}" for f in fields(CheckpointConfig)]
    model_keys = sorted({f.name for cls in MODEL_KINDS.values() for f in fields(cls)})
    keys += [f"model.{k}" for k in model_keys]
    return keys


def _valid_keys_hint() -> str:
    return f" (valid: {', '.join(valid_keys())})"


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ProbeError(f"config section {prefix.rstrip('.') or 'root'} must be a mapping, got {data!r}")
    if cls is TrainConfig and "model" in data:
        model_data = dict(data["model"]) if isinstance(data["model"], dict) else data["model"]
        kind = model_data.get("kind", "transformer") if isinstance(model_data, dict) else None
        if kind not in MODEL_KINDS:
            raise ProbeError(f"invalid config value model.kind={kind!r}: valid: {', '.join(MODEL_KINDS)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f"{prefix}{unknown[0]}"
        valid = sorted(f"{prefix}{n}" for n in names)
        raise ProbeError(f"unknown config key {where!r} (valid: {', '.join(valid)})")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if cls is TrainConfig and name == "model":
            kind = value.get("kind", "transformer")
            kwargs[name] = _build(MODEL_KINDS[kind], value, "model.")
        elif cls is TrainConfig and name == "checkpoint":
            kwargs[name] = _build(CheckpointConfig, value, "checkpoint.")
        else:
            kwargs[name] = coerce(hints[name], value, key)
    return cls(**kwargs)


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def coerce(tp: Any, value: Any, key: str) -> Any:
    """Convert ``value`` (possibly a CLI string) to type ``tp``; raise ProbeError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value, key)
            except ProbeError as exc:
                errors.append(str(exc))
        raise ProbeError(errors[0] if errors else f"invalid config value {key}={value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ProbeError(f"invalid config value {key}={value!r}: valid: {', '.join(map(str, args))}")
    if origin is tuple:
        items = value
        if isinstance(value, str):
            items = [v.strip() for v in value.strip("()[] ").split(",") if v.strip()]
        if not isinstance(items, (list, tuple)):
            items = [items]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(args[0], v, key) for v in items)
        if len(items) != len(args):
            raise ProbeError(f"invalid config value {key}={value!r}: expected {len(args)} values")
        return tuple(coerce(a, v, key) for a, v in zip(args, items))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ProbeError(f"invalid config value {key}={value!r}: expected true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ProbeError(f"invalid config value {key}={value!r}: expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
        raise ProbeError(f"invalid config value {key}={value!r}: expected an integer")
    if tp is float:
        if isinstance(value, bool):
            raise ProbeError(f"invalid config value {key}={value!r}: expected a number")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ProbeError(f"invalid config value {key}={value!r}: expected a number") from None
        if out != out:
            raise ProbeError(f"invalid config value {key}={value!r}: NaN is not allowed")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        raise ProbeError(f"invalid config value {key}={value!r}: expected a string")
    raise ProbeError(f"invalid config value {key}={value!r}")
