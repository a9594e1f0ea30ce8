import pytest

from probe.config import TrainConfig, valid_keys
from probe.errors import ProbeError
from probe.train.config import PRESETS, load_config, parse_sets


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_a_valid_config(name):
    cfg = load_config(name)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_reference_numbers():
    nanda = load_config("nanda-modadd")
    assert (nanda.p, nanda.train_fraction, nanda.lr, nanda.weight_decay, nanda.betas) == (113, 0.3, 1e-3, 1.0, (0.9, 0.98))
    assert (nanda.model.n_layers, nanda.model.d_model, nanda.model.n_heads, nanda.model.d_mlp) == (1, 128, 4, 512)
    assert nanda.warmup_steps == 10 and nanda.batch_size is None and not nanda.model.layernorm
    liu = load_config("liu-toy-add")
    assert liu.n_train == 45 and liu.resolved_embed_lr == 1e-3 and liu.lr == 1e-4
    assert load_config("kitouni-mlp").weight_decay == 0.03
    assert load_config("kitouni-mlp-comprehension").weight_decay == 5.0
    assert load_config("liu-toy-s3").model.aggregation == "matrix"


def test_flat_and_dotted_overrides_are_typed():
    cfg = load_config("nanda-modadd", overrides=parse_sets(
        ["lr=0.01", "seed=3", "model.d_model=64", "checkpoint.every=10", "model.layernorm=true", "betas=0.9,0.99"]))
    assert cfg.lr == 0.01 and cfg.seed == 3 and cfg.model.d_model == 64 and cfg.checkpoint.every == 10
    assert cfg.model.layernorm is True and cfg.betas == (0.9, 0.99)
    assert cfg.embed_lr is None
    assert load_config("nanda-modadd", overrides={"batch_size": "none"}).batch_size is None


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ProbeError, match=r"unknown config key 'bogus' \(valid: .*batch_size"):
        load_config("nanda-modadd", overrides={"bogus": "1"})
    with pytest.raises(ProbeError, match=r"unknown config key 'model.d_embed' \(valid: model.act"):
        load_config("nanda-modadd", overrides={"model.d_embed": "3"})


def test_ill_typed_and_invalid_values_name_field_and_value():
    with pytest.raises(ProbeError, match=r"invalid config value lr='abc': expected a number"):
        load_config("nanda-modadd", overrides={"lr": "abc"})
    with pytest.raises(ProbeError, match=r"steps='1.5': expected an integer"):
        load_config("nanda-modadd", overrides={"steps": "1.5"})
    with pytest.raises(ProbeError, match=r"train_fraction=1.5: must be in \(0, 1\]"):
        load_config("nanda-modadd", overrides={"train_fraction": "1.5"})
    with pytest.raises(ProbeError, match=r"model.act='swish': \(valid: relu, gelu"):
        load_config("nanda-modadd", overrides={"model.act": "swish"})
    with pytest.raises(ProbeError, match=r"model.n_heads=3: must divide d_model=128"):
        load_config("nanda-modadd", overrides={"model.n_heads": "3"})


def test_unknown_preset_lists_valid():
    with pytest.raises(ProbeError, match=r"unknown preset 'nope' \(valid: liu-toy-add"):
        load_config("nope")


def test_yaml_config_with_preset(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: liu-toy-add\nsteps: 123\nmodel:\n  d_embed: 2\ncheckpoint:\n  every: 7\n")
    cfg = load_config(path=path)
    assert cfg.steps == 123 and cfg.model.d_embed == 2 and cfg.checkpoint.every == 7 and cfg.n_train == 45
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1\n")
    with pytest.raises(ProbeError, match="not valid YAML"):
        load_config(path=bad)


def test_switching_model_kind_uses_that_kinds_defaults():
    cfg = load_config("nanda-modadd", overrides={"model.kind": "mlp", "model.d_embed": "8"})
    assert cfg.model.kind == "mlp" and cfg.model.d_embed == 8
    assert "model.d_embed" in valid_keys()


def test_the_lee_grokfast_preset_holds_the_authors_settings():
    """github.com/ironjr/grokfast main.py with the README's EMA command line (see the preset)."""
    cfg = load_config("lee-grokfast")
    assert (cfg.task, cfg.p, cfg.train_fraction, cfg.batch_size, cfg.batching) == ("mul-b-nonzero", 97, 0.5, 512, "epochs")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.betas, cfg.warmup_steps) == ("adam", 1e-3, 0.005, (0.9, 0.98), 10)
    m = cfg.model
    assert (m.n_layers, m.d_model, m.n_heads, m.d_mlp, m.act, m.layernorm, m.op_token) == (2, 128, 4, 512, "gelu", True, True)
    assert (m.block, m.init, m.head_bias, m.dropout) == ("ln_replaces_residual", "pytorch", False, 0.0)
    assert (cfg.grokfast.filter, cfg.grokfast.alpha, cfg.grokfast.amplification) == ("ema", 0.98, 2.0)
    assert cfg.softmax_dtype == "float32" and cfg.steps == 300_000 and cfg.checkpoint.metrics_every == 10


