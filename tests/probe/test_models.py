import pytest
import torch
from transformer_lens import HookedRootModule

from probe.models import build_model
from probe.tasks import make_task
from probe.train.config import load_config

TL_HOOKS = ["hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_q", "blocks.0.attn.hook_k",
            "blocks.0.attn.hook_v", "blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern",
            "blocks.0.attn.hook_z", "blocks.0.hook_attn_out", "blocks.0.hook_resid_mid", "blocks.0.mlp.hook_pre",
            "blocks.0.mlp.hook_post", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post"]
TL_PARAMS = ["embed.W_E", "pos_embed.W_pos", "blocks.0.attn.W_Q", "blocks.0.attn.W_K", "blocks.0.attn.W_V",
             "blocks.0.attn.W_O", "blocks.0.mlp.W_in", "blocks.0.mlp.W_out", "unembed.W_U"]


def _transformer(**over):
    cfg = load_config("nanda-modadd", overrides={"p": "13", "model.d_model": "32", "model.d_mlp": "64", **over})
    task = make_task("add", p=13)
    torch.manual_seed(0)
    return build_model(cfg.model, task), task


def test_transformer_has_transformerlens_names_and_shapes():
    model, task = _transformer()
    assert isinstance(model, HookedRootModule)
    assert set(TL_HOOKS) <= set(model.hook_dict)
    params = dict(model.named_parameters())
    assert set(TL_PARAMS) <= set(params)
    assert params["embed.W_E"].shape == (14, 32)  # 13 symbols + '='
    assert params["blocks.0.attn.W_Q"].shape == (4, 32, 8)
    assert params["blocks.0.attn.W_O"].shape == (4, 8, 32)
    assert params["unembed.W_U"].shape == (32, 13)


def test_run_with_cache_and_hooks():
    model, task = _transformer()
    x = model.model_inputs(torch.as_tensor(task.inputs[:7]))
    assert x.shape == (7, 3) and torch.all(x[:, 2] == 13)
    logits, cache = model.run_with_cache(x)
    assert logits.shape == (7, 3, 13)
    assert cache["blocks.0.mlp.hook_post"].shape == (7, 3, 64)
    assert cache["blocks.0.attn.hook_pattern"].shape == (7, 4, 3, 3)
    zero = lambda act, hook: torch.zeros_like(act)  # noqa: E731
    ablated = model.run_with_hooks(x, fwd_hooks=[("blocks.0.hook_mlp_out", zero)])
    assert not torch.allclose(ablated, logits)


@pytest.mark.parametrize("over", [{}, {"model.n_layers": "2", "model.layernorm": "true"}, {"model.op_token": "true"}])
def test_last_position_fast_path_matches_full_forward(over):
    model, task = _transformer(**over)
    x = model.model_inputs(torch.as_tensor(task.inputs))
    full = model.answer(x, last_only=False)
    fast = model.answer(x, last_only=True)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


def test_causal_mask():
    model, task = _transformer()
    x = model.model_inputs(torch.as_tensor(task.inputs[:5]))
    _, cache = model.run_with_cache(x)
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert torch.all(pattern[:, :, 0, 1:] == 0) and torch.all(pattern[:, :, 1, 2] == 0)


def test_toy_model_sum_and_matrix():
    cfg = load_config("liu-toy-add").model
    task = make_task("nonmod-add", p=10)
    model = build_model(cfg, task)
    assert model.embed.W_E.shape == (10, 1)
    assert model.embed.W_E.abs().max() <= 0.5  # U(-s/2, s/2), s = 1
    x = torch.as_tensor(task.inputs)
    _, cache = model.run_with_cache(x)
    torch.testing.assert_close(cache["hook_agg"], model.embed.W_E[x[:, 0]] + model.embed.W_E[x[:, 1]])
    assert model.targets.shape == (19, 30)
    s3 = load_config("liu-toy-s3")
    m3 = build_model(s3.model, make_task("perm", n=3))
    assert m3.embed.W_E.shape == (6, 3, 3)
    pairs = torch.tensor([[1, 2]])
    _, cache = m3.run_with_cache(pairs)
    torch.testing.assert_close(cache["hook_agg"][0], (m3.embed.W_E[1] @ m3.embed.W_E[2]).flatten())


def test_regression_prediction_is_nearest_target():
    model = build_model(load_config("liu-toy-add").model, make_task("nonmod-add", p=10))
    out = model.targets[[3, 7]] + 0.01
    assert model.predict(out).tolist() == [3, 7]


def test_cross_entropy_is_float64():
    model, task = _transformer()
    x = model.model_inputs(torch.as_tensor(task.inputs[:4]))
    assert model.loss(model.answer(x), torch.as_tensor(task.labels[:4])).dtype == torch.float64


def test_mlp_and_digits_models():
    mlp = build_model(load_config("kitouni-mlp").model, make_task("add", p=53))
    assert mlp.answer(torch.tensor([[1, 2]])).shape == (1, 53)
    digits_task = make_task("digits")
    torch.manual_seed(0)
    big = build_model(load_config("omnigrok-digits").model, digits_task)
    torch.manual_seed(0)
    small = build_model(load_config("omnigrok-digits", overrides={"model.init_alpha": "1"}).model, digits_task)
    torch.testing.assert_close(big.decoder[0].W, 8 * small.decoder[0].W)
    assert big.embed_param is None


@pytest.mark.parametrize("bias", [True, False])
def test_one_hot_mlp_is_the_product_with_the_one_hot_input(bias):
    """Prieto et al.'s MLP (model.input onehot): the first layer's two-row sum equals the product with
    the concatenated one-hot vectors exactly, bias=False leaves no bias parameter, a hook that replaces
    the input is honoured, and the stacked (batched) pass gives the same outputs."""
    over = {"p": "11", "n_train": "null", "model.hidden": "[16, 8]", "model.bias": str(bias).lower()}
    cfg = load_config("prieto-mlp", overrides=over)
    task = make_task(cfg.task, p=11)
    torch.manual_seed(0)
    mlp = build_model(cfg.model, task)
    params = dict(mlp.named_parameters())
    assert ("decoder.0.b" in params) is bias and ("unembed.b_U" in params) is bias and "embed.W_E" not in params
    x = torch.as_tensor(task.inputs)
    onehot = torch.nn.functional.one_hot(x, 11).flatten(1).float()

    def by_hand(h: torch.Tensor) -> torch.Tensor:
        for layer in mlp.decoder:
            h = torch.relu(layer.add_bias(h @ layer.W))
        return mlp.unembed.add_bias(h @ mlp.unembed.W_U)

    with torch.no_grad():
        assert torch.equal(mlp(x), by_hand(onehot))
        halved = mlp.run_with_hooks(x, fwd_hooks=[("hook_agg", lambda t, hook: t / 2)])
        assert torch.equal(halved, by_hand(onehot / 2))
        stacked = {k: torch.stack([v, 2 * v]) for k, v in params.items()}
        out = mlp.stacked(stacked, x)["answer"]
        torch.testing.assert_close(out[0], mlp(x))
    assert mlp.answer(torch.tensor([[1, 2]])).shape == (1, 11)


def _lee(**over):
    """The lee-grokfast model (Lee et al. 2024's block, torch's initialisation, no head bias), small."""
    cfg = load_config("lee-grokfast", overrides={"p": "13", "model.d_model": "32", "model.d_mlp": "64", **over})
    task = make_task(cfg.task, p=13)
    torch.manual_seed(0)
    return build_model(cfg.model, task), task


def test_the_new_model_options_default_to_the_model_as_it_was():
    """block pre_ln, init nanda and a head bias are the defaults: set explicitly they build the very same
    weights and outputs, and a config leaving them alone stores none of them (its stored config, and a
    sweep grid hashed from it, is what it was before they existed)."""
    model, task = _transformer()
    explicit, _ = _transformer(**{"model.block": "pre_ln", "model.init": "nanda", "model.head_bias": "true"})
    for (name, a), (_, b) in zip(model.named_parameters(), explicit.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    assert "unembed.b_U" in dict(model.named_parameters())
    cfg = load_config("nanda-modadd")
    assert not {"block", "init", "head_bias"} & set(cfg.to_dict()["model"]) and "batching" not in cfg.to_dict()
    stored = load_config("lee-grokfast").to_dict()
    assert (stored["model"]["block"], stored["model"]["init"], stored["model"]["head_bias"], stored["batching"]) == (
        "ln_replaces_residual", "pytorch", False, "epochs")


def test_ln_replaces_residual_block():
    """Lee et al.'s block: x = ln_1(x); x = x + attn(x); x = x + mlp(ln_2(x)); pre_ln keeps x."""
    model, task = _lee()
    x = model.model_inputs(torch.as_tensor(task.inputs[:9]))
    _, cache = model.run_with_cache(x)
    for layer in (0, 1):
        normed = model.blocks[layer].ln1(cache[f"blocks.{layer}.hook_resid_pre"])
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_mid"], normed + cache[f"blocks.{layer}.hook_attn_out"])
    pre, _ = _lee(**{"model.block": "pre_ln"})
    _, cache = pre.run_with_cache(x)
    torch.testing.assert_close(cache["blocks.0.hook_resid_mid"],
                               cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"])
    full, fast = model.answer(x, last_only=False), model.answer(x, last_only=True)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


def test_pytorch_initialisation_and_a_head_without_bias():
    """torch's module defaults: nn.Embedding N(0, 1); nn.MultiheadAttention's Xavier-uniform in-projection
    [3d, d] and zero biases; nn.Linear's U(+-1/sqrt(fan_in)) weights and biases (b_O zeroed, as theirs)."""
    cfg = load_config("lee-grokfast", overrides={"p": "97"})
    torch.manual_seed(0)
    model = build_model(cfg.model, make_task(cfg.task, p=97))
    params = {name: p.detach() for name, p in model.named_parameters()}
    assert "unembed.b_U" not in params and params["unembed.W_U"].shape == (128, 97)
    assert params["embed.W_E"].shape == (99, 128) and params["pos_embed.W_pos"].shape == (4, 128)
    for name in ("embed.W_E", "pos_embed.W_pos"):
        assert abs(float(params[name].std()) - 1.0) < 0.05, name
    d = 128
    for name, bound in (("blocks.1.attn.W_Q", (6 / (4 * d)) ** 0.5), ("blocks.1.attn.W_O", d ** -0.5),
                        ("blocks.1.mlp.W_in", d ** -0.5), ("blocks.1.mlp.b_in", d ** -0.5),
                        ("blocks.1.mlp.W_out", 512 ** -0.5), ("blocks.1.mlp.b_out", 512 ** -0.5),
                        ("unembed.W_U", d ** -0.5)):
        w = params[name]
        assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.95 * bound, name
        assert abs(float(w.std()) - bound / 3 ** 0.5) < 0.05 * bound, name  # the std of U(-b, b)
    for name in ("blocks.0.attn.b_Q", "blocks.0.attn.b_K", "blocks.0.attn.b_V", "blocks.0.attn.b_O"):
        assert not params[name].any(), name
    assert torch.equal(params["ln_final.w"], torch.ones(d)) and not params["ln_final.b"].any()
    x = model.model_inputs(torch.as_tensor(make_task(cfg.task, p=97).inputs[:5]))
    assert model.answer(x).shape == (5, 97)
