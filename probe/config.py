"""Frozen, validated configuration of a training run (stored as JSON in every run file).

Building a config does no I/O, seeding or device probing. Validation errors name the field and the
value. The flat keys users type most (``steps``, ``seed``, ``p``, ``lr`` ...) live on
:class:`TrainConfig`; model and checkpoint settings are nested (``model.d_model``,
``checkpoint.every``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Literal, Union

from probe.errors import ProbeError, valid
from probe.registry import Registry
from probe.schedules import SCHEDULES
from probe.tasks import MAX_SYMBOLS, TASKS, check_labels

Objective = Literal["cross_entropy", "mse_targets", "mse_onehot"]


MAX_WIDTH = 1 << 16  # any one layer width
MAX_PARAMS = 200_000_000  # about 800 MB of float32 weights: a config beyond this is refused unread
SEED_LIMIT = 2**32  # seeds are in [0, 2^32): numpy and torch accept them, and they print sensibly


def _check(cond: bool, name: str, value: Any, why: str) -> None:
    if not cond:
        raise ProbeError(f"invalid config value {name}={value!r}: {why}")


def _check_width(name: str, value: int) -> None:
    _check(1 <= value <= MAX_WIDTH, f"model.{name}", value, f"must be in 1..{MAX_WIDTH}")


#: field metadata of a key added after runs and sweeps were first stored: ``to_dict`` stores it only
#: when set away from its default, so every config that leaves it alone is stored exactly as before
#: (its run files, config copies and sweep grids, whose digest hashes the stored configs, unchanged)
ADDED: dict[str, Any] = {"stored": "when_set"}


def _stored(obj: Any) -> dict[str, Any]:
    """A config dataclass's fields as stored: every field but the :data:`ADDED` ones at their defaults
    (nested values converted as ``dataclasses.asdict`` does)."""
    data = dataclasses.asdict(obj)
    for f in fields(obj):
        if f.metadata.get("stored") == "when_set" and getattr(obj, f.name) == f.default:
            data.pop(f.name, None)
    return data


@dataclass(frozen=True)
class ModelConfig:
    """Base of every model kind's config: the model's declaration of what analyses may rely on.

    Subclasses register with :func:`model_kind`, which makes the kind known to configs, to
    ``build_model`` and to ``probe train --set model.kind=...``. The properties below are the one
    place analyses learn where a model keeps its symbol embeddings, its neurons and its tokens.
    """

    kind: ClassVar[str] = ""
    builder: ClassVar[str] = ""  # "module:Class" of the HookedRootModule, imported when a model is built
    #: fields that are no parameters yet may differ between the members of one vectorised ensemble: each
    #: member's value reaches the batched call through the model's ``set_knob``
    knobs: ClassVar[tuple[str, ...]] = ()
    objective: str = "cross_entropy"

    @property
    def embed_param(self) -> str | None:
        """Parameter whose rows ``0..n_symbols-1`` embed the symbols (None: the model has none)."""
        return "embed.W_E"

    @property
    def unembed_param(self) -> str:
        """Parameter mapping the last hidden layer to the outputs (``[d, n_out]``)."""
        return "unembed.W_U"

    @property
    def neuron_hook(self) -> str | None:
        """Hook whose activations are "the neurons" (the last MLP layer's post-activation)."""
        return None

    @property
    def neuron_readout(self) -> str | None:
        """Parameter ``[n_neurons, d]`` that writes the neurons into the residual stream read by the
        unembedding (the last MLP's ``W_out``); None when the neurons have no direct path to it."""
        return None

    @property
    def n_ctx(self) -> int | None:
        """Sequence length of the model's activations; None for models without token positions."""
        return None

    @property
    def operand_positions(self) -> tuple[int, int] | None:
        """Positions of the operands a and b at ``hook_embed`` (the second axis of its activations)."""
        return (0, 1)

    def param_estimate(self) -> int:
        """About how many weights the model has (vocabulary rows left out)."""
        return 0

    def buffer_shapes(self, n_classes: int) -> dict[str, tuple[int, ...]]:
        """Fixed (untrained) tensors the model keeps and a run stores under ``static/``."""
        return {}

    def _check_size(self) -> None:
        n = self.param_estimate()
        _check(n <= MAX_PARAMS, "model", self.kind, f"about {n:,} weights, more than the {MAX_PARAMS:,} probe "
               "supports")


MODELS: Registry[type[ModelConfig]] = Registry("model kind")


def model_kind(name: str, builder: str) -> Any:
    """Class decorator: register a model config class as kind ``name``, built by ``builder``."""

    def wrap(cls: type[ModelConfig]) -> type[ModelConfig]:
        cls.kind = name
        cls.builder = builder
        return MODELS.add(name, cls)

    return wrap


@model_kind("transformer", "probe.models.transformer:Transformer")
@dataclass(frozen=True)
class TransformerConfig(ModelConfig):
    """Decoder-only transformer (Nanda et al. 2023; Power et al. 2022); logits at the last position. The
    options added later also express Liu et al. 2022's stack of nn.TransformerEncoderLayer over the two
    operands (``eq_token=false, positional=none, causal=false, readout=concat, dropout_at=mlp,
    ln_final=false`` with ``layernorm=true, init=pytorch``)."""

    knobs: ClassVar[tuple[str, ...]] = ("attention_rate",)  # Zhong et al.'s attention rate

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
    #: the block's wiring: ``pre_ln`` keeps the residual stream and feeds its LayerNorm to attention
    #: and MLP (``x + attn(ln1(x))``, then ``+ mlp(ln2(.))``; without layernorm the LNs are identities);
    #: ``ln_replaces_residual`` replaces the stream by its LayerNorm before attention
    #: (``x = ln1(x); x = x + attn(x); x = x + mlp(ln2(x))``, Lee et al. 2024's main.py), needs layernorm
    block: Literal["pre_ln", "ln_replaces_residual"] = field(default="pre_ln", metadata=ADDED)
    #: initial weights: ``nanda`` (Nanda et al. 2023: N(0, 1/d_model) for embeddings, attention and
    #: MLP weights, N(0, 1/n_classes) for the unembedding, zero biases) or ``pytorch`` (the defaults of
    #: torch's modules: nn.Embedding N(0, 1) token and position embeddings, nn.MultiheadAttention's
    #: Xavier-uniform in-projection and zero biases, nn.Linear's U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    #: weights and biases for the attention output, the MLP and the unembedding)
    #: ``zhong``: Nanda's laws but the MLP's W_in N(0, 1/d_mlp) (Zhong et al. 2023's train-main.py)
    init: Literal["nanda", "pytorch", "zhong"] = field(default="nanda", metadata=ADDED)
    head_bias: bool = field(default=True, metadata=ADDED)  # False: the unembedding has no b_U
    #: the inputs end with an '=' token (the answer read there); False: ``[a, b]`` or ``[a, op, b]``, the
    #: symbols and the op token only (Liu et al. 2022's transformer sees the two operands alone)
    eq_token: bool = field(default=True, metadata=ADDED)
    #: ``learned`` position embeddings (``pos_embed.W_pos``, seen at ``hook_pos_embed``) or ``none``: no
    #: positional information, no W_pos and no hook_pos_embed (as TransformerLens' models without one)
    positional: Literal["learned", "none"] = field(default="learned", metadata=ADDED)
    causal: bool = field(default=True, metadata=ADDED)  # False: every position attends to every position
    #: ``last``: the unembedding reads the last position (``[d_model, n_out]``); ``concat``: it reads every
    #: position's final residual stream concatenated in order (``[n_ctx * d_model, n_out]``, Liu et al.'s
    #: ``nn.Linear(2 * d, p)``), so the answer depends on every position
    readout: Literal["last", "concat"] = field(default="last", metadata=ADDED)
    #: where model.dropout acts besides the attention pattern and the attention and MLP outputs: on the
    #: input embeddings (``embed``) or on the MLP's hidden activations after hook_post (``mlp``: the sites
    #: of torch's nn.TransformerEncoderLayer)
    dropout_at: Literal["embed", "mlp"] = field(default="embed", metadata=ADDED)
    #: False: no LayerNorm after the last block (nn.TransformerEncoderLayer stacks have none); needs
    #: model.layernorm, whose final LayerNorm it removes
    ln_final: bool = field(default=True, metadata=ADDED)
    #: Zhong et al. 2023's attention rate alpha: the pattern is ``alpha * softmax(QK^T / sqrt(d_head)) +
    #: (1 - alpha)`` on every key a query may see (fjzzq2002/pizza ``code/train-main.py``); 1 is ordinary
    #: attention, 0 constant attention (every weight 1)
    attention_rate: float = field(default=1.0, metadata=ADDED)
    #: False: attention without biases (no b_Q, b_K, b_V, b_O), as Zhong et al.'s and Nanda et al.'s
    #: original code
    attn_bias: bool = field(default=True, metadata=ADDED)

    def __post_init__(self) -> None:
        _check(isinstance(self.attention_rate, (int, float)) and not isinstance(self.attention_rate, bool)
               and 0.0 <= self.attention_rate <= 1.0, "model.attention_rate", self.attention_rate,
               "must be in [0, 1] (1: ordinary attention, 0: constant attention)")
        for name in ("d_model", "n_heads", "d_mlp"):
            _check_width(name, getattr(self, name))
        _check(1 <= self.n_layers <= 96, "model.n_layers", self.n_layers, "must be in 1..96")
        if self.d_head is None:
            _check(self.d_model % self.n_heads == 0, "model.n_heads", self.n_heads,
                   f"must divide d_model={self.d_model} (or set model.d_head)")
        else:
            _check_width("d_head", self.d_head)
        _check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "must be in [0, 1)")
        _check(self.block == "pre_ln" or self.layernorm, "model.block", self.block,
               "replaces the residual stream by its LayerNorm and needs model.layernorm=true")
        _check(self.ln_final or self.layernorm, "model.ln_final", self.ln_final,
               "removes the final LayerNorm and needs model.layernorm=true (without it there is none)")
        _check(self.objective == "cross_entropy", "model.objective", self.objective,
               "the transformer is trained with cross_entropy")
        self._check_size()

    @property
    def head_dim(self) -> int:
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads

    @property
    def neuron_hook(self) -> str:
        return f"blocks.{self.n_layers - 1}.mlp.hook_post"

    @property
    def neuron_readout(self) -> str | None:
        # a concatenated readout reads every position's stream, through its own rows of W_U: the last
        # MLP's W_out [d_mlp, d_model] writes into none of them alone
        return f"blocks.{self.n_layers - 1}.mlp.W_out" if self.readout == "last" else None

    @property
    def n_ctx(self) -> int:
        return 2 + int(self.op_token) + int(self.eq_token)

    @property
    def operand_positions(self) -> tuple[int, int]:
        return (0, 2) if self.op_token else (0, 1)

    def param_estimate(self) -> int:
        attn = 4 * self.d_model * self.n_heads * self.head_dim
        return self.n_layers * (attn + 2 * self.d_model * self.d_mlp)


