"""Decoder-only transformer with TransformerLens hook and parameter names.

Inputs ``[a, b, =]`` (Nanda et al. 2023) or ``[a, op, b, =]`` (Power et al. 2022), or without the
``=`` token (``model.eq_token=false``: ``[a, b]``, Liu et al. 2022); learned position embeddings or
none (``model.positional``); a causal attention mask or none (``model.causal``). Logits are read at
the last position, or from every position's final residual stream concatenated
(``model.readout=concat``, Liu et al.'s ``nn.Linear(2 d, p)``). The block is pre-LayerNorm
(``model.block=pre_ln``) or replaces the residual stream by its LayerNorm before attention
(``ln_replaces_residual``, Lee et al. 2024); dropout acts on the attention pattern, the attention and
MLP outputs and the input embeddings, or the MLP's hidden activations instead of the embeddings
(``model.dropout_at=mlp``: nn.TransformerEncoderLayer's sites); the initial weights follow Nanda et
al. (``model.init=nanda``), Zhong et al. (``zhong``: W_in scaled by 1/sqrt(d_mlp)) or torch's module
defaults (``pytorch``). Attention may mix its softmax with constant attention (``model.attention_rate``
alpha: ``alpha * softmax + (1 - alpha)``, Zhong et al. 2023) and may have no biases
(``model.attn_bias=false``).
``answer(last_only=True)`` computes the final block only where the loss needs
it: keys and values at every position, but the query, attention output, MLP and unembedding at the
last position only, which is the same arithmetic for that position and about half the FLOPs of a
one-layer model (a concatenated readout needs every position, so it computes them all).
``forward`` always computes every position, so analyses see full activations.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from probe.config import TransformerConfig
from probe.models.base import ACTIVATIONS, ANSWER, ProbeModel, each, mm, uniform_


class LayerNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self.b = nn.Parameter(torch.zeros(d))
        self.eps = eps
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.w + self.b


def _linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x [..., d] @ w [d, n]`` as one 2-D matrix product (what torch does for a plain tensor; under
    ``vmap`` in an ensemble a left operand of more than 2 dimensions would broadcast ``w`` over it)."""
    return (x.reshape(-1, x.shape[-1]) @ w).view(*x.shape[:-1], w.shape[-1])


