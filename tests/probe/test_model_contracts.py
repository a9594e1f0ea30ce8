"""Contract battery over every registered model kind (``probe.config.MODELS``, docs/design.md "Models
and hooks"): what a kind's config declares for the analyses (``embed_param``, ``unembed_param``,
``neuron_hook``, ``neuron_readout``, ``n_ctx``, ``operand_positions``, ``buffer_shapes``) exists, with
the declared meaning, in the model the kind builds. Each kind is built with its defaults and with
every preset that uses it (the registries are read when the tests are collected, so a new kind or
preset is tested here with no edit)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from probe.config import MODELS, TrainConfig
from probe.models import build_model
from probe.tasks import Task, make_task
from probe.train.config import PRESETS, preset_config

#: a task every kind without a preset of its own is tried on
FALLBACK_TASK = {"name": "add", "p": 11}


def _cases() -> list[Any]:
    """``(kind, where the config comes from)`` for every registered kind: its defaults and each preset."""
    out = []
    for kind in MODELS.names():
        out.append(pytest.param(kind, None, id=f"{kind}-defaults"))
        for preset in PRESETS:
            if preset_config(preset).model.kind == kind:
                out.append(pytest.param(kind, preset, id=f"{kind}-{preset}"))
    return out


def _config_and_task(kind: str, preset: str | None) -> tuple[Any, Task]:
    """The model config and the task it is built for: a preset's own, or the kind's defaults on the task
    of the first preset that uses the kind (else :data:`FALLBACK_TASK`)."""
    if preset is not None:
        cfg: TrainConfig = preset_config(preset)
        return cfg.model, make_task(**cfg.task_params)
    for name in PRESETS:
        cfg = preset_config(name)
        if cfg.model.kind == kind:
            return MODELS.get(kind)(), make_task(**cfg.task_params)
    return MODELS.get(kind)(), make_task(**FALLBACK_TASK)


@pytest.mark.parametrize("kind,preset", _cases())
def test_declared_names_exist_in_the_built_model(kind, preset):
    model_cfg, task = _config_and_task(kind, preset)
    assert model_cfg.kind == kind
    torch.manual_seed(0)
    model = build_model(model_cfg, task)
    assert model.cfg == model_cfg and model.embed_param == model_cfg.embed_param
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    hooks = set(model.hook_dict)

    x = model.model_inputs(torch.as_tensor(task.inputs[:7]))
    with torch.no_grad():
        answer = model.answer(x)
        _, cache = model.run_with_cache(x)
    assert answer.shape[0] == 7

    # the symbol embeddings: rows 0..n_symbols-1 of embed_param, seen at hook_embed
    if model_cfg.embed_param is not None:
        assert model_cfg.embed_param in params, (model_cfg.embed_param, sorted(params))
        w_e = params[model_cfg.embed_param]
        assert w_e.shape[0] >= task.n_symbols
        assert "hook_embed" in hooks
    # the readout: [d, n_out], the last axis of the answer
    assert model_cfg.unembed_param in params, (model_cfg.unembed_param, sorted(params))
    w_u = params[model_cfg.unembed_param]
    assert w_u.ndim == 2 and w_u.shape[1] == answer.shape[-1]
    # the neurons: a hook whose activations the readout parameter writes towards the unembedding
    if model_cfg.neuron_hook is not None:
        assert model_cfg.neuron_hook in hooks, (model_cfg.neuron_hook, sorted(hooks))
        neurons = cache[model_cfg.neuron_hook]
        assert neurons.shape[0] == 7
        if model_cfg.neuron_readout is not None:
            assert model_cfg.neuron_readout in params, (model_cfg.neuron_readout, sorted(params))
            readout = params[model_cfg.neuron_readout]
            assert readout.shape == (neurons.shape[-1], w_u.shape[0])
    else:
        assert model_cfg.neuron_readout is None
    # token positions and where the operands sit among them
    if model_cfg.n_ctx is not None:
        assert x.shape[1] == model_cfg.n_ctx and cache["hook_embed"].shape[1] == model_cfg.n_ctx
    positions = model_cfg.operand_positions
    if positions is not None:
        assert model_cfg.embed_param is not None, "operand positions without symbol embeddings"
        emb = cache["hook_embed"]
        a, b = (torch.as_tensor(task.inputs[:7, k]) for k in (0, 1))
        for position, operand in zip(positions, (a, b)):
            assert 0 <= position < emb.shape[1]
            assert torch.equal(emb[:, position], params[model_cfg.embed_param][operand]), position
    # fixed tensors the run stores under static/
    for name, shape in model_cfg.buffer_shapes(task.n_classes).items():
        assert name in buffers and tuple(buffers[name].shape) == tuple(shape), (name, shape)