@model_kind("toy", "probe.models.mlp:ToyModel")
@dataclass(frozen=True)
class ToyConfig(ModelConfig):
    """Liu et al. (2022) toy model: Dec(E_a + E_b) or Dec(E_a E_b) with matrix embeddings (App. H)."""

    d_embed: int = 1  # vector embeddings; for aggregation=matrix, each embedding is d_embed x d_embed
    aggregation: Literal["sum", "matrix"] = "sum"
    decoder: tuple[int, ...] = (200, 200)
    act: Literal["tanh", "relu", "gelu"] = "tanh"
    objective: Objective = "mse_targets"
    d_out: int = 30  # regression target dimension (mse_targets)
    init_scale: float = 1.0  # embeddings ~ U(-s/2, s/2) (Liu et al. App. G)

    def __post_init__(self) -> None:
        _check(1 <= self.d_embed <= (256 if self.aggregation == "matrix" else MAX_WIDTH), "model.d_embed",
               self.d_embed, "out of range (1..256 for matrix embeddings)")
        _check(all(1 <= w <= MAX_WIDTH for w in self.decoder), "model.decoder", self.decoder,
               f"widths must be in 1..{MAX_WIDTH}")
        _check(len(self.decoder) <= 64, "model.decoder", self.decoder, "at most 64 layers")
        _check_width("d_out", self.d_out)
        _check(0 < self.init_scale < float("inf"), "model.init_scale", self.init_scale, "must be > 0")
        self._check_size()

    @property
    def neuron_hook(self) -> str | None:
        return f"decoder.{len(self.decoder) - 1}.hook_post" if self.decoder else None

    def buffer_shapes(self, n_classes: int) -> dict[str, tuple[int, ...]]:
        return {"targets": (n_classes, self.d_out)} if self.objective == "mse_targets" else {}

    def param_estimate(self) -> int:
        dims = (self.d_embed ** (2 if self.aggregation == "matrix" else 1), *self.decoder, self.d_out)
        return sum(a * b for a, b in zip(dims[:-1], dims[1:]))


