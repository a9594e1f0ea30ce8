"""TransformerLens' own activation patching (``transformer_lens.patching``) on probe's transformer, on
the shipped run: ``run.model(step).cfg`` carries what those functions read (``device``,
``n_layers``, ``n_heads``, ``n_key_value_heads`` ...) and still equals, and is stored as, the run's
plain model config."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
import torch
from transformer_lens import patching

import probe
from probe.config import TransformerConfig
from probe.models.transformer import TransformerLensConfig

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "runs" / "modadd-p53"


@pytest.fixture(scope="module")
def setup():
    """Clean inputs (a, b, =) and corrupted ones (a', b, =) that differ in the first operand only, and a
    metric: the mean log-probability of the clean answers."""
    with probe.load_run(SHIPPED) as run:
        model = run.model("last")
        task = run.task
        cfg = run.config
    a, b = torch.arange(8), torch.arange(8) * 3 % 53
    clean = model.model_inputs(torch.stack([a, b], 1))
    corrupted = model.model_inputs(torch.stack([(a + 17) % 53, b], 1))
    answers = torch.as_tensor(task.labels[(a * 53 + b).numpy()])

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1].log_softmax(-1).gather(-1, answers[:, None]).mean()

    _, cache = model.run_with_cache(clean)
    return model, cfg, clean, corrupted, cache, metric


def test_the_config_tl_reads_is_the_runs_config(setup):
    model, cfg, *_ = setup
    assert isinstance(model.cfg, TransformerLensConfig) and isinstance(model.cfg, TransformerConfig)
    assert model.cfg == cfg.model and cfg.model == model.cfg and hash(model.cfg) == hash(cfg.model)
    assert repr(model.cfg) == repr(cfg.model)
    assert type(cfg.model) is TransformerConfig  # what runs store is untouched
    assert (model.cfg.device, model.cfg.n_layers, model.cfg.n_heads, model.cfg.n_key_value_heads) == \
        (torch.device("cpu"), 1, 4, None)
    assert (model.cfg.d_vocab, model.cfg.d_vocab_out, model.cfg.act_fn, model.cfg.normalization_type) == \
        (54, 53, "relu", None)
    assert model.double().cfg.dtype == torch.float64
    model.float()
    assert copy.deepcopy(model).cfg == cfg.model and pickle.loads(pickle.dumps(model.cfg)) == cfg.model


def test_residual_stream_patching(setup):
    model, _, clean, corrupted, cache, metric = setup
    result = patching.get_act_patch_resid_pre(model, corrupted, cache, metric)
    assert result.shape == (1, 3)
    with torch.no_grad():
        clean_value, corrupted_value = float(metric(model(clean))), float(metric(model(corrupted)))
    # only position 0 (the operand that differs) carries the difference: patching it restores the clean run
    assert float(result[0, 0]) == pytest.approx(clean_value, abs=1e-4)
    assert float(result[0, 1]) == pytest.approx(corrupted_value, abs=1e-4)
    assert float(result[0, 2]) == pytest.approx(corrupted_value, abs=1e-4)
    assert clean_value - corrupted_value > 1.0


def test_attention_head_patching(setup):
    model, _, clean, corrupted, cache, metric = setup
    heads = patching.get_act_patch_attn_head_out_all_pos(model, corrupted, cache, metric)
    assert heads.shape == (1, 4)
    for h in range(4):  # the same patch by hand: head h's output z taken from the clean run
        def hook(z, hook, h=h):
            z[:, :, h] = cache["blocks.0.attn.hook_z"][:, :, h]
            return z

        with torch.no_grad():
            manual = metric(model.run_with_hooks(corrupted, fwd_hooks=[("blocks.0.attn.hook_z", hook)]))
        assert float(heads[0, h]) == pytest.approx(float(manual), abs=1e-5)
    by_pos = patching.get_act_patch_attn_head_out_by_pos(model, corrupted, cache, metric)
    assert by_pos.shape == (1, 3, 4)
    every = patching.get_act_patch_attn_head_all_pos_every(model, corrupted, cache, metric)
    assert every.shape == (5, 1, 4) and torch.isfinite(every).all()
