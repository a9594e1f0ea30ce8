"""The transformer's input, attention, readout and dropout options (``model.eq_token``, ``positional``,
``causal``, ``readout``, ``dropout_at``, ``ln_final``): the defaults are the model as it was, bit for bit
and in every stored config; each option does what it says; together with ``layernorm``, ``init=pytorch``
they are torch's ``nn.TransformerEncoderLayer`` stack read by a linear layer over both positions (Liu et
al. 2022's transformer); and every variant keeps the model contract (tests/probe/test_model_contracts.py)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from probe.config import TransformerConfig
from probe.errors import ProbeError
from probe.models import build_model
from probe.tasks import make_task
from probe.train.config import load_config

SMALL = {"p": "13", "model.d_model": "32", "model.d_mlp": "64"}
#: the options at their defaults, set explicitly
DEFAULTS = {"model.eq_token": "true", "model.positional": "learned", "model.causal": "true", "model.readout": "last",
            "model.dropout_at": "embed", "model.ln_final": "true"}
NEW_KEYS = {k.split(".")[1] for k in DEFAULTS}
#: Liu et al. 2022's transformer (grokking-squared, prototype branch, phasegrok/models.py): the two
#: operands, no positions, no mask, both positions read, dropout in the MLP, no final LayerNorm
LIU = {"model.eq_token": "false", "model.positional": "none", "model.causal": "false", "model.readout": "concat",
       "model.dropout_at": "mlp", "model.ln_final": "false", "model.layernorm": "true", "model.init": "pytorch",
       "model.n_layers": "2", "model.n_heads": "1"}


def _build(preset: str = "nanda-modadd", seed: int = 0, **over: str):
    cfg = load_config(preset, overrides={**SMALL, **over})
    task = make_task(cfg.task, p=13)
    torch.manual_seed(seed)
    return build_model(cfg.model, task), task, cfg


def _inputs(model, task, n: int | None = None) -> torch.Tensor:
    pairs = torch.as_tensor(task.inputs if n is None else task.inputs[:n])
    return model.model_inputs(pairs)


# ----------------------------------------------------------------------------------------------------
# the defaults are the model as it was


#: the default models' answers on every pair (torch.manual_seed(0); SMALL) before these options existed:
#: sum, sum of absolute values, first and last logit
BEFORE = {"nanda-modadd": (711.0163671703776, 1040.5091793331085, -1.0892459154129028, 0.33058688044548035),
          "lee-grokfast": (275.86205082398374, 910.4673704019515, 0.3868582844734192, 1.034843921661377)}


@pytest.mark.parametrize("preset", sorted(BEFORE))
def test_the_default_model_answers_as_before(preset):
    model, task, _ = _build(preset)
    with torch.no_grad():
        a = model.answer(_inputs(model, task)).double()
    got = (float(a.sum()), float(a.abs().sum()), float(a[0, 0]), float(a[-1, -1]))
    assert got == pytest.approx(BEFORE[preset], rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("preset", ["nanda-modadd", "lee-grokfast"])
@pytest.mark.parametrize("extra", [{}, {"model.dropout": "0.1", "model.n_layers": "2", "model.layernorm": "true",
                                        "model.op_token": "true"}])
def test_explicit_defaults_build_the_same_model_bit_for_bit(preset, extra):
    """Weights, every activation, the outputs, and the dropout masks drawn in training mode are the same
    with the options left alone and set to their defaults."""
    model, task, cfg = _build(preset, **extra)
    explicit, _, ecfg = _build(preset, **extra, **DEFAULTS)
    assert ecfg == cfg and ecfg.to_dict() == cfg.to_dict()
    a, b = dict(model.named_parameters()), dict(explicit.named_parameters())
    assert list(a) == list(b) and all(torch.equal(a[n], b[n]) for n in a)
    assert set(model.hook_dict) == set(explicit.hook_dict)
    x = _inputs(model, task)
    model.eval()
    explicit.eval()
    with torch.no_grad():
        (out, cache), (eout, ecache) = model.run_with_cache(x), explicit.run_with_cache(x)
        assert torch.equal(out, eout) and all(torch.equal(cache[k], ecache[k]) for k in cache.keys())
        assert torch.equal(model.answer(x), explicit.answer(x))
        model.train()
        explicit.train()
        torch.manual_seed(1)
        one = model.answer(x)
        torch.manual_seed(1)
        assert torch.equal(one, explicit.answer(x))


def test_configs_leaving_the_options_alone_store_none_of_them():
    from probe.train.config import PRESETS, preset_config

    for preset in PRESETS:
        if preset_config(preset).model.kind == "transformer":
            chosen = set(PRESETS[preset]["model"])  # a preset stores the options it sets, and no others
            assert not (NEW_KEYS - chosen) & set(load_config(preset).to_dict()["model"]), preset
    cfg = load_config("nanda-modadd", overrides=LIU)
    stored = cfg.to_dict()["model"]
    assert {k: stored[k] for k in NEW_KEYS} == {"eq_token": False, "positional": "none", "causal": False,
                                                 "readout": "concat", "dropout_at": "mlp", "ln_final": False}
    assert type(cfg).from_dict(cfg.to_dict()) == cfg


# ----------------------------------------------------------------------------------------------------
# each option


def test_eq_token_false_gives_the_operands_alone():
    model, task, cfg = _build(**{"model.eq_token": "false"})
    x = _inputs(model, task, 5)
    assert cfg.model.n_ctx == 2 and cfg.model.operand_positions == (0, 1)
    assert torch.equal(x, torch.as_tensor(task.inputs[:5])) and model.d_vocab == 13 and model.eq_token is None
    assert dict(model.named_parameters())["embed.W_E"].shape == (13, 32)
    assert model.answer(x).shape == (5, 13)
    op, task, cfg = _build(**{"model.eq_token": "false", "model.op_token": "true"})
    x = _inputs(op, task, 5)
    assert cfg.model.n_ctx == 3 and cfg.model.operand_positions == (0, 2) and op.op_token == 13 == op.d_vocab - 1
    assert torch.equal(x[:, 1], torch.full((5,), 13)) and torch.equal(x[:, [0, 2]], torch.as_tensor(task.inputs[:5]))


def test_no_positional_embeddings():
    model, task, _ = _build(**{"model.positional": "none", "model.init": "pytorch"})
    assert "pos_embed.W_pos" not in dict(model.named_parameters()) and "hook_pos_embed" not in model.hook_dict
    x = _inputs(model, task, 5)
    _, cache = model.run_with_cache(x)
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], cache["hook_embed"], rtol=0, atol=0)


def test_no_causal_mask():
    model, task, _ = _build(**{"model.causal": "false"})
    x = _inputs(model, task, 5)
    _, cache = model.run_with_cache(x)
    pattern = cache["blocks.0.attn.hook_pattern"]  # [B, h, q, k]
    assert torch.isfinite(cache["blocks.0.attn.hook_attn_scores"]).all()
    assert (pattern.triu(1) > 0).any() and (pattern > 0).all()
    masked, _, _ = _build()
    _, cache = masked.run_with_cache(x)
    assert not cache["blocks.0.attn.hook_pattern"].triu(1).any()


def test_concatenated_readout():
    model, task, cfg = _build(**{"model.readout": "concat", "model.eq_token": "false"})
    params = dict(model.named_parameters())
    assert params["unembed.W_U"].shape == (64, 13) and cfg.model.neuron_readout is None
    x = _inputs(model, task, 7)
    logits, cache = model.run_with_cache(x)
    assert logits.shape == (7, 1, 13)
    resid = cache["blocks.0.hook_resid_post"]  # no layernorm: the final stream is read as it is
    expected = torch.cat([resid[:, 0], resid[:, 1]], dim=1) @ params["unembed.W_U"] + params["unembed.b_U"]
    torch.testing.assert_close(model.answer(x), expected)
    torch.testing.assert_close(model.answer(x, last_only=False), expected)
    three, task, _ = _build(**{"model.readout": "concat"})
    assert dict(three.named_parameters())["unembed.W_U"].shape == (96, 13)  # [a, b, =]: three positions
    assert three.answer(_inputs(three, task, 3)).shape == (3, 13)


def test_dropout_in_the_mlp_instead_of_the_embeddings():
    x = None
    for where, embed_dropped, mlp_dropped in (("embed", True, False), ("mlp", False, True)):
        model, task, _ = _build(**{"model.dropout": "0.5", "model.dropout_at": where})
        x = _inputs(model, task, 9) if x is None else x
        h = torch.randn(9, 3, 32)
        model.eval()
        with torch.no_grad():
            resid, mlp = model._residual(x), model.blocks[0].mlp(h)
        model.train()
        torch.manual_seed(3)
        with torch.no_grad():
            t_resid, t_mlp = model._residual(x), model.blocks[0].mlp(h)
            _, cache = model.run_with_cache(x)
        assert (not torch.equal(resid, t_resid)) == embed_dropped, where
        assert (not torch.equal(mlp, t_mlp)) == mlp_dropped, where
        # hook_post sees the activations themselves, before any dropout
        assert torch.equal(cache["blocks.0.mlp.hook_post"], torch.relu(cache["blocks.0.mlp.hook_pre"]))


@pytest.mark.parametrize("over", [{"model.causal": "false"}, {"model.eq_token": "false", "model.positional": "none"},
                                  {"model.readout": "concat"}, {**LIU, "model.n_layers": "1"}, LIU])
def test_last_position_fast_path_matches_the_full_forward(over):
    model, task, _ = _build(**over)
    x = _inputs(model, task)
    torch.testing.assert_close(model.answer(x, last_only=True), model.answer(x, last_only=False), rtol=1e-5, atol=1e-5)


def test_refused_combinations_and_values():
    with pytest.raises(ProbeError, match=r"model.ln_final=False: removes the final LayerNorm and needs "
                                         r"model.layernorm=true"):
        load_config("nanda-modadd", overrides={"model.ln_final": "false"})
    for key, bad in (("positional", "sinusoidal"), ("readout", "mean"), ("dropout_at", "attn")):
        with pytest.raises(ProbeError, match=rf"model.{key}='{bad}': \(valid: "):
            load_config("nanda-modadd", overrides={f"model.{key}": bad})
    with pytest.raises(ProbeError, match="model.causal"):
        load_config("nanda-modadd", overrides={"model.causal": "sometimes"})
    assert TransformerConfig(layernorm=True, ln_final=False).n_ctx == 3


# ----------------------------------------------------------------------------------------------------
# together: torch's encoder layers, as Liu et al. build them


def _torch_reference(model, d: int, heads: int, d_mlp: int, n_classes: int) -> nn.Module:
    """torch's own modules holding probe's weights: embedding, two nn.TransformerEncoderLayer (pre-LN,
    ReLU, batch-first, no mask), the two positions' outputs flattened into one nn.Linear."""
    layers = [nn.TransformerEncoderLayer(d, heads, dim_feedforward=d_mlp, dropout=0.05, activation="relu",
                                         batch_first=True, norm_first=True) for _ in model.blocks]
    emb = nn.Embedding(model.d_vocab, d)
    head = nn.Linear(2 * d, n_classes)
    with torch.no_grad():
        emb.weight.copy_(model.embed.W_E)
        for layer, block in zip(layers, model.blocks):
            a, m = block.attn, block.mlp
            layer.self_attn.in_proj_weight.copy_(torch.cat([
                w.permute(0, 2, 1).reshape(-1, d) for w in (a.W_Q, a.W_K, a.W_V)]))
            layer.self_attn.in_proj_bias.copy_(torch.cat([b.reshape(-1) for b in (a.b_Q, a.b_K, a.b_V)]))
            layer.self_attn.out_proj.weight.copy_(a.W_O.reshape(-1, d).T)
            layer.self_attn.out_proj.bias.copy_(a.b_O)
            layer.linear1.weight.copy_(m.W_in.T)
            layer.linear1.bias.copy_(m.b_in)
            layer.linear2.weight.copy_(m.W_out.T)
            layer.linear2.bias.copy_(m.b_out)
            for norm, ln in ((layer.norm1, block.ln1), (layer.norm2, block.ln2)):
                norm.weight.copy_(ln.w)
                norm.bias.copy_(ln.b)
        head.weight.copy_(model.unembed.W_U.T)
        head.bias.copy_(model.unembed.b_U)
    return nn.Sequential(emb, *layers, nn.Flatten(1), head).eval()