@model_kind("mlp", "probe.models.mlp:ConcatMLP")
@dataclass(frozen=True)
class MLPConfig(ModelConfig):
    """Two embeddings concatenated, then an MLP (Kitouni's simple grokking; Gromov)."""

    d_embed: int = 128
    hidden: tuple[int, ...] = (128,)
    act: Literal["relu", "tanh", "gelu"] = "relu"
    objective: Objective = "cross_entropy"
    #: ``embed``: a learned embedding per symbol (``embed.W_E``, N(0, 1)), the two concatenated;
    #: ``onehot``: no embedding, the first layer reads the operands' one-hot vectors concatenated
    #: (``[onehot(a), onehot(b)]``, 2 x n_symbols inputs; Prieto et al. 2025's ``models.py``), so
    #: ``d_embed`` is unused and ``decoder.0.W`` rows ``0..n-1`` act on a and rows ``n..2n-1`` on b
    input: Literal["embed", "onehot"] = field(default="embed", metadata=ADDED)
    #: False: no biases anywhere (decoder layers and unembedding), as Prieto et al.'s ``MLP(bias=False)``
    bias: bool = field(default=True, metadata=ADDED)

    def __post_init__(self) -> None:
        _check_width("d_embed", self.d_embed)
        _check(self.input in ("embed", "onehot"), "model.input", self.input, "must be embed or onehot")
        _check(all(1 <= w <= MAX_WIDTH for w in self.hidden), "model.hidden", self.hidden,
               f"widths must be in 1..{MAX_WIDTH}")
        _check(len(self.hidden) <= 64, "model.hidden", self.hidden, "at most 64 layers")
        _check(self.objective != "mse_targets", "model.objective", self.objective,
               "mse_targets is for the toy model")
        self._check_size()

    @property
    def embed_param(self) -> str | None:
        return "embed.W_E" if self.input == "embed" else None

    @property
    def operand_positions(self) -> tuple[int, int] | None:
        return (0, 1) if self.input == "embed" else None  # one-hot inputs: no hook_embed

    @property
    def neuron_hook(self) -> str | None:
        return f"decoder.{len(self.hidden) - 1}.hook_post" if self.hidden else None

    def param_estimate(self) -> int:
        dims = (2 * self.d_embed if self.input == "embed" else 0, *self.hidden)
        return sum(a * b for a, b in zip(dims[:-1], dims[1:]))


@model_kind("digits", "probe.models.mlp:DigitsMLP")
@dataclass(frozen=True)
class DigitsConfig(ModelConfig):
    """Omnigrok-style MLP on scikit-learn's digits: ReLU MLP, initial weights scaled by alpha."""

    width: int = 200
    depth: int = 3
    act: Literal["relu", "tanh", "gelu"] = "relu"
    init_alpha: float = 8.0
    objective: Objective = "mse_onehot"

    def __post_init__(self) -> None:
        _check_width("width", self.width)
        _check(1 <= self.depth <= 64, "model.depth", self.depth, "must be in 1..64")
        _check(0 < self.init_alpha < float("inf"), "model.init_alpha", self.init_alpha, "must be > 0")
        _check(self.objective != "mse_targets", "model.objective", self.objective,
               "mse_targets is for the toy model")
        self._check_size()

    @property
    def embed_param(self) -> None:
        return None

    @property
    def neuron_hook(self) -> str | None:
        return f"decoder.{self.depth - 2}.hook_post" if self.depth >= 2 else None

    @property
    def operand_positions(self) -> None:
        return None

    def param_estimate(self) -> int:
        return 64 * self.width + (self.depth - 1) * self.width * self.width


