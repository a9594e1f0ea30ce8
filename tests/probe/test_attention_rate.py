"""Zhong et al. 2023's attention rate (``model.attention_rate``), attention without biases
(``model.attn_bias``) and their initialisation (``model.init=zhong``): the default is ordinary attention
bit for bit; the rate mixes the softmax with constant attention as their ``code/train-main.py`` does;
together with the input, mask and head options the ``zhong-pizza`` / ``zhong-clock`` presets are their
one-layer model, checked against the same arithmetic written out in their parameter layout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probe.errors import ProbeError
from probe.models import build_model
from probe.tasks import make_task
from probe.train.config import load_config

SMALL = {"p": "13", "model.d_model": "32", "model.d_mlp": "64", "model.n_heads": "2"}


def _build(preset: str = "nanda-modadd", seed: int = 0, **over: str):
    cfg = load_config(preset, overrides={**SMALL, **over})
    task = make_task(cfg.task, p=13, ordered=True)
    torch.manual_seed(seed)
    return build_model(cfg.model, task), task, cfg


def _inputs(model, task) -> torch.Tensor:
    return model.model_inputs(torch.as_tensor(task.inputs))


def test_rate_one_is_ordinary_attention_bit_for_bit():
    model, task, cfg = _build()
    explicit, _, ecfg = _build(**{"model.attention_rate": "1", "model.attn_bias": "true"})
    assert ecfg == cfg and "attention_rate" not in cfg.to_dict()["model"]
    x = _inputs(model, task)
    with torch.no_grad():
        assert torch.equal(model(x), explicit(x))


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.75])
@pytest.mark.parametrize("causal", ["true", "false"])
def test_the_pattern_is_the_rate_mix_of_softmax_and_constant_attention(rate, causal):
    """hook_pattern = alpha softmax(QK^T / sqrt(d_head)) + (1 - alpha) on the keys a query sees."""
    model, task, _ = _build(**{"model.attention_rate": str(rate), "model.causal": causal})
    x = _inputs(model, task)
    _, cache = model.run_with_cache(x)
    scores = cache["blocks.0.attn.hook_attn_scores"]
    visible = torch.isfinite(scores)
    expected = rate * scores.softmax(-1) + (1 - rate) * visible
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"], expected)
    if rate == 0.0:
        assert torch.equal(cache["blocks.0.attn.hook_pattern"], visible.to(expected.dtype))
    with torch.no_grad():
        torch.testing.assert_close(model.answer(x, last_only=True), model.answer(x, last_only=False),
                                   rtol=1e-5, atol=1e-5)


def _their_forward(params: dict[str, torch.Tensor], x: torch.Tensor, rate: float) -> torch.Tensor:
    """Zhong et al.'s one-layer forward written out in their layout (W_E [d, vocab], W_Q/K/V
    [heads, d_head, d], W_O [d, heads d_head], W_in [d_mlp, d], W_out [d, d_mlp], W_U [d, vocab]), logits
    at the last position."""
    W_E = params["embed.W_E"].T
    resid = W_E[:, x].permute(1, 2, 0) + params["pos_embed.W_pos"][: x.shape[1]]
    q, k, v = (torch.einsum("ihd,bpd->biph", params[f"blocks.0.attn.W_{n}"].transpose(1, 2), resid)
               for n in "QKV")
    scores = torch.einsum("biph,biqh->biqp", k, q) / math.sqrt(q.shape[-1])
    pattern = scores.softmax(-1) * rate + (1 - rate)
    z = torch.einsum("biph,biqp->biqh", v, pattern)
    z = z.permute(0, 2, 1, 3).reshape(z.shape[0], z.shape[2], -1)
    W_O = params["blocks.0.attn.W_O"].reshape(-1, resid.shape[-1]).T
    resid = resid + torch.einsum("df,bqf->bqd", W_O, z)
    hidden = torch.relu(torch.einsum("md,bpd->bpm", params["blocks.0.mlp.W_in"].T, resid)
                        + params["blocks.0.mlp.b_in"])
    resid = resid + torch.einsum("dm,bpm->bpd", params["blocks.0.mlp.W_out"].T, hidden) + params["blocks.0.mlp.b_out"]
    return (resid @ params["unembed.W_U"])[:, -1]


@pytest.mark.parametrize("preset", ["zhong-pizza", "zhong-clock"])
@pytest.mark.parametrize("rate", [None, "0.4"])
def test_the_presets_are_their_one_layer_model(preset, rate):
    over = {} if rate is None else {"model.attention_rate": rate}
    model, task, cfg = _build(preset, **over)
    assert cfg.model.n_ctx == 2 and model.d_vocab == task.n_classes == 13
    names = set(dict(model.named_parameters()))
    assert not names & {"blocks.0.attn.b_Q", "blocks.0.attn.b_K", "blocks.0.attn.b_V", "blocks.0.attn.b_O",
                        "unembed.b_U", "ln_final.w", "blocks.0.ln1.w"}
    params = {n: p.detach() for n, p in model.named_parameters()}
    pairs = torch.as_tensor(task.inputs)
    with torch.no_grad():
        ours = model.answer(model.model_inputs(pairs))
    torch.testing.assert_close(ours, _their_forward(params, pairs, cfg.model.attention_rate), rtol=1e-5, atol=1e-5)


def test_their_initial_weights():
    """init zhong: Nanda's laws except W_in, N(0, 1/d_mlp) (train-main.py: randn(d_mlp, d) / sqrt(d_mlp))."""
    cfg = load_config("zhong-pizza")
    torch.manual_seed(0)
    params = {n: p.detach() for n, p in build_model(cfg.model, make_task("add", p=59, ordered=True)).named_parameters()}
    stds = {n: float(p.std()) for n, p in params.items() if p.dim() > 1}
    assert stds["blocks.0.mlp.W_in"] == pytest.approx(1 / math.sqrt(512), rel=0.02)
    for name in ("embed.W_E", "blocks.0.attn.W_Q", "blocks.0.mlp.W_out", "pos_embed.W_pos"):
        assert stds[name] == pytest.approx(1 / math.sqrt(128), rel=0.05), name
    assert stds["unembed.W_U"] == pytest.approx(1 / math.sqrt(59), rel=0.05)


