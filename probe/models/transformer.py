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

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from probe.config import TransformerConfig
from probe.models.base import ACTIVATIONS, ProbeModel, uniform_


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


def _project(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """[B, P, d] x [h, d, k] -> [B, P, h, k] as one matrix product."""
    h, d, k = w.shape
    out = (x @ w.permute(1, 0, 2).reshape(d, h * k)).view(*x.shape[:-1], h, k)
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
        self.rate = float(cfg.attention_rate)
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
        if self.rate != 1.0:
            # Zhong et al. 2023 (code/train-main.py): alpha * softmax + (1 - alpha) on every visible key
            constant = (1.0 - self.rate) if mask is None else (1.0 - self.rate) * mask.to(pattern.dtype)
            pattern = self.rate * pattern + constant
        pattern = self.hook_pattern(pattern)
        z = self.hook_z(torch.einsum("bhqk,bkhd->bqhd", pattern, v))
        h, dh, d = self.W_O.shape
        out = z.reshape(*z.shape[:2], h * dh) @ self.W_O.reshape(h * dh, d)
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
        post = self.hook_post(self.act(self.hook_pre(x @ self.W_in + self.b_in)))
        if self.dropout is not None:
            post = self.dropout(post)
        return post @ self.W_out + self.b_out


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
        out = x @ self.W_U
        return out if self.b_U is None else out + self.b_U


class Transformer(ProbeModel):
    """Token vocabulary: symbols ``0..n-1``, then ``=`` (index n) if used, then the op token if used
    (n+1, or n without ``=``)."""

    def __init__(self, cfg: TransformerConfig, n_symbols: int, n_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
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