TRAIN_METRICS = ("eval", "update")  # CheckpointConfig.train_metrics


@dataclass(frozen=True)
class CheckpointConfig:
    """When checkpoints are written, which tensors they hold, and how often metrics are recorded.

    ``schedule``: ``every`` (each ``every`` steps), ``geometric`` (``count`` log-spaced steps, as
    Power et al. and Omnigrok), ``adaptive`` (at metric steps, when train/val accuracy or log-loss moved
    by more than ``threshold`` since the last checkpoint, at least ``min_every`` and at most
    ``max_every`` steps apart). Step 0 and the final step are always saved.

    ``train_metrics``: where a metric row's training loss and accuracy come from. ``eval``: the whole
    training set evaluated at the step without dropout. ``update``: the step's own forward pass, the
    one its update differentiates (its batch, dropout on), as loggers that record the training batch's
    loss do (Liu et al.'s transformer logger, Arn's Lightning module); the last step, which has no
    update, gets the same forward pass. Full-batch runs without dropout get the same numbers from both.
    """

    schedule: str = "every"
    every: int = 100
    count: int = 200
    min_every: int = 1
    max_every: int = 1000
    threshold: float = 0.02
    tensors: tuple[str, ...] = ("*",)  # glob patterns over parameter names
    metrics_every: int = 1
    dtype: Literal["float32", "float16", "float64"] = "float32"
    train_metrics: Literal["eval", "update"] = field(default="eval", metadata=ADDED)

    def __post_init__(self) -> None:
        _check(self.train_metrics in TRAIN_METRICS, "checkpoint.train_metrics", self.train_metrics,
               f"must be one of {', '.join(TRAIN_METRICS)}")
        _check(self.schedule in SCHEDULES, "checkpoint.schedule", self.schedule,
               f"unknown schedule{valid(SCHEDULES.names())}")
        for name in ("every", "count", "min_every", "max_every", "metrics_every"):
            _check(getattr(self, name) >= 1, f"checkpoint.{name}", getattr(self, name), "must be >= 1")
        _check(self.min_every <= self.max_every, "checkpoint.min_every", self.min_every,
               f"must be <= checkpoint.max_every={self.max_every}")
        _check(self.threshold > 0, "checkpoint.threshold", self.threshold, "must be > 0")
        _check(len(self.tensors) > 0, "checkpoint.tensors", self.tensors, "must name at least one pattern")


@dataclass(frozen=True)
class StopConfig:
    """Optional early stop once a run's phase is decided (Liu App. A Table 1): when training and
    validation accuracy have both passed ``threshold``, train ``after_generalization`` more steps and
    stop (None: always train to ``steps``). Memorising and confused runs use the whole budget."""

    after_generalization: int | None = None
    threshold: float = 0.9

    def __post_init__(self) -> None:
        _check(self.after_generalization is None or self.after_generalization >= 0, "stop.after_generalization",
               self.after_generalization, "must be >= 0")
        _check(0.0 < self.threshold <= 1.0, "stop.threshold", self.threshold, "must be in (0, 1]")

    def stop_step(self, steps: Any, train_acc: Any, val_acc: Any) -> int | None:
        """The step to stop at given metric rows so far (None: not decided yet, or no early stop)."""
        if self.after_generalization is None or len(steps) == 0:
            return None
        from probe.phases import PhaseRule, classify

        res = classify(steps, train_acc, val_acc, PhaseRule(self.threshold, None, 0))
        if res.phase not in ("comprehension", "grokking"):  # not decided yet
            return None
        return int(max(res.train_step, res.val_step)) + self.after_generalization


@dataclass(frozen=True)
class GrokfastConfig:
    """Gradient filters of Grokfast (Lee et al. 2024, Algorithms 1 and 2), applied to every
    parameter's gradient before the optimizer step: the slow component of the gradient sequence is
    amplified by ``lamb``.

    ``filter=ema``: ``mu <- alpha mu + (1 - alpha) g`` (``mu`` starts at the first gradient), then
    ``g <- g + lamb mu``. ``filter=ma``: the mean of the last ``window`` gradients (this one included)
    is added, times ``lamb``, once ``window`` gradients have been seen (``warmup``; without it from
    the first step). ``lamb`` None takes the paper's default for the filter (2 for EMA, 5 for MA).
    """

    filter: Literal["none", "ema", "ma"] = "none"
    alpha: float = 0.98
    lamb: float | None = None
    window: int = 100
    warmup: bool = True

    def __post_init__(self) -> None:
        _check(0.0 <= self.alpha < 1.0, "grokfast.alpha", self.alpha, "must be in [0, 1)")
        _check(self.lamb is None or 0.0 <= self.lamb < float("inf"), "grokfast.lamb", self.lamb,
               "must be a number >= 0")
        _check(1 <= self.window <= 100_000, "grokfast.window", self.window, "must be in 1..100000")

    @property
    def amplification(self) -> float:
        if self.lamb is not None:
            return self.lamb
        return 5.0 if self.filter == "ma" else 2.0