@pytest.mark.parametrize("heads", [1, 2])
def test_the_options_express_torchs_encoder_layers_read_by_one_linear_layer(heads):
    model, task, cfg = _build(**{**LIU, "model.n_heads": str(heads), "model.dropout": "0.05"})
    assert cfg.model.n_ctx == 2 and model.d_vocab == task.n_symbols == 13
    names = set(dict(model.named_parameters()))
    assert "pos_embed.W_pos" not in names and "ln_final.w" not in names
    reference = _torch_reference(model, 32, heads, 64, task.n_classes)
    x = _inputs(model, task)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.answer(x), reference(x), rtol=1e-5, atol=1e-5)


def test_the_authors_initial_weights():
    """init pytorch under the options: N(0, 1) embeddings of the p symbols only and a head of fan-in 2 d."""
    cfg = load_config("nanda-modadd", overrides={**LIU, "p": "59", "model.d_model": "256", "model.d_mlp": "128"})
    torch.manual_seed(0)
    params = {n: p.detach() for n, p in build_model(cfg.model, make_task("add", p=59)).named_parameters()}
    assert params["embed.W_E"].shape == (59, 256) and abs(float(params["embed.W_E"].std()) - 1.0) < 0.02
    bound = 1 / math.sqrt(512)
    for name in ("unembed.W_U", "unembed.b_U"):
        assert params[name].abs().max() <= bound and params[name].abs().max() > 0.9 * bound, name
    assert params["unembed.W_U"].shape == (512, 59)