def test_the_new_keys_are_validated_and_stored_only_when_set():
    with pytest.raises(ProbeError, match=r"model.block='ln_replaces_residual': .*needs model.layernorm=true"):
        load_config("nanda-modadd", overrides={"model.block": "ln_replaces_residual"})
    with pytest.raises(ProbeError, match=r"model.block='post_ln': \(valid: pre_ln, ln_replaces_residual"):
        load_config("nanda-modadd", overrides={"model.block": "post_ln"})
    with pytest.raises(ProbeError, match=r"model.init='xavier': \(valid: nanda, pytorch"):
        load_config("nanda-modadd", overrides={"model.init": "xavier"})
    with pytest.raises(ProbeError, match=r"batching='shuffle': \(valid: random, epochs"):
        load_config("nanda-modadd", overrides={"batching": "shuffle"})
    assert {"batching", "model.block", "model.init", "model.head_bias"} <= set(valid_keys())
    cfg = load_config("nanda-modadd", overrides={"model.head_bias": "false", "batching": "epochs", "batch_size": "64"})
    data = cfg.to_dict()
    assert data["model"]["head_bias"] is False and data["batching"] == "epochs" and "init" not in data["model"]
    assert TrainConfig.from_dict(data) == cfg
    assert any(s.startswith("epochs of batches") for s in cfg.interventions())
    # set back to its default, a key is stored as if never set
    assert load_config("nanda-modadd", overrides={"batching": "random"}).to_dict() == load_config("nanda-modadd").to_dict()
    assert not load_config("nanda-modadd", overrides={"batching": "epochs"}).interventions()  # full batch: no batches


#: the keys a config at its defaults stores: a sweep's grid digest hashes the stored configs, so a key
#: added later must be stored only when set (``probe.config.ADDED``) or every existing sweep directory
#: would be refused as "made from a different sweep spec"
STORED_AT_DEFAULTS = {
    "batch_size", "betas", "checkpoint.count", "checkpoint.dtype", "checkpoint.every", "checkpoint.max_every",
    "checkpoint.metrics_every", "checkpoint.min_every", "checkpoint.schedule", "checkpoint.tensors",
    "checkpoint.threshold", "constraint.norm", "constraint.relative", "constraint.tensors", "device", "embed_lr",
    "embed_weight_decay", "eps", "grokfast.alpha", "grokfast.filter", "grokfast.lamb", "grokfast.warmup",
    "grokfast.window", "group", "init_alpha", "lr", "model.act", "model.d_head", "model.d_mlp", "model.d_model",
    "model.dropout", "model.kind", "model.layernorm", "model.n_heads", "model.n_layers", "model.objective",
    "model.op_token", "momentum", "n", "n_train", "optimizer", "ordered", "orthogonal_grad", "p", "seed", "softmax",
    "softmax_dtype", "split_seed", "steps", "stop.after_generalization", "stop.threshold", "task", "train_fraction",
    "train_subset", "warmup_steps", "weight_decay"}


def test_a_config_at_its_defaults_stores_the_keys_it_always_stored():
    def keys(d: dict, prefix: str = "") -> set[str]:
        return {k2 for k, v in d.items()
                for k2 in (keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"})}

    assert keys(TrainConfig().to_dict()) == STORED_AT_DEFAULTS
    updated = load_config("nanda-modadd", overrides={"checkpoint.train_metrics": "update"}).to_dict()
    assert updated["checkpoint"]["train_metrics"] == "update"  # a key added later is stored once set