@dataclass(frozen=True)
class ConstraintConfig:
    """Constrained weight norm (Omnigrok, Liu, Michaud and Tegmark 2023, Sec. 3): after every optimizer
    step, the tensors matching ``tensors`` are rescaled together so that their total L2 norm is
    fixed: ``norm`` (an absolute value) or ``relative`` times their norm at initialisation (1: keep
    the initial norm; after ``init_alpha``, or the digits model's ``model.init_alpha``, that is Omnigrok's
    alpha times the standard initialisation's norm)."""

    norm: float | None = None
    relative: float | None = None
    tensors: tuple[str, ...] = ("*",)

    def __post_init__(self) -> None:
        for name in ("norm", "relative"):
            value = getattr(self, name)
            _check(value is None or 0 < value < float("inf"), f"constraint.{name}", value, "must be a number > 0")
        _check(self.norm is None or self.relative is None, "constraint.relative", self.relative,
               "set either constraint.norm or constraint.relative, not both")
        _check(len(self.tensors) > 0, "constraint.tensors", self.tensors, "must name at least one pattern")

    @property
    def active(self) -> bool:
        return self.norm is not None or self.relative is not None


@dataclass(frozen=True)
class L1Config:
    """An L1 penalty ``coef * mean(|W|)`` added to the loss for the tensors matching ``tensors`` (their
    entries together; none given: the model's symbol embedding, ``model.embed_param``), as Liu et al.'s
    S3 phase diagram does for the embeddings (grokking-squared ``phase_diagram_plot``'s S3 notebook:
    ``loss = mse + lamb * mean(|embeddings|)``, lamb 1e-3). The trainer applies it as a gradient
    (``probe.train.interventions``)."""

    coef: float = 0.0
    tensors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(isinstance(self.coef, (int, float)) and not isinstance(self.coef, bool)
               and 0.0 <= self.coef < float("inf"), "l1.coef", self.coef, "must be a finite number >= 0")


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
    #: how minibatches are drawn (with batch_size): ``random``, batch_size distinct training rows drawn
    #: afresh each step; ``epochs``, each epoch walks a fresh shuffle of the training split in consecutive
    #: batches, the last one holding the remainder (ceil(n_train / batch_size) steps per epoch), as
    #: Lee et al. 2024's main.py does with torch.split
    batching: Literal["random", "epochs"] = field(default="random", metadata=ADDED)
    #: whose random stream draws the split, the regression targets and the initial weights: ``probe``'s
    #: (the split from ``split_seed``, the model from ``seed``), or ``grokking-squared``'s, the order and
    #: layout of Liu et al.'s toy/train_add.py (numpy seeded with ``seed``: targets, then the training
    #: indices; torch seeded with ``seed``: embeddings, then the decoder's nn.Linear layers), so that seed
    #: S is their seed S (the toy model on nonmod-add only; ``split_seed`` must equal ``seed``)
    #: ``grokking-squared-phase``: the same for the notebook that trained Fig. 6's addition phase diagrams
    #: (phase_diagram_plot/phase_diagram.ipynb: numpy draws an unused ``x_templates`` before the targets;
    #: torch draws an unused encoder's three nn.Linear layers, then the decoder's, then the embeddings), full
    #: batch only
    rng: Literal["probe", "grokking-squared", "grokking-squared-phase"] = field(default="probe", metadata=ADDED)
    device: str = "auto"
    #: cross-entropy's normaliser: softmax, or Prieto et al.'s (2025) StableMax (Eq. 7-8)
    softmax: Literal["softmax", "stablemax"] = "softmax"
    #: precision of the (stable)softmax and cross-entropy (float32 shows softmax collapse, Prieto et al.)
    softmax_dtype: Literal["float32", "float64"] = "float64"
    #: Prieto et al.'s perpendicular gradient: each tensor's gradient loses its component along the tensor
    orthogonal_grad: bool = False
    #: with orthogonal_grad: rescale each tensor's projected gradient to the norm its gradient had, as
    #: the authors' code does (``orthograd.py``; the paper's Sec. 5 states the projection alone)
    orthogonal_grad_rescale: bool = field(default=False, metadata=ADDED)
    #: keep this fraction of the training split (a fixed subset chosen with split_seed; validation unchanged)
    train_subset: float | None = None
    #: ``task``: the task's own labels; ``shuffled``: a fixed random permutation of them (drawn with
    #: ``label_seed``, stored in the run's task), random labels only memorisation can fit (Varma et al.)
    labels: Literal["task", "shuffled"] = field(default="task", metadata=ADDED)
    label_seed: int = field(default=0, metadata=ADDED)
    #: Omnigrok's alpha: every weight matrix (tensors of two or more dimensions) is multiplied by it at
    #: initialisation, after the model's own initialisation (the digits model's model.init_alpha comes first)
    init_alpha: float = 1.0
    model: ModelConfig = field(default_factory=lambda: TransformerConfig())
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    grokfast: GrokfastConfig = field(default_factory=GrokfastConfig)
    constraint: ConstraintConfig = field(default_factory=ConstraintConfig)
    l1: L1Config = field(default=L1Config(), metadata=ADDED)
    #: the sections extensions registered (:func:`register_section`), as ``(name, config)`` pairs: only
    #: those set away from their defaults, in registration order; read them with :meth:`section`
    extensions: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        _check(self.task in TASKS, "task", self.task, f"unknown task{valid(TASKS.names())}")
        _check(self.p is None or 2 <= self.p <= MAX_SYMBOLS, "p", self.p, f"must be in 2..{MAX_SYMBOLS}")
        TASKS.get(self.task).check(p=self.p, n=self.n)  # e.g. a prime p for division, before anything is built
        try:
            check_labels(self.task, self.labels, self.label_seed)
        except ProbeError as exc:
            key = exc.param or "labels"
            raise ProbeError(f"invalid config value {key}={getattr(self, key)!r}: {exc.message}") from None
        for name in ("seed", "split_seed"):
            value = getattr(self, name)
            _check(0 <= value < SEED_LIMIT, name, value, f"must be in 0..{SEED_LIMIT - 1}")
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
        _check(0.0 <= self.momentum < 1.0, "momentum", self.momentum, "must be in [0, 1)")
        _check(self.steps <= 10**9, "steps", self.steps, "must be <= 1e9")
        _check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be >= 0")
        _check(self.train_subset is None or 0.0 < self.train_subset <= 1.0, "train_subset", self.train_subset,
               "must be in (0, 1]")
        _check(0.0 < self.init_alpha < float("inf"), "init_alpha", self.init_alpha, "must be a number > 0")
        _check(self.orthogonal_grad or not self.orthogonal_grad_rescale, "orthogonal_grad_rescale",
               self.orthogonal_grad_rescale, "needs orthogonal_grad: true")
        if self.softmax != "softmax" or self.softmax_dtype != "float64":
            _check(self.model.objective == "cross_entropy", "softmax", self.softmax,
                   f"applies to cross_entropy; this model trains with {self.model.objective}")
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
               self.device, "must be auto, cpu, cuda or cuda:N")
        if self.rng != "probe":
            code = "toy/train_add.py" if self.rng == "grokking-squared" else "phase_diagram.ipynb"
            _check(self.task == "nonmod-add" and self.ordered in (None, False), "rng", self.rng,
                   f"follows {code}, which trains unordered nonmod-add (task nonmod-add)")
            _check(self.model.kind == "toy" and getattr(self.model, "aggregation", None) == "sum", "rng", self.rng,
                   f"follows {code}'s model: the toy model with aggregation sum")
            _check(self.train_subset is None and self.batching == "random", "rng", self.rng,
                   f"draws {code}'s own split and minibatches (no train_subset, batching random)")
            _check(self.split_seed == self.seed, "split_seed", self.split_seed,
                   f"rng {self.rng} draws split and weights from one seed: set split_seed = seed ({self.seed})")
        if self.rng == "grokking-squared-phase":
            _check(self.batch_size is None, "batch_size", self.batch_size,
                   "rng grokking-squared-phase follows phase_diagram.ipynb, which trains full batch")
        if self.task == "digits":
            _check(self.model.kind == "digits", "model.kind", self.model.kind, "task digits needs model.kind=digits")
        else:
            _check(self.model.kind != "digits", "model.kind", self.model.kind, "the digits model needs task=digits")
        object.__setattr__(self, "extensions", _extension_values(self.extensions))

    def interventions(self) -> list[str]:
        """The training options this config turns on, in words (empty when none), in the order of
        :data:`TRAINING_OPTIONS`: what ``probe info`` shows, and what keeps a run out of vectorised
        ensembles (only the one-run trainer applies them)."""
        return [option.describe(self) for _, option in TRAINING_OPTIONS.items() if option.active(self)]

    def section(self, name: str) -> Any:
        """The config of section ``name``: a field (``model``, ``checkpoint`` ...) or a section an
        extension registered (its defaults unless set). Unknown names list the sections."""
        sec = SECTIONS.get(name)
        if sec.core:
            return getattr(self, name)
        for key, value in self.extensions:
            if key == name:
                return value
        return sec.config()

    def __getattr__(self, name: str) -> Any:
        # called only when ordinary lookup fails: an extension's section reads as an attribute (cfg.noise)
        if not name.startswith("_") and name != "extensions" and name in SECTIONS:
            return self.section(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def task_params(self) -> dict[str, Any]:
        return {"name": self.task, "p": self.p, "n": self.n, "group": self.group, "ordered": self.ordered,
                "labels": self.labels, "label_seed": self.label_seed}

    @property
    def resolved_embed_lr(self) -> float:
        """The embedding learning rate: ``embed_lr``, or ``lr`` when unset (the one place that knows)."""
        return self.lr if self.embed_lr is None else self.embed_lr

    @property
    def resolved_embed_weight_decay(self) -> float:
        return self.weight_decay if self.embed_weight_decay is None else self.embed_weight_decay

    def to_dict(self) -> dict[str, Any]:
        """The nested dict a run stores (JSON): flat keys, then every section; an extension's section
        only when set away from its defaults, so a run that does not use it reads without it."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != EXTENSIONS
                and not (f.metadata.get("stored") == "when_set" and getattr(self, f.name) == f.default)}
        data.update(self.extensions)
        for name, sec in SECTIONS.items():
            if name in data:
                data[name] = sec.to_dict(data[name])
        return _to_jsonable(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from a (possibly partial) nested dict: absent keys take their defaults; unknown keys
        and sections raise with the valid ones."""
        return _build(cls, data, prefix="")

    def with_overrides(self, overrides: dict[str, Any]) -> "TrainConfig":
        """Apply ``{"lr": 0.01, "model.d_model": 64}``-style overrides (values may be strings)."""
        data = self.to_dict()
        for key, value in overrides.items():
            parts = key.split(".")
            if len(parts) > 2 or (len(parts) == 2 and parts[0] not in SECTIONS):
                raise ProbeError(f"unknown config key {key!r}{_valid_keys_hint()}")
            target = data
            if len(parts) == 2:
                sec = SECTIONS.get(parts[0])
                target = data.setdefault(sec.name, {})  # an extension's section starts from its defaults
                if not isinstance(target, dict):
                    raise ProbeError(f"unknown config key {key!r}{_valid_keys_hint()}")
                if sec.kinds is not None and parts[1] == "kind" and value != target.get("kind"):
                    data[sec.name] = {"kind": value}  # switching model kind starts from that kind's defaults
                    continue
            target[parts[-1]] = value
        return TrainConfig.from_dict(data)


EXTENSIONS = "extensions"  # the field of TrainConfig holding the sections extensions registered


class UnknownSectionError(ProbeError):
    """A config holds a section no one registered in this process (a stored run written with an
    extension that is not imported here, or a misspelt section): the config is fine, the reader
    lacks the section's definition."""


@dataclass(frozen=True)
class Section:
    """A nested config section: the dotted keys ``NAME.*``, validated by the frozen dataclass ``config``.

    Every field of :class:`TrainConfig` whose type is a dataclass is a section (``core``); an extension
    adds one with :func:`register_section` (kept in ``TrainConfig.extensions``). ``kinds``: for a
    section whose dataclass is chosen by its ``kind`` key (``model``), the registry of kinds, and
    ``default_kind`` the kind of the field's default.
    """

    name: str
    config: type
    core: bool = True
    kinds: Registry[Any] | None = None
    default_kind: str = ""

    def keys(self) -> list[str]:
        """The section's dotted keys (for a kind-dispatched section, those of every kind)."""
        if self.kinds is None:
            names = [f.name for f in fields(self.config)]
        else:
            names = sorted({"kind"} | {f.name for _, cls in self.kinds.items() for f in fields(cls)})
        return [f"{self.name}.{n}" for n in names]

    def build(self, data: Any) -> Any:
        """The section's config from its (possibly partial) dict; ProbeError naming the bad key."""
        if self.kinds is None:
            return _build(self.config, data, f"{self.name}.")
        if not isinstance(data, dict):
            raise ProbeError(f"config section {self.name} must be a mapping, got {str(data)[:60]!r}")
        kind = data.get("kind", self.default_kind)
        if not isinstance(kind, str) or kind not in self.kinds:
            raise ProbeError(f"invalid config value {self.name}.kind={str(kind)[:40]!r}: unknown {self.kinds.what}"
                             f"{valid(self.kinds.names())}")
        return _build(self.kinds.get(kind), {k: v for k, v in data.items() if k != "kind"}, f"{self.name}.")

    def to_dict(self, value: Any) -> dict[str, Any]:
        data = _stored(value)
        return {"kind": value.kind, **data} if self.kinds is not None else data


#: every config section, live: the fields of TrainConfig (derived below), then those extensions register
SECTIONS: Registry[Section] = Registry("config section")


def _core_sections() -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        tp = hints[f.name]
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            continue
        if issubclass(tp, ModelConfig):
            default = f.default_factory()  # type: ignore[misc]
            SECTIONS.add(f.name, Section(f.name, tp, kinds=MODELS, default_kind=default.kind))
        else:
            SECTIONS.add(f.name, Section(f.name, tp))


_core_sections()


def register_section(name: str, config: type) -> Section:
    """Register an extension's config section ``name`` (keys ``NAME.*``), validated by the frozen
    dataclass ``config`` whose every field has a default. Configs, ``--set NAME.key=value``, YAML
    files, stored runs and the valid-key hints know it from then on; ``cfg.section(NAME)`` (or
    ``cfg.NAME``) reads it. A name taken by a key, a section or an attribute of TrainConfig is a
    programming error (``ValueError``), as in every registry (docs/design.md, Registries)."""
    if not name.isidentifier() or name.startswith("_"):
        raise ValueError(f"config section name {name!r} must be a Python identifier not starting with _")
    if name not in SECTIONS and (hasattr(TrainConfig, name) or name in {f.name for f in fields(TrainConfig)}):
        raise ValueError(f"config section {name!r} would shadow TrainConfig.{name}")
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)
            and config.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        raise ValueError(f"config section {name!r}: {config!r} is not a frozen dataclass")
    try:
        config()
    except TypeError as exc:
        raise ValueError(f"config section {name!r}: every field of {config.__name__} needs a default ({exc})") from None
    return SECTIONS.add(name, Section(name, config, core=False))