@pytest.mark.parametrize("bad", ["1.5", "-0.1", "nan", "inf", "true"])
def test_rates_outside_zero_to_one_are_refused(bad):
    with pytest.raises(ProbeError, match=r"model.attention_rate"):
        load_config("zhong-pizza", overrides={"model.attention_rate": bad})


def test_cli_refuses_a_rate_in_one_line(tmp_path, capsys):
    from probe.cli import main

    assert main(["train", "--preset", "zhong-pizza", "--set", "model.attention_rate=2", "--out",
                 str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.attention_rate" in err[0] and "[0, 1]" in err[0]
    assert not (tmp_path / "r").exists()


def test_a_pizza_run_trains_reads_back_and_shows_its_rate(tmp_path, capsys):
    from probe.cli import main
    from probe.run import load_run

    out = tmp_path / "run"
    assert main(["train", "--preset", "zhong-pizza", "--set", "p=11", "--set", "steps=20", "--set", "model.d_model=16",
          "--set", "model.d_mlp=32", "--set", "checkpoint.schedule=every", "--set", "checkpoint.every=10",
          "--no-progress", "--out", str(out)]) in (0, None)
    with load_run(out) as run:
        assert run.config.model.attention_rate == 0.0 and not run.config.model.attn_bias
        model = run.checkpoint("last").model()
        _, cache = model.run_with_cache(model.model_inputs(torch.as_tensor(run.task.inputs[:5])))
        assert np.all(cache["blocks.0.attn.hook_pattern"].numpy() == 1.0)
    capsys.readouterr()
    main(["info", str(out)])
    info = capsys.readouterr().out
    assert "attention_rate=0.0" in info and "attn_bias=False" in info and "init=zhong" in info