def _project(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """[B, P, d] x [h, d, k] -> [B, P, h, k] as one matrix product (of a 2-D ``[B P, d]`` by ``[d, h k]``:
    under ``vmap`` in an ensemble a 3-D left operand would broadcast the weights over the batch)."""
    h, d, k = w.shape
    out = (x.reshape(-1, d) @ w.permute(1, 0, 2).reshape(d, h * k)).view(*x.shape[:-1], h, k)
    return out if b is None else out + b


def _bias(shape: tuple[int, ...], on: bool) -> nn.Parameter | None:
    return nn.Parameter(torch.zeros(shape)) if on else None


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig, init_std: float) -> None:
        super().__init__()
        h, d, k = cfg.n_heads, cfg.d_model, cfg.head_dim
        self.W_Q = nn.Parameter(torch.randn(h, d, k) * init_std)
        self.W_K = nn.Parameter(torch.randn(h, d, k) * init_std)
        self.W_V = nn.Parameter(torch.randn(h, d, k) * init_std)
        self.W_O = nn.Parameter(torch.randn(h, k, d) * init_std)
        for name, shape in (("b_Q", (h, k)), ("b_K", (h, k)), ("b_V", (h, k)), ("b_O", (d,))):
            self.register_parameter(name, _bias(shape, cfg.attn_bias))
        self.dropout = nn.Dropout(cfg.dropout)
        self.causal = cfg.causal
        self.rate: float | torch.Tensor = float(cfg.attention_rate)
        for name in ("q", "k", "v", "attn_scores", "pattern", "z"):
            setattr(self, f"hook_{name}", HookPoint())

    def forward(self, x: torch.Tensor, query: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: [B, P, d] keys/values source; ``query``: rows to attend from (default all of x).

        When ``query`` is the last position only, the causal mask lets it see every key; without
        ``model.causal`` every query sees every key.
        """
        q_src = x if query is None else query
        q = self.hook_q(_project(q_src, self.W_Q, self.b_Q))
        k = self.hook_k(_project(x, self.W_K, self.b_K))
        v = self.hook_v(_project(x, self.W_V, self.b_V))
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        n_q, n_k = q.shape[1], k.shape[1]
        mask = None
        if self.causal and n_q > 1:
            mask = torch.ones(n_q, n_k, dtype=torch.bool, device=x.device).tril(n_k - n_q)
            scores = scores.masked_fill(~mask, float("-inf"))
        scores = self.hook_attn_scores(scores)
        pattern = self.dropout(scores.softmax(dim=-1))
        rate: float | torch.Tensor = self.rate
        if isinstance(rate, torch.Tensor) or rate != 1.0:
            # Zhong et al. 2023 (code/train-main.py): alpha * softmax + (1 - alpha) on every visible key
            rest = 1.0 - rate
            if isinstance(rate, torch.Tensor):  # one member's rate in a vectorised ensemble (float64, 0-d):
                rate, rest = rate.to(pattern.dtype), rest.to(pattern.dtype)  # rounded as a Python float's
            constant = rest if mask is None else rest * mask.to(pattern.dtype)
            pattern = rate * pattern + constant
        pattern = self.hook_pattern(pattern)
        z = self.hook_z(torch.einsum("bhqk,bkhd->bqhd", pattern, v))
        h, dh, d = self.W_O.shape
        out = _linear(z.reshape(*z.shape[:2], h * dh), self.W_O.reshape(h * dh, d))
        return out if self.b_O is None else out + self.b_O


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d, m = cfg.d_model, cfg.d_mlp
        # init=zhong scales W_in by 1/sqrt(d_mlp) (Zhong et al.'s train-main.py), Nanda's by 1/sqrt(d_model)
        self.W_in = nn.Parameter(torch.randn(d, m) / math.sqrt(m if cfg.init == "zhong" else d))
        self.b_in = nn.Parameter(torch.zeros(m))
        self.W_out = nn.Parameter(torch.randn(m, d) / math.sqrt(d))
        self.b_out = nn.Parameter(torch.zeros(d))
        self.act = ACTIVATIONS[cfg.act]
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()
        # model.dropout_at=mlp: the hidden activations are dropped out after hook_post (the neurons the
        # hook sees are the activations themselves), as in nn.TransformerEncoderLayer's feed-forward
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout_at == "mlp" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        post = self.hook_post(self.act(self.hook_pre(_linear(x, self.W_in) + self.b_in)))
        if self.dropout is not None:
            post = self.dropout(post)
        return _linear(post, self.W_out) + self.b_out


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.ln_replaces_residual = cfg.block == "ln_replaces_residual"
        self.ln1 = LayerNorm(cfg.d_model) if cfg.layernorm else nn.Identity()
        self.ln2 = LayerNorm(cfg.d_model) if cfg.layernorm else nn.Identity()
        self.attn = Attention(cfg, init_std=1.0 / math.sqrt(cfg.d_model))
        self.mlp = MLP(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        for name in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"):
            setattr(self, f"hook_{name}", HookPoint())

    def forward(self, resid: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        resid = self.hook_resid_pre(resid)
        normed = self.ln1(resid)
        if self.ln_replaces_residual:
            resid = normed
        if last_only:
            attn = self.attn(normed, query=normed[:, -1:])
            resid = resid[:, -1:]
        else:
            attn = self.attn(normed)
        resid = self.hook_resid_mid(resid + self.hook_attn_out(self.dropout(attn)))
        mlp = self.hook_mlp_out(self.dropout(self.mlp(self.ln2(resid))))
        return self.hook_resid_post(resid + mlp)


class Embed(nn.Module):
    def __init__(self, d_vocab: int, d_model: int) -> None:
        super().__init__()
        self.W_E = nn.Parameter(torch.randn(d_vocab, d_model) / math.sqrt(d_model))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.W_E[tokens]


class PosEmbed(nn.Module):
    def __init__(self, n_ctx: int, d_model: int) -> None:
        super().__init__()
        self.W_pos = nn.Parameter(torch.randn(n_ctx, d_model) / math.sqrt(d_model))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.W_pos[: tokens.shape[1]].unsqueeze(0)


class Unembed(nn.Module):
    def __init__(self, d_model: int, d_vocab_out: int, bias: bool = True) -> None:
        super().__init__()
        self.W_U = nn.Parameter(torch.randn(d_model, d_vocab_out) / math.sqrt(d_vocab_out))
        self.register_parameter("b_U", nn.Parameter(torch.zeros(d_vocab_out)) if bias else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _linear(x, self.W_U)
        return out if self.b_U is None else out + self.b_U


class TransformerLensConfig(TransformerConfig):
    """The transformer's config as TransformerLens' own utilities read ``model.cfg``
    (``transformer_lens.patching``, ``ActivationCache``): the same fields, equal to the plain
    :class:`~probe.config.TransformerConfig` they hold (and hashed alike), plus the attributes
    TransformerLens reads that a probe config has no field for: ``device`` (where the model's weights
    are, kept up to date by :meth:`Transformer._apply`), ``n_key_value_heads`` (None: one key/value per
    head), ``d_vocab``, ``d_vocab_out``, ``act_fn``, ``normalization_type`` and the switches of
    TransformerLens' optional hooks, all off. Nothing of it is stored: runs store the plain config."""

    n_key_value_heads = None
    attn_only = False
    use_attn_result = False
    use_split_qkv_input = False
    use_attn_in = False
    use_hook_mlp_in = False
    use_hook_tokens = False
    parallel_attn_mlp = False
    gated_mlp = False
    final_rms = False
    default_prepend_bos = False
    original_architecture = None
    model_name = "probe-transformer"

    @classmethod
    def of(cls, cfg: TransformerConfig, d_vocab: int, d_vocab_out: int) -> "TransformerLensConfig":
        view = cls(**{f.name: getattr(cfg, f.name) for f in fields(cfg) if f.init})
        object.__setattr__(view, "_sizes", (d_vocab, d_vocab_out))
        return view

    def plain(self) -> TransformerConfig:
        """The plain config with these fields (what runs store and compare)."""
        return TransformerConfig(**{f.name: getattr(self, f.name) for f in fields(self) if f.init})

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, TransformerConfig):
            return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self) if f.compare)
        return NotImplemented

    __hash__ = TransformerConfig.__hash__

    def __repr__(self) -> str:
        return repr(self.plain())

    @property
    def device(self) -> torch.device:
        return self.__dict__.get("_device", torch.device("cpu"))

    @property
    def dtype(self) -> torch.dtype:
        return self.__dict__.get("_dtype", torch.float32)

    @property
    def d_vocab(self) -> int:
        return self.__dict__.get("_sizes", (0, 0))[0]

    @property
    def d_vocab_out(self) -> int:
        return self.__dict__.get("_sizes", (0, 0))[1]

    @property
    def act_fn(self) -> str:
        return self.act

    @property
    def normalization_type(self) -> str | None:
        return "LN" if self.layernorm else None

    @property
    def positional_embedding_type(self) -> str:
        return "standard" if self.positional == "learned" else "none"

    @property
    def attention_dir(self) -> str:
        return "causal" if self.causal else "bidirectional"