def _extension_values(items: Any) -> tuple[tuple[str, Any], ...]:
    """``TrainConfig.extensions`` in its one form: registered sections of the right class, those at
    their defaults dropped (so equal configs compare equal), in registration order."""
    pairs = list(items.items()) if isinstance(items, dict) else list(items)
    given: dict[str, Any] = {}
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ProbeError(f"invalid config value extensions={items!r}: expected (section, config) pairs")
        name, value = pair
        sec = SECTIONS.get(name)
        if sec.core:
            raise ProbeError(f"invalid config value extensions: {name} is a field of the config, not an extension")
        if not isinstance(value, sec.config):
            raise ProbeError(f"invalid config value {name}={value!r}: expected a {sec.config.__name__}")
        if value != sec.config():
            given[name] = value
    return tuple((name, given[name]) for name in SECTIONS.names() if name in given)


@dataclass(frozen=True)
class TrainingOption:
    """A training option only the one-run trainer applies: whether a config turns it on, and what it
    does in one line (``probe info`` shows it; the vectorised ensemble refuses the run with it).

    The trainer's interventions (``probe.train.interventions``) each have one; options applied where
    a run is built (its split, its initialisation, the model's loss) are declared here alone.
    """

    name: str
    active: Callable[[TrainConfig], bool]
    describe: Callable[[TrainConfig], str]
    #: True: applied by the run's own trainer, where it is set up (its split, targets and initial
    #: weights) or where it draws a step's minibatch; a vectorised ensemble sets each member up as its
    #: own run and draws each member's batches from it, so it applies the option as well
    per_member: bool = False