# ----------------------------------------------------------------------------------------------------
# every variant keeps the model contract


def _contracts():
    """The model contract battery's module, loaded from its file (its one check, reused on variants)."""
    path = Path(__file__).with_name("test_model_contracts.py")
    spec = importlib.util.spec_from_file_location("_model_contracts", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("over", [LIU, {**LIU, "model.readout": "last"}, {**LIU, "model.op_token": "true"},
                                  {"model.eq_token": "false", "model.op_token": "true"},
                                  {"model.positional": "none", "model.causal": "false"}, {"model.dropout_at": "mlp"}])
def test_every_variant_keeps_the_model_contract(over, monkeypatch):
    contracts = _contracts()
    _, task, cfg = _build(**over)
    monkeypatch.setattr(contracts, "_config_and_task", lambda kind, preset: (cfg.model, task))
    contracts.test_declared_names_exist_in_the_built_model("transformer", None)


def test_a_run_with_the_options_trains_and_reads_back(tmp_path):
    from probe.run import load_run
    from probe.train.loop import train

    cfg = load_config("nanda-modadd", overrides={**SMALL, **LIU, "steps": "6", "model.dropout": "0.05",
                                                 "checkpoint.every": "3", "checkpoint.metrics_every": "3"})
    train(cfg, tmp_path / "run", progress=False)
    with load_run(tmp_path / "run") as run:
        assert run.config == cfg and list(run.steps) == [0, 3, 6]
        model = run.checkpoint("last").model()
        x = model.model_inputs(torch.as_tensor(run.task.inputs[:4]))
        assert x.shape == (4, 2) and model.answer(x).shape == (4, 13)


def test_last_position_patching_refuses_a_concat_readout():
    """excluded_loss and restricted_loss patch the last position's neurons; a concat readout's logits
    read every position, so both refuse such a run in words instead of giving a partial intervention."""
    from probe.analyses.applies import last_position_readout
    from probe.config import TrainConfig

    base = {"task": "add", "p": 7, "model": {"kind": "transformer", "d_model": 8, "n_heads": 1, "d_mlp": 8}}
    assert last_position_readout(TrainConfig.from_dict(base)) is None
    concat = TrainConfig.from_dict({**base, "model": {**base["model"], "readout": "concat"}})
    assert "model.readout concat" in last_position_readout(concat)
    from probe import analyses

    for name in ("excluded_loss", "restricted_loss"):
        assert analyses.get_metric(name).applies_config is last_position_readout