class Transformer(ProbeModel):
    """Token vocabulary: symbols ``0..n-1``, then ``=`` (index n) if used, then the op token if used
    (n+1, or n without ``=``).

    ``model.cfg`` is a :class:`TransformerLensConfig`: the model's :class:`TransformerConfig`, equal to
    it, which TransformerLens' own utilities (activation patching) can also read."""

    def __init__(self, cfg: TransformerConfig, n_symbols: int, n_classes: int) -> None:
        super().__init__()
        self.cfg = TransformerLensConfig.of(cfg, n_symbols + int(cfg.eq_token) + int(cfg.op_token), n_classes)
        self.n_symbols = n_symbols
        self.eq_token = n_symbols if cfg.eq_token else None
        self.op_token = n_symbols + int(cfg.eq_token) if cfg.op_token else None
        self.d_vocab = n_symbols + int(cfg.eq_token) + int(cfg.op_token)
        self.n_ctx = cfg.n_ctx
        self.concat = cfg.readout == "concat"
        self.embed = Embed(self.d_vocab, cfg.d_model)
        self.hook_embed = HookPoint()
        if cfg.positional == "learned":
            self.pos_embed = PosEmbed(self.n_ctx, cfg.d_model)
            self.hook_pos_embed = HookPoint()
        else:
            self.pos_embed = None
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout_at == "embed" else None
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_final = LayerNorm(cfg.d_model) if cfg.layernorm and cfg.ln_final else nn.Identity()
        d_read = cfg.d_model * (self.n_ctx if self.concat else 1)
        self.unembed = Unembed(d_read, n_classes, bias=cfg.head_bias)
        if cfg.init == "pytorch":
            self._init_pytorch()
        self.setup()
        self._track_device()

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "Transformer":
        """``to``, ``cuda``, ``double`` ... move or cast the weights; ``cfg.device`` and ``cfg.dtype``
        follow them (TransformerLens allocates its results there)."""
        out = super()._apply(fn, *args, **kwargs)
        self._track_device()
        return out

    def _track_device(self) -> None:
        w = self.embed.W_E
        object.__setattr__(self.cfg, "_device", w.device)
        object.__setattr__(self.cfg, "_dtype", w.dtype)

    def _init_pytorch(self) -> None:
        """Re-draw every weight as torch's modules initialise theirs (``model.init=pytorch``): token and
        position embeddings N(0, 1) (nn.Embedding); W_Q, W_K, W_V Xavier-uniform over the stacked
        in-projection [3 h d_head, d_model] and zero attention biases (nn.MultiheadAttention); W_O, the
        MLP and the unembedding U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with biases of the same law, but
        b_O zero (nn.Linear, and nn.MultiheadAttention's zeroed out_proj bias); LayerNorms 1 and 0.
        A concatenated readout's fan-in is ``n_ctx * d_model``."""
        with torch.no_grad():
            self.embed.W_E.normal_()
            if self.pos_embed is not None:
                self.pos_embed.W_pos.normal_()
            for block in self.blocks:
                attn, mlp = block.attn, block.mlp
                h, d, k = attn.W_Q.shape
                bound = math.sqrt(6.0 / (d + 3 * h * k))
                for w in (attn.W_Q, attn.W_K, attn.W_V):
                    w.uniform_(-bound, bound)
                for b in (attn.b_Q, attn.b_K, attn.b_V, attn.b_O):
                    if b is not None:
                        b.zero_()
                uniform_(attn.W_O, h * k)
                for w, b in ((mlp.W_in, mlp.b_in), (mlp.W_out, mlp.b_out)):
                    uniform_(w, w.shape[0])
                    uniform_(b, w.shape[0])
            uniform_(self.unembed.W_U, self.unembed.W_U.shape[0])
            if self.unembed.b_U is not None:
                uniform_(self.unembed.b_U, self.unembed.W_U.shape[0])

    def model_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """[N, 2] pairs -> [N, n_ctx] tokens: ``[a, (op,) b, (=)]``."""
        n = inputs.shape[0]

        def const(token: int) -> torch.Tensor:
            return torch.full((n, 1), token, dtype=inputs.dtype, device=inputs.device)

        if self.op_token is None:
            parts = [inputs]
        else:
            parts = [inputs[:, :1], const(self.op_token), inputs[:, 1:]]
        if self.eq_token is not None:
            parts.append(const(self.eq_token))
        return torch.cat(parts, dim=1) if len(parts) > 1 else inputs

    def _residual(self, tokens: torch.Tensor) -> torch.Tensor:
        resid = self.hook_embed(self.embed(tokens))
        if self.pos_embed is not None:
            resid = resid + self.hook_pos_embed(self.pos_embed(tokens))
        return resid if self.dropout is None else self.dropout(resid)

    def _logits(self, resid: torch.Tensor) -> torch.Tensor:
        """Final residual stream [B, P, d] -> logits [B, P, n_classes], or [B, 1, n_classes] read from
        every position concatenated (``model.readout=concat``)."""
        resid = self.ln_final(resid)
        if self.concat:
            resid = resid.reshape(resid.shape[0], 1, -1)
        return self.unembed(resid)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, P] tokens -> [B, P, n_classes] logits, every position computed ([B, 1, n_classes] with a
        concatenated readout: one answer, read from every position)."""
        resid = self._residual(tokens)
        for block in self.blocks:
            resid = block(resid)
        return self._logits(resid)

    def answer(self, x: torch.Tensor, last_only: bool = True) -> torch.Tensor:
        if not last_only or self.concat:
            return self.forward(x)[:, -1]
        resid = self._residual(x)
        for i, block in enumerate(self.blocks):
            resid = block(resid, last_only=i == len(self.blocks) - 1)
        return self._logits(resid)[:, -1]

    # batched passes over stacked checkpoints ------------------------------------------------------
    def stacked(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, collect: Sequence[str] = (ANSWER,),
                replace: Mapping[str, torch.Tensor] | None = None, path: str = ANSWER) -> dict[str, torch.Tensor]:
        """:meth:`ProbeModel.stacked` on the answer path as batched matrix products (the outputs and the
        neurons, ``cfg.neuron_hook``, may be collected and the neurons replaced); any other hook or path
        goes through the generic ``vmap`` form.

        One layer: every input of the block is a function of one (token, position) pair, so queries,
        keys, values, their attention scores and each head's contribution to the residual stream, the
        MLP's pre-activations and the logits are computed once per pair that occurs ("tables"), and a
        sample's attention output, pre-activations and residual logits are sums of a few table rows
        weighted by its attention pattern (``torch.nn.functional.embedding_bag``). Without LayerNorm
        the logits are ``rows + neurons @ (W_out W_U)``. Several layers: each block per sample, the last
        at the last position only (as :meth:`answer`). Same arithmetic as :meth:`answer`, summed in
        another order (float rounding differs)."""
        hook = self.cfg.neuron_hook
        swaps = dict(replace or {})
        known = {ANSWER, hook, "hook_embed"}
        if path != ANSWER or self.concat or not set(collect) <= known or not set(swaps) <= known - {ANSWER}:
            return super().stacked(params, x, collect, replace, path)
        p = dict(params)
        new = swaps.get(hook)
        result: dict[str, torch.Tensor] = {}
        embed = swaps.get("hook_embed")
        if "hook_embed" in collect:
            result["hook_embed"] = p["embed.W_E"][:, x] if embed is None else embed
            if not set(collect) - {"hook_embed"}:
                return result
        if len(self.blocks) == 1 and embed is None:
            post, out = self._stacked_tables(p, x, new, ANSWER in collect, hook in collect)
        else:
            post, out = self._stacked_dense(p, x, new, ANSWER in collect, embed)
        if hook in collect:
            result[hook] = post[:, :, None]  # what the hook sees on the answer path: [k, N, 1, d_mlp]
        if ANSWER in collect:
            result[ANSWER] = out
        return result

    def stacked_entries(self, params: Mapping[str, torch.Tensor], x: torch.Tensor,
                        classes: torch.Tensor) -> torch.Tensor:
        """:meth:`ProbeModel.stacked_entries`: on the one-block tables path, the entries without the
        full outputs (each sample's residual rows through ``W_U`` at its class, plus its neurons
        against that class's column of ``W_out W_U``); otherwise the generic gather."""
        if self.concat or len(self.blocks) != 1:
            return super().stacked_entries(params, x, classes)
        _, out = self._stacked_tables(dict(params), x, None, True, False, classes.to(x.device))
        assert out is not None
        return out

    def stacked_embed_gradients(self, params: Mapping[str, torch.Tensor], x: torch.Tensor,
                                classes: torch.Tensor) -> torch.Tensor:
        """:meth:`ProbeModel.stacked_embed_gradients` in closed form for one block without LayerNorm
        and with a ReLU MLP (Nanda et al.'s and Zhong et al.'s models): the chain rule written out
        through the answer position's residual stream, the MLP, each head's values, its attention
        pattern (softmax, scaled by the attention rate) and its query and keys; otherwise the generic
        backward pass. On the CPU one checkpoint at a time (see :func:`probe.models.base.each`)."""
        ln = any(n.startswith(("blocks.0.ln", "ln_final")) for n in params)
        if (self.concat or len(self.blocks) != 1 or ln or self.blocks[0].mlp.act is not ACTIVATIONS["relu"]
                or not isinstance(self.ln_final, nn.Identity)):
            return super().stacked_embed_gradients(params, x, classes)
        c = classes.to(x.device)
        k = next(iter(params.values())).shape[0]
        if x.device.type == "cpu" and k > 1:
            return torch.cat([self._embed_gradients({n: v[i: i + 1] for n, v in params.items()}, x, c)
                              for i in range(k)])
        return self._embed_gradients(dict(params), x, c)

    def _embed_gradients(self, p: dict[str, torch.Tensor], tokens: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The closed form of :meth:`stacked_embed_gradients` (``[k, N, P, d]``)."""
        pre, rate = "blocks.0.", self.blocks[0].attn.rate
        ein = torch.einsum
        w_q, w_k, w_v, w_o = (p[pre + f"attn.W_{n}"] for n in "QKVO")  # [k, h, d, e] (W_O: [k, h, e, d])
        root = math.sqrt(w_q.shape[-1])
        resid = p["embed.W_E"][:, tokens]  # [k, N, P, d]
        if self.pos_embed is not None:
            resid = resid + p["pos_embed.W_pos"][:, None, : tokens.shape[1]]

        def bias(name: str) -> torch.Tensor | float:
            return p[pre + name][:, None] if pre + name in p else 0.0

        last = resid[:, :, -1]
        q = ein("knd,khde->knhe", last, w_q) + bias("attn.b_Q")
        key = ein("knpd,khde->knphe", resid, w_k) + (bias("attn.b_K")[:, :, None] if pre + "attn.b_K" in p else 0.0)
        val = ein("knpd,khde->knphe", resid, w_v) + (bias("attn.b_V")[:, :, None] if pre + "attn.b_V" in p else 0.0)
        soft = (ein("knhe,knphe->knhp", q, key) / root).softmax(dim=-1)
        pattern = rate * soft + (1.0 - rate)
        z = ein("knhp,knphe->knhe", pattern, val)
        mid = last + ein("knhe,khed->knd", z, w_o) + bias("attn.b_O")
        active = (mm(mid, p[pre + "mlp.W_in"]) + p[pre + "mlp.b_in"][:, None]) > 0  # ReLU's derivative
        # backwards from the class's logit: d/d(final residual) is the class's column of W_U, and
        # d/d(neurons) that column through W_out (the class's column of W_out W_U)
        w_u = p["unembed.W_U"]
        g_final = w_u.transpose(1, 2)[:, c]  # [k, N, d]
        g_pre = mm(p[pre + "mlp.W_out"], w_u).transpose(1, 2)[:, c] * active  # [k, N, d_mlp]
        g_mid = g_final + mm(g_pre, p[pre + "mlp.W_in"].transpose(1, 2))
        g_z = ein("knd,khed->knhe", g_mid, w_o)
        g_pattern = ein("knhe,knphe->knhp", g_z, val)
        g_scores = rate * soft * (g_pattern - (soft * g_pattern).sum(dim=-1, keepdim=True)) / root
        # each position's embedding through its value and its key (one d-vector per head, then the pattern)
        grad = ein("knhp,knhd->knpd", pattern, ein("knhe,khde->knhd", g_z, w_v))
        grad = grad + ein("knhp,knhd->knpd", g_scores, ein("knhe,khde->knhd", q, w_k))
        # the answer position's also through the residual stream and its query
        at_last = g_mid + ein("knhe,khde->knd", ein("knhp,knphe->knhe", g_scores, key), w_q)
        return torch.cat([grad[:, :, :-1], (grad[:, :, -1] + at_last)[:, :, None]], dim=2)

    def set_knob(self, name: str, value: float | torch.Tensor) -> None:
        """:meth:`ProbeModel.set_knob`: ``attention_rate``, the rate of every block's attention."""
        if name != "attention_rate":
            raise KeyError(name)
        for block in self.blocks:
            block.attn.rate = value

    def answer_map(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """``W_out W_U`` of the last block: the logits are affine in its neurons where nothing but the
        residual stream lies between them and the unembedding (no final LayerNorm, last-position readout)."""
        if self.concat or not isinstance(self.ln_final, nn.Identity):
            return None
        last = f"blocks.{len(self.blocks) - 1}.mlp.W_out"
        return mm(params[last], params["unembed.W_U"])

    def _ln_params(self, p: dict[str, torch.Tensor], name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        return (p[f"{name}.w"], p[f"{name}.b"]) if f"{name}.w" in p else None

    def _token_tables(self, tokens: torch.Tensor) -> dict[str, Any]:
        """What the one-block tables need from the inputs alone (kept while the inputs are the same
        tensor): the (token, position) pairs that occur (``rows``), each sample's row per position
        (``inv``), the rows met at the last position (``q_rows``, ``q_inv``), a position whose token never
        changes (``fixed``, or None), the positions whose rows the samples sum (``keep``) and each
        sample's table rows (``index``: its rows' heads, then its residual row)."""
        key = (id(tokens), tokens.data_ptr(), tuple(tokens.shape), str(tokens.device))
        held = self.__dict__.get("_token_tables_memo")
        if held is not None and held[0] == key:
            return held[1]
        n, n_pos = tokens.shape
        n_heads = self.blocks[0].attn.W_Q.shape[0]
        codes = tokens.to(torch.int64) * n_pos + torch.arange(n_pos, device=tokens.device)
        rows, inv = torch.unique(codes, return_inverse=True)
        q_rows, q_inv = torch.unique(inv[:, -1], return_inverse=True)
        same = [j for j in range(n_pos) if bool((inv[:, j] == inv[0, j]).all())]
        fixed = same[-1] if same else None
        keep = torch.tensor([j for j in range(n_pos) if j != fixed], dtype=torch.int64, device=tokens.device)
        heads = torch.arange(n_heads, device=tokens.device)
        index = torch.cat([(inv[:, keep, None] * n_heads + heads).reshape(n, -1),
                           rows.shape[0] * n_heads + q_inv[:, None]], dim=1)
        out = {"rows": rows, "inv": inv, "q_rows": q_rows, "q_inv": q_inv, "fixed": fixed, "keep": keep,
               "index": index, "score_index": q_inv[:, None] * rows.shape[0] + inv}
        self.__dict__["_token_tables_memo"] = (key, out, tokens)  # (the inputs held: their id stays theirs)
        return out

    def _stacked_tables(self, p: dict[str, torch.Tensor], tokens: torch.Tensor, new: torch.Tensor | None,
                        want_out: bool, want_post: bool = True,
                        classes: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """One block, per (token, position) tables: neurons ``[k, N, d_mlp]`` and outputs ``[k, N, n_out]``
        (with ``classes [N]``: only each sample's entry at its class, ``[k, N]``).
        Where the neurons are not kept, the samples go through in slices of at most :data:`SLICE`
        numbers per intermediate (memory stays flat in the number of samples; on the CPU, blocks the
        allocator reuses)."""
        import torch.nn.functional as F

        block = self.blocks[0]
        attn = block.attn
        t = self._token_tables(tokens)
        w_e = p["embed.W_E"]
        k, n, n_pos = w_e.shape[0], tokens.shape[0], tokens.shape[1]
        n_heads, d_head = attn.W_Q.shape[0], attn.W_Q.shape[2]
        rows, q_rows = t["rows"], t["q_rows"]
        n_rows = rows.shape[0]
        resid = w_e[:, rows // n_pos]  # [k, U, d]
        if self.pos_embed is not None:
            resid = resid + p["pos_embed.W_pos"][:, rows % n_pos]
        ln1 = self._ln_params(p, "blocks.0.ln1")
        normed = _layer_norm(resid, *ln1, block.ln1.eps) if ln1 is not None else resid
        if block.ln_replaces_residual:
            resid = normed
        q = _heads(normed[:, q_rows], p["blocks.0.attn.W_Q"], p.get("blocks.0.attn.b_Q"))  # [k, Uq, h, e]
        key = _heads(normed, p["blocks.0.attn.W_K"], p.get("blocks.0.attn.b_K"))  # [k, U, h, e]
        val = _heads(normed, p["blocks.0.attn.W_V"], p.get("blocks.0.attn.b_V"))
        # scores of every query row met at the last position against every row: [k, Uq U, h]
        # (products and sums per element: a checkpoint's numbers do not depend on how many are stacked)
        scores_table = (q[:, :, None] * key[:, None]).sum(dim=-1) / math.sqrt(d_head)
        scores_table = scores_table.reshape(k, -1, n_heads)
        # each (row, head)'s contribution to the residual stream, and the residual stream's rows
        head_out = mm(val.permute(0, 2, 1, 3), p["blocks.0.attn.W_O"]).permute(0, 2, 1, 3)  # [k, U, h, d]
        base = resid[:, q_rows]  # at the last position, [k, Uq, d]
        if "blocks.0.attn.b_O" in p:
            base = base + p["blocks.0.attn.b_O"][:, None]
        if t["fixed"] is not None:
            # a position whose token never changes: its pattern weight is a constant minus the others'
            # (each head's pattern sums to rate + (1 - rate) P over the P keys), so it leaves the sums
            fixed = head_out[:, t["inv"][0, t["fixed"]]]  # [k, h, d]
            head_out = head_out - fixed[:, None]
            base = base + (attn.rate + (1.0 - attn.rate) * n_pos) * fixed.sum(dim=1)[:, None]
        rows_d = torch.cat([head_out.reshape(k, n_rows * n_heads, -1), base], dim=1)  # [k, U h + Uq, d]
        n_table = rows_d.shape[1]
        offsets = (torch.arange(k, device=tokens.device) * n_table)[:, None, None]
        w_in, b_in = p["blocks.0.mlp.W_in"], p["blocks.0.mlp.b_in"]
        ln2 = self._ln_params(p, "blocks.0.ln2")
        rows_m = None
        if new is None and ln2 is None:  # the pre-activations are bags of the rows' images under W_in
            rows_m = mm(rows_d, w_in)
            rows_m[:, n_rows * n_heads:] += b_in[:, None]
            rows_m = rows_m.reshape(k * n_table, -1)
        lnf = self._ln_params(p, "ln_final")
        w_out, b_out = p["blocks.0.mlp.W_out"], p["blocks.0.mlp.b_out"]
        w_u, b_u = p["unembed.W_U"], p.get("unembed.b_U")
        rows_u = jac = None
        if want_out and lnf is None:  # logits = the residual rows through W_U + neurons @ (W_out W_U)
            rows_u = mm(rows_d, w_u)
            tail = (b_out[:, :, None] * w_u).sum(dim=1, keepdim=True)  # b_out W_U, [k, 1, n_out]
            if b_u is not None:
                tail = tail + b_u[:, None]
            rows_u[:, n_rows * n_heads:] += tail
            rows_u = rows_u.reshape(k * n_table, -1)
            jac = mm(w_out, w_u)
        flat_d = rows_d.reshape(k * n_table, -1)
        d_mlp = w_in.shape[-1]
        post_all = new.to(w_in.dtype) if new is not None else None
        width = () if classes is not None else (w_u.shape[-1],)
        out_all = torch.empty(k, n, *width, dtype=w_u.dtype, device=w_u.device) if want_out else None
        keep_post = want_post or new is not None
        jac_rows = None
        step = n if keep_post else max(1, SLICE // max(1, k * max(d_mlp, w_e.shape[-1])))
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            m = hi - lo
            pattern = scores_table[:, t["score_index"][lo:hi]].softmax(dim=2)  # [k, m, P, h]
            if attn.rate != 1.0:  # the last query sees every key (causal or not)
                pattern = attn.rate * pattern + (1.0 - attn.rate)
            weight = torch.ones(k, m, t["index"].shape[1], dtype=pattern.dtype, device=pattern.device)
            weight[:, :, :-1] = pattern[:, :, t["keep"]].reshape(k, m, -1)
            flat_index = (t["index"][lo:hi][None] + offsets).reshape(k * m, -1)
            flat_weight = weight.reshape(k * m, -1)

            def bag(table: torch.Tensor) -> torch.Tensor:  # each sample's weighted sum of table rows
                return F.embedding_bag(flat_index, table, per_sample_weights=flat_weight, mode="sum").view(k, m, -1)

            resid_mid = None
            if post_all is not None:
                post = post_all[:, lo:hi]
            else:
                if rows_m is not None:
                    post = _activate(block.mlp.act, bag(rows_m))
                else:
                    resid_mid = bag(flat_d)
                    post = _activate(block.mlp.act, mm(_layer_norm(resid_mid, *ln2, block.ln2.eps), w_in)
                                     + b_in[:, None])
                if keep_post:  # one slice: all the samples
                    post_all = post
            if out_all is None:
                continue
            if jac is not None and classes is not None:  # the class's column of W_out W_U only
                c = classes[lo:hi]
                if jac_rows is None:
                    jac_rows = jac.transpose(1, 2).contiguous()  # [k, n_out, d_mlp]: a class's column as a row
                picked = bag(rows_u).gather(2, c.expand(k, m)[..., None])[..., 0]
                out_all[:, lo:hi] = picked + (post * jac_rows.index_select(1, c)).sum(dim=-1)
                continue
            if jac is not None:
                out_all[:, lo:hi] = each(torch.baddbmm, bag(rows_u), post, jac)
                continue
            if resid_mid is None:
                resid_mid = bag(flat_d)
            final = mm(_layer_norm(resid_mid + mm(post, w_out) + b_out[:, None], *lnf, self.ln_final.eps), w_u)
            final = final if b_u is None else final + b_u[:, None]
            if classes is not None:
                final = final.gather(2, classes[lo:hi].expand(k, m)[..., None])[..., 0]
            out_all[:, lo:hi] = final
        return post_all, out_all

    def _stacked_dense(self, p: dict[str, torch.Tensor], tokens: torch.Tensor, new: torch.Tensor | None,
                       want_out: bool, embed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every block per sample (the last at the last position only); ``embed``: what ``hook_embed``
        sees, in place of the token embeddings (``[k, N, P, d]``)."""
        resid = p["embed.W_E"][:, tokens] if embed is None else embed  # [k, N, P, d]
        if self.pos_embed is not None:
            resid = resid + p["pos_embed.W_pos"][:, None, : tokens.shape[1]]
        last = len(self.blocks) - 1
        post = None
        for i, block in enumerate(self.blocks):
            resid, post = self._dense_block(p, i, block, resid, i == last, new if i == last else None)
        assert post is not None
        if not want_out:
            return post[:, :, -1], None
        lnf = self._ln_params(p, "ln_final")
        final = _layer_norm(resid, *lnf, self.ln_final.eps) if lnf is not None else resid
        out = mm(final[:, :, -1], p["unembed.W_U"])
        if "unembed.b_U" in p:
            out = out + p["unembed.b_U"][:, None]
        return post[:, :, -1], out

    def _dense_block(self, p: dict[str, torch.Tensor], i: int, block: "Block", resid: torch.Tensor, last_only: bool,
                     new: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        pre = f"blocks.{i}."
        attn = block.attn
        k, n, n_pos, d = resid.shape
        ln1 = self._ln_params(p, pre + "ln1")
        normed = _layer_norm(resid, *ln1, block.ln1.eps) if ln1 is not None else resid
        if block.ln_replaces_residual:
            resid = normed
        q_src = normed[:, :, -1:] if last_only else normed

        def heads(x: torch.Tensor, name: str) -> torch.Tensor:  # [k, N, positions, h, e]
            out = _heads(x.reshape(k, -1, d), p[pre + f"attn.W_{name}"], p.get(pre + f"attn.b_{name}"))
            return out.view(k, n, x.shape[2], *out.shape[2:])

        q, key, val = heads(q_src, "Q"), heads(normed, "K"), heads(normed, "V")
        scores = each(lambda a, b: torch.einsum("knqhe,knphe->knhqp", a, b), q, key) / math.sqrt(q.shape[-1])
        n_q = q.shape[2]
        mask = None
        if attn.causal and n_q > 1:
            mask = torch.ones(n_q, n_pos, dtype=torch.bool, device=resid.device).tril(n_pos - n_q)
            scores = scores.masked_fill(~mask, float("-inf"))
        pattern = scores.softmax(dim=-1)
        if attn.rate != 1.0:
            constant = (1.0 - attn.rate) if mask is None else (1.0 - attn.rate) * mask.to(pattern.dtype)
            pattern = attn.rate * pattern + constant
        z = each(lambda a, b: torch.einsum("knhqp,knphe->knqhe", a, b), pattern, val)
        w_o = p[pre + "attn.W_O"]
        out = mm(z.reshape(k, n * n_q, -1), w_o.reshape(k, -1, d)).view(k, n, n_q, d)
        if pre + "attn.b_O" in p:
            out = out + p[pre + "attn.b_O"][:, None, None]
        if last_only:
            resid = resid[:, :, -1:]
        resid = resid + out
        ln2 = self._ln_params(p, pre + "ln2")
        mid = _layer_norm(resid, *ln2, block.ln2.eps) if ln2 is not None else resid
        w_in = p[pre + "mlp.W_in"]
        hidden = mm(mid.reshape(k, -1, d), w_in).view(k, n, -1, w_in.shape[-1]) + p[pre + "mlp.b_in"][:, None, None]
        post = block.mlp.act(hidden)
        if new is not None:
            post = torch.cat([post[:, :, :-1], new.to(post.dtype)[:, :, None]], dim=2)
        w_out = p[pre + "mlp.W_out"]
        mlp = mm(post.reshape(k, -1, post.shape[-1]), w_out).view(k, n, -1, d) + p[pre + "mlp.b_out"][:, None, None]
        return resid + mlp, post


#: the most numbers one intermediate of a batched pass over samples holds (2^21: 8 MB in float32)
SLICE = 1 << 21


def _activate(act: Any, x: torch.Tensor) -> torch.Tensor:
    """``act(x)``, in place where the activation allows it (``x`` is a fresh tensor)."""
    if act is ACTIVATIONS["relu"]:
        return x.clamp_min_(0.0)
    if act is ACTIVATIONS["tanh"]:
        return x.tanh_()
    return act(x)


def _heads(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Stacked ``x [k, R, d]`` through per-head weights ``w [k, h, d, e]``: ``[k, R, h, e]`` (one product)."""
    k, h, d, e = w.shape
    out = mm(x, w.permute(0, 2, 1, 3).reshape(k, d, h * e)).view(k, x.shape[1], h, e)
    return out if b is None else out + b[:, None]


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """:class:`LayerNorm` with stacked weights ``w, b [k, d]`` over ``x [k, ..., d]``."""
    shape = (w.shape[0],) + (1,) * (x.ndim - 2) + (w.shape[1],)
    x = x - x.mean(-1, keepdim=True)
    scale = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return (x / scale) * w.view(shape) + b.view(shape)