#: the training options, in the order ``TrainConfig.interventions`` lists them
TRAINING_OPTIONS: Registry[TrainingOption] = Registry("training option")


def training_option(name: str, active: Callable[[TrainConfig], bool],
                    describe: Callable[[TrainConfig], str], per_member: bool = False) -> TrainingOption:
    """Register a training option (a duplicate name is a ``ValueError``)."""
    return TRAINING_OPTIONS.add(name, TrainingOption(name, active, describe, per_member))


def _grokfast(cfg: TrainConfig) -> str:
    g = cfg.grokfast
    setting = f"alpha {g.alpha:g}" if g.filter == "ema" else f"window {g.window}"
    return f"grokfast {g.filter} ({setting}, lamb {g.amplification:g})"


def _constraint(cfg: TrainConfig) -> str:
    c = cfg.constraint
    target = f"norm {c.norm:g}" if c.norm is not None else f"{c.relative:g} x initial norm"
    return f"constrained weight norm ({target}; tensors {','.join(c.tensors)})"


training_option("grokfast", lambda cfg: cfg.grokfast.filter != "none", _grokfast)
training_option("constraint", lambda cfg: cfg.constraint.active, _constraint)
training_option("l1", lambda cfg: cfg.l1.coef > 0,
                lambda cfg: f"L1 penalty {cfg.l1.coef:g} x mean|W| on "
                f"{','.join(cfg.l1.tensors) if cfg.l1.tensors else 'the embeddings'}")
