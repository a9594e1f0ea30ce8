"""Embedding-plus-decoder models: Liu et al.'s toy model, the concatenating MLP, the digits MLP.

Parameter names: ``embed.W_E``; decoder layers ``decoder.{l}.W`` / ``decoder.{l}.b``; output layer
``unembed.W_U`` / ``unembed.b_U``. Hooks: ``hook_embed`` (the two embeddings, [N, 2, ...]),
``hook_agg`` (the decoder input), ``decoder.{l}.hook_pre`` / ``hook_post``, ``hook_out``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from probe.config import DigitsConfig, MLPConfig, ToyConfig
from probe.models.base import ACTIVATIONS, ANSWER, Linear, ProbeModel, mm

if TYPE_CHECKING:
    from probe.tasks import Task


class DecoderLayer(Linear):
    def __init__(self, d_in: int, d_out: int, act: str, bias: bool = True) -> None:
        super().__init__(d_in, d_out, bias=bias)
        self.act = ACTIVATIONS[act]
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The layer from its pre-activation on (``pre`` = input @ W + b)."""
        return self.hook_post(self.act(self.hook_pre(pre)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(super().forward(x))


class Unembed(Linear):
    def __init__(self, d_in: int, d_out: int, bias: bool = True) -> None:
        super().__init__(d_in, d_out, "W_U", "b_U", bias=bias)


def _plus(h: torch.Tensor, p: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    """``h`` plus the stacked bias ``name`` (``[k, d]``) where the model has one."""
    return h + p[name][:, None] if name in p else h


class _DecoderModel(ProbeModel):
    def _build_decoder(self, d_in: int, widths: tuple[int, ...], act: str, d_out: int, bias: bool = True) -> None:
        dims = (d_in, *widths)
        self.decoder = nn.ModuleList([DecoderLayer(a, b, act, bias) for a, b in zip(dims[:-1], dims[1:])])
        self.unembed = Unembed(dims[-1], d_out, bias)
        self.hook_agg = HookPoint()
        self.hook_out = HookPoint()

    def _decode(self, agg: torch.Tensor) -> torch.Tensor:
        h = self.hook_agg(agg)
        for layer in self.decoder:
            h = layer(h)
        return self.hook_out(self.unembed(h))

    def answer(self, x: torch.Tensor, last_only: bool = True) -> torch.Tensor:
        return self.forward(x)

    # batched passes over stacked checkpoints ------------------------------------------------------
    def _aggregate(self, e: torch.Tensor) -> torch.Tensor:
        """The decoder's input for every stacked checkpoint, ``[k, N, d_in]``, from what ``hook_embed``
        sees (``[k, N, 2, ...]``)."""
        raise NotImplementedError

    def _stacked_input(self, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The decoder's input for a model without embeddings (the features)."""
        raise NotImplementedError

    def _stacked_first(self, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor | None:
        """The first decoder layer's pre-activation for every stacked checkpoint when the model has a
        faster form of it than the product with its input (None: the product)."""
        return None

    def stacked(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, collect: Sequence[str] = (ANSWER,),
                replace: Mapping[str, torch.Tensor] | None = None, path: str = ANSWER) -> dict[str, torch.Tensor]:
        """:meth:`ProbeModel.stacked` as batched matrix products: the decoder's layers, any of their
        ``hook_post`` collected or replaced, and the outputs (other hooks: the generic form)."""
        swaps = dict(replace or {})
        posts = {f"decoder.{i}.hook_post" for i in range(len(self.decoder))}
        embeds = {"hook_embed"} if self.embed_param is not None else set()
        if not set(collect) <= posts | embeds | {ANSWER} or not set(swaps) <= posts | embeds:
            return super().stacked(params, x, collect, replace, path)
        p = dict(params)
        result: dict[str, torch.Tensor] = {}
        if embeds:
            e = swaps.get("hook_embed", p["embed.W_E"][:, x] if "embed.W_E" in p else None)
            if "hook_embed" in collect:
                result["hook_embed"] = e
            h = self._aggregate(e)
            first = None
        else:
            first = self._stacked_first(p, x)
            h = self._stacked_input(p, x) if first is None else first
        for i, layer in enumerate(self.decoder):
            pre = first if i == 0 and first is not None else _plus(mm(h, p[f"decoder.{i}.W"]), p, f"decoder.{i}.b")
            h = layer.act(pre)
            name = f"decoder.{i}.hook_post"
            if name in swaps:
                h = swaps[name].to(h.dtype)
            if name in collect:
                result[name] = h
        if ANSWER in collect:
            result[ANSWER] = _plus(mm(h, p["unembed.W_U"]), p, "unembed.b_U")
        return result

    def answer_map(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """``W_U``: the outputs are affine in the last decoder layer's activations."""
        return params["unembed.W_U"] if self.cfg.neuron_hook is not None else None


class ToyModel(_DecoderModel):
    """Liu et al. (2022) Sec. 2: ``(a, b) -> Dec(E_a + E_b)``; App. H: ``Dec(E_a E_b)`` for matrices.

    Embeddings are initialised ``U(-s/2, s/2)`` (App. G). For ``mse_targets`` the buffer ``targets``
    holds one fixed random vector per class and predictions decode to the nearest one.
    """

    def __init__(self, cfg: ToyConfig, n_symbols: int, n_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.objective = cfg.objective
        d = cfg.d_embed
        shape = (n_symbols, d, d) if cfg.aggregation == "matrix" else (n_symbols, d)
        self.embed = nn.Module()
        self.embed.W_E = nn.Parameter(torch.empty(shape).uniform_(-cfg.init_scale / 2, cfg.init_scale / 2))
        self.hook_embed = HookPoint()
        d_agg = d * d if cfg.aggregation == "matrix" else d
        d_out = cfg.d_out if cfg.objective == "mse_targets" else n_classes
        self._build_decoder(d_agg, cfg.decoder, cfg.act, d_out)
        if cfg.objective == "mse_targets":
            self.register_buffer("targets", torch.randn(n_classes, cfg.d_out))
        self.setup()

    def _aggregate(self, e: torch.Tensor) -> torch.Tensor:
        """The decoder's input from what ``hook_embed`` sees, ``[k, N, 2, d]`` or ``[k, N, 2, d, d]``."""
        if self.cfg.aggregation == "matrix":
            return mm(e[:, :, 0], e[:, :, 1]).flatten(2)
        return e[:, :, 0] + e[:, :, 1]

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        e = self.hook_embed(self.embed.W_E[pairs])  # [N, 2, d] or [N, 2, d, d]
        if self.cfg.aggregation == "matrix":
            agg = (e[:, 0] @ e[:, 1]).flatten(1)
        else:
            agg = e[:, 0] + e[:, 1]
        return self._decode(agg)


    @torch.no_grad()
    def init_like_grokking_squared(self, seed: int, targets: "torch.Tensor | None", notebook: bool = False) -> None:
        """Re-draw the initial weights as Liu et al.'s ``toy/train_add.py`` does after
        ``torch.manual_seed(seed)``: the embeddings ``(torch.rand(p, d) - 1/2) * init_scale``, then one
        ``nn.Linear`` per decoder layer and the output layer, in order (their ``[out, in]`` weights
        are probe's ``W`` transposed); ``targets`` (their numpy-drawn ``y_templates``) replace the
        regression targets. ``notebook``: as ``phase_diagram_plot/phase_diagram.ipynb`` does instead:
        first its unused encoder ``NET(p, d, w=200)`` (``nn.Linear`` (p, 200), (200, 200), (200, d)),
        then the decoder's layers, then the embeddings."""
        torch.manual_seed(seed)
        n, d = self.embed.W_E.shape[:2]

        def embeddings() -> None:
            self.embed.W_E.copy_((torch.rand(n, d) - 1 / 2) * self.cfg.init_scale)

        if notebook:
            for a, b in ((n, 200), (200, 200), (200, d)):
                nn.Linear(a, b)
        else:
            embeddings()
        for layer in (*self.decoder, self.unembed):
            w = getattr(layer, layer.w_name)
            ref = nn.Linear(w.shape[0], w.shape[1])
            w.copy_(ref.weight.T)
            getattr(layer, layer.b_name).copy_(ref.bias)
        if notebook:
            embeddings()
        if targets is not None and self.objective == "mse_targets":
            self.targets.copy_(targets)


class ConcatMLP(_DecoderModel):
    """Two learned embeddings concatenated and sent through an MLP (Kitouni; Gromov 2023); with
    ``input: onehot`` the operands' one-hot vectors concatenated instead (Prieto et al. 2025), where
    ``hook_agg`` sees the ``[N, 2 n]`` one-hot input and the first layer's product with it is computed
    as the sum of the two rows it selects (the same numbers: every other term is an exact zero)."""

    def __init__(self, cfg: MLPConfig, n_symbols: int, n_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.objective = cfg.objective
        self.n_symbols = n_symbols
        self.onehot = cfg.input == "onehot"
        if not self.onehot:
            self.embed = nn.Module()
            self.embed.W_E = nn.Parameter(torch.randn(n_symbols, cfg.d_embed))
            self.hook_embed = HookPoint()
        self._build_decoder(2 * (n_symbols if self.onehot else cfg.d_embed), cfg.hidden, cfg.act, n_classes,
                            cfg.bias)
        self.setup()

    def _aggregate(self, e: torch.Tensor) -> torch.Tensor:
        return e.flatten(2)

    def _one_hot(self, pairs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return nn.functional.one_hot(pairs, self.n_symbols).flatten(-2).to(dtype)  # [..., 2 n]

    def _rows(self, w: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """``onehot(pairs) @ w`` for ``w`` [..., 2 n, d]: row a plus row n + b."""
        return w[..., pairs[:, 0], :] + w[..., self.n_symbols + pairs[:, 1], :]

    def _stacked_input(self, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        k = p["unembed.W_U"].shape[0]
        return self._one_hot(x, p["unembed.W_U"].dtype).expand(k, x.shape[0], -1)

    def _stacked_first(self, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor | None:
        if not self.decoder:
            return None
        return _plus(self._rows(p["decoder.0.W"], x), p, "decoder.0.b")

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        if not self.onehot:
            e = self.hook_embed(self.embed.W_E[pairs])  # [N, 2, d]
            return self._decode(e.flatten(1))
        if not self.decoder:
            return self._decode(self._one_hot(pairs, self.unembed.W_U.dtype))
        first = self.decoder[0]
        x = self._one_hot(pairs, first.W.dtype)
        agg = self.hook_agg(x)
        pre = first.add_bias(self._rows(first.W, pairs) if agg is x else agg @ first.W)  # a hook may replace it
        h = first.activate(pre)
        for layer in self.decoder[1:]:
            h = layer(h)
        return self.hook_out(self.unembed(h))


class DigitsMLP(_DecoderModel):
    """Omnigrok / Liu et al. App. J: depth-``depth`` ReLU MLP, default init scaled by ``init_alpha``."""

    @classmethod
    def for_task(cls, cfg: DigitsConfig, task: "Task") -> "DigitsMLP":  # type: ignore[override]
        return cls(cfg, task.inputs.shape[1], task.n_classes)

    def __init__(self, cfg: DigitsConfig, n_features: int, n_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.objective = cfg.objective
        self._build_decoder(n_features, (cfg.width,) * (cfg.depth - 1), cfg.act, n_classes)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.endswith(".W") or name.endswith(".W_U"):
                    param.mul_(cfg.init_alpha)
        self.setup()

    def _stacked_input(self, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        k = p["unembed.W_U"].shape[0]
        return x.to(p["unembed.W_U"].dtype).expand(k, *x.shape)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self._decode(features)