training_option("softmax", lambda cfg: cfg.softmax != "softmax" or cfg.softmax_dtype != "float64",
                lambda cfg: f"{cfg.softmax} cross-entropy in {cfg.softmax_dtype}")
training_option("orthogonal_grad", lambda cfg: cfg.orthogonal_grad,
                lambda cfg: "orthogonal gradients" + (", rescaled to the gradient's norm"
                                                      if cfg.orthogonal_grad_rescale else ""))
training_option("train_subset", lambda cfg: cfg.train_subset is not None,
                lambda cfg: f"training subset {cfg.train_subset:g} of the split")
training_option("init_alpha", lambda cfg: cfg.init_alpha != 1.0,
                lambda cfg: f"weight matrices initialised x{cfg.init_alpha:g}")
training_option("rng", lambda cfg: cfg.rng != "probe",
                lambda cfg: f"split, targets and initial weights drawn as {cfg.rng}'s code draws them (seed {cfg.seed})",
                per_member=True)
training_option("batching", lambda cfg: cfg.batching == "epochs" and cfg.batch_size is not None,
                lambda cfg: f"epochs of batches over a shuffled training split ({cfg.batch_size} rows each, "
                "the last one the remainder)", per_member=True)


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    return obj


def valid_keys() -> list[str]:
    """All settable keys, flat and dotted (model keys of every model kind, every registered section)."""
    keys = [f.name for f in fields(TrainConfig) if f.name not in SECTIONS and f.name != EXTENSIONS]
    for _, sec in SECTIONS.items():
        keys += sec.keys()
    return keys


def _valid_keys_hint() -> str:
    return valid(valid_keys())


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ProbeError(f"config section {prefix.rstrip('.') or 'root'} must be a mapping, got {str(data)[:60]!r}")
    top = cls is TrainConfig
    hints = _type_hints(cls)
    names = {f.name for f in fields(cls) if not (top and f.name == EXTENSIONS)}
    if top:
        names |= set(SECTIONS.names())
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f"{prefix}{unknown[0]}"
        if top and isinstance(data[unknown[0]], dict):
            raise UnknownSectionError(f"unknown config section {where!r}{valid(SECTIONS.names())}; a section an "
                                      "extension registers is known once the module registering it is imported")
        raise ProbeError(f"unknown config key {where!r}{valid(sorted(f'{prefix}{n}' for n in names))}")
    kwargs: dict[str, Any] = {}
    extensions = []
    for name, value in data.items():
        if top and name in SECTIONS:
            sec = SECTIONS.get(name)
            if sec.core:
                kwargs[name] = sec.build(value)
            else:
                extensions.append((name, sec.build(value)))
        else:
            kwargs[name] = coerce(hints[name], value, f"{prefix}{name}")
    if extensions:
        kwargs[EXTENSIONS] = tuple(extensions)
    return cls(**kwargs)


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """A config class's resolved field types (resolving them is most of the cost of building a config)."""
    return typing.get_type_hints(cls)


@functools.cache
def _type_shape(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    return typing.get_origin(tp), typing.get_args(tp)


def coerce(tp: Any, value: Any, key: str) -> Any:
    """Convert ``value`` (possibly a CLI string) to type ``tp``; raise ProbeError naming ``key``.
    Floats must be finite: no setting means nan or an infinity."""
    origin, args = _type_shape(tp)
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
        raise ProbeError(f"invalid config value {key}={value!r}:{valid(args)}")
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
        except (TypeError, ValueError, OverflowError):
            raise ProbeError(f"invalid config value {key}={value!r}: expected a number") from None
        if not math.isfinite(out):  # nan, inf and -inf: no setting means any of them
            raise ProbeError(f"invalid config value {key}={value!r}: expected a finite number")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        raise ProbeError(f"invalid config value {key}={value!r}: expected a string")
    raise ProbeError(f"invalid config value {key}={value!r}")
