"""The batched shared passes (docs/design.md, "Batched passes") against the per-checkpoint reference.

Every metric that needs a forward pass gives, checkpoint by checkpoint, what the per-checkpoint form
(``PROBE_PASSES=checkpoint``: the checkpoint's weights in the model, TransformerLens hooks) gives,
within the tolerance stated for it in :data:`TOLERANCE`, on the shipped runs and on a nanda-modadd
series; the float32 passes give what float64 passes give within the same tolerances (the precision
declared in :data:`probe.analyses.passes.PASSES`); a pass never holds more than one window of
checkpoints; results cached by one form are read back by the other (the cache keys do not depend on
the form); and the models' batched forwards equal the hooked models.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import probe
from probe.analyses import cache as result_cache
from probe.analyses import passes
from probe.analyses.registry import get_metric, load
from probe.errors import ProbeError

from .conftest import shipped_copy

#: (rtol, atol) of each metric between the batched and the per-checkpoint form, and between float32
#: and float64 passes. Measured differences are far below: Fourier norms of the neurons 1e-5
#: relative (Gram matrices in float32), losses 3e-6 relative down to losses of 4e-8, distance
#: irrelevance and margins 1e-6; accuracies and key frequencies were identical.
TOLERANCE: dict[str, tuple[float, float]] = {
    "fourier_norms": (1e-4, 0.0),
    "restricted_loss": (1e-4, 0.0),
    "excluded_loss": (1e-4, 0.0),
    "distance_irrelevance": (1e-6, 0.0),
    "gradient_symmetricity": (1e-6, 1e-9),
    "pca_projection_accuracy": (0.0, 1e-3),  # a sample at a near-tie may flip: at most 0.1% of a split
    "efficiency": (1e-5, 1e-7),  # margins are logit differences: near zero, absolute in logit units
    "softmax_collapse": (1e-6, 1e-9),
    "irrep_logit_share": (1e-4, 1e-7),  # shares near 1e-13 differ in their leading digit
    "key_freqs": (0.0, 0.0),
    "key_freq_energy": (1e-12, 0.0),
    "key_irreps": (0.0, 0.0),
    "rqi": (1e-4, 1e-6),  # at a hook: a rank score near a tie moves by one pair
    "rqi_curve": (1e-4, 1e-6),
    "acc_hat": (1e-4, 1e-3),
}

#: metrics whose forward passes are not shared passes: the local learning coefficient samples SGLD
#: chains around the checkpoint's model
NOT_SHARED = {"llc"}


def _cases() -> list[tuple[str, dict[str, Any]]]:
    """Every registered metric that needs a forward pass with its default parameters, and the
    parameters that make others need one."""
    out = []
    for name in sorted(load().names()):
        m = get_metric(name)
        if name not in NOT_SHARED and "forward" in m.requirements(m.resolve({})):
            out.append((name, {}))
    out += [("key_freqs", {"key_rule": "neurons"}), ("key_freq_energy", {"key_rule": "neurons"}),
            ("key_irreps", {"irrep_rule": "logit"}), ("distance_irrelevance", {"logit": "top_incorrect"}), ("restricted_loss", {"convention": "grid"}),
            ("rqi", {"hook": "logits"}), ("rqi", {"hook": "HOOK"}), ("rqi_curve", {"hook": "HOOK"}),
            ("acc_hat", {"hook": "HOOK"})]
    return out


CASES = _cases()


def test_every_forward_metric_is_compared():
    known = {name for name, _ in CASES}
    assert {m for m, _ in CASES if not _} <= set(TOLERANCE), set(known) - set(TOLERANCE)
    assert {"fourier_norms", "restricted_loss", "excluded_loss", "pca_projection_accuracy",
            "distance_irrelevance", "gradient_symmetricity"} <= known


# --------------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped runs (private copies) and a short nanda-modadd series (Nanda et al.'s model, p = 23)."""
    from probe.train.config import load_config
    from probe.train.loop import train

    out = {name: shipped_copy(tmp_path_factory, name) for name in ("modadd-p53", "toy-add")}
    cfg = load_config("nanda-modadd", overrides={"p": "23", "steps": "40", "checkpoint.every": "10",
                                                 "checkpoint.metrics_every": "10"})
    out["nanda-modadd"] = Path(train(cfg, tmp_path_factory.mktemp("nanda") / "run", progress=False)).parent
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _steps(path: Path) -> list[int]:
    with probe.load_run(path) as run:
        s = [int(x) for x in run.steps]
    return s if len(s) <= 5 else [s[0], s[-1]]  # two checkpoints: one window of two, their batched form


def _hook(path: Path) -> str:
    with probe.load_run(path) as run:
        return run.config.model.neuron_hook or "hook_out"


def _compute(path: Path, metric: str, params: dict[str, Any], mode: str, monkeypatch: pytest.MonkeyPatch,
             steps: list[int] | None = None, cache: bool = False, device: str = "cpu") -> pd.DataFrame | ProbeError:
    monkeypatch.setenv(passes.MODE_ENV, mode)
    params = {k: (_hook(path) if v == "HOOK" else v) for k, v in params.items()}
    try:
        with warnings.catch_warnings(), probe.load_run(path) as run:
            warnings.simplefilter("ignore")
            return probe.analyses.compute(run, metric, steps=steps or _steps(path), cache=cache, device=device,
                                          **params)
    except ProbeError as exc:
        return exc


def _close(a: pd.DataFrame, b: pd.DataFrame, metric: str, what: str) -> None:
    rtol, atol = TOLERANCE[metric]
    assert list(a.columns) == list(b.columns) and a["step"].tolist() == b["step"].tolist(), what
    for col in a.columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if x.dtype.kind in "fc":
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"{what}: {col}")
        else:
            assert x.tolist() == y.tolist(), f"{what}: {col}"


# --------------------------------------------------------------------------------------------------
# batched == per checkpoint
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device (run where one is present)"))])
@pytest.mark.parametrize("source", ["modadd-p53", "toy-add", "nanda-modadd"])
@pytest.mark.parametrize("metric,params", CASES, ids=[f"{m}-{'-'.join(map(str, p.values()))}" for m, p in CASES])
def test_batched_equals_per_checkpoint(runs, metric, params, source, device, monkeypatch):
    """The batched form (on the CPU; on CUDA: pinned chunk copies, one batched call per window) against
    the per-checkpoint reference on the CPU."""
    batched = _compute(runs[source], metric, params, "batched", monkeypatch, device=device)
    reference = _compute(runs[source], metric, params, "checkpoint", monkeypatch)
    if isinstance(reference, ProbeError):
        assert isinstance(batched, ProbeError) and str(batched) == str(reference)
        pytest.skip(f"{metric} refuses {source}: {reference}")
    assert not isinstance(batched, ProbeError), str(batched)
    _close(batched, reference, metric, f"{metric} {params} on {source}, batched on {device} against per checkpoint")
    assert batched.attrs["probe"][metric]["notes"] == reference.attrs["probe"][metric]["notes"]


@pytest.mark.parametrize("source", ["modadd-p53", "nanda-modadd"])
@pytest.mark.parametrize("metric,params", [c for c in CASES if c[0] in TOLERANCE and not c[1]])
def test_float32_passes_agree_with_float64(runs, metric, params, source, monkeypatch):
    """The declared float32 passes: the metric in float64 passes is the same within its tolerance."""
    single = _compute(runs[source], metric, params, "batched", monkeypatch)
    if isinstance(single, ProbeError):
        pytest.skip(str(single))
    for name, spec in passes.PASSES.items():
        if spec.dtype == "float32":
            monkeypatch.setitem(passes.PASSES, name, dataclasses.replace(spec, dtype="float64"))
    double = _compute(runs[source], metric, params, "batched", monkeypatch)
    _close(single, double, metric, f"{metric} on {source}, float32 passes against float64")


def test_precision_is_declared_for_every_pass():
    assert {p.dtype for p in passes.PASSES.values()} <= {"float32", "float64"}
    assert passes.PASSES["readout"].dtype == "float64"  # restricted and excluded losses reach 1e-8


# --------------------------------------------------------------------------------------------------
# windows: memory flat in the length of the series
# --------------------------------------------------------------------------------------------------
FORWARD = ["fourier_norms", "restricted_loss", "excluded_loss", "distance_irrelevance", "pca_projection_accuracy",
           "gradient_symmetricity", "efficiency"]


def test_windows_hold_a_bounded_number_of_checkpoints_and_do_not_change_results(runs, monkeypatch):
    from probe.models.transformer import Transformer

    path = runs["modadd-p53"]
    with probe.load_run(path) as run:
        steps = [int(s) for s in run.steps[:7]]
    wide = _compute(path, FORWARD, {}, "batched", monkeypatch, steps)  # the default window: all 7
    seen: list[int] = []
    stacked = Transformer.stacked

    def spy(self: Any, params: Any, *args: Any, **kw: Any) -> Any:
        seen.append(int(next(iter(params.values())).shape[0]))
        return stacked(self, params, *args, **kw)

    monkeypatch.setattr(Transformer, "stacked", spy)
    monkeypatch.setitem(passes.WINDOW_BYTES, "cpu", 1)  # one checkpoint per window
    narrow = _compute(path, FORWARD, {}, "batched", monkeypatch, steps)
    assert seen and max(seen) == 1
    pd.testing.assert_frame_equal(wide, narrow, check_exact=True)  # a checkpoint's numbers ignore its window
    seen.clear()
    monkeypatch.setitem(passes.WINDOW_BYTES, "cpu", 1 << 40)
    monkeypatch.setenv(passes.MODE_ENV, "batched")
    per_checkpoint = [m for m in FORWARD if m != "pca_projection_accuracy"]  # (its pass stacks projections)
    with probe.load_run(path) as run:
        chunked = probe.analyses.compute(run, per_checkpoint, steps=steps, cache=False, chunk=3)
    assert max(seen) == 3  # a window never crosses a chunk: the parameters held are one chunk's
    pd.testing.assert_frame_equal(wide[chunked.columns], chunked, check_exact=True)


def test_a_new_chunk_drops_the_previous_chunks_passes(runs):
    from probe.analyses.context import Context

    with probe.load_run(runs["modadd-p53"]) as run:
        ctx = Context(run, "cpu", passes="batched")
        ctx.begin_chunk([0, 1])
        ckpt = run.checkpoint(int(run.steps[1]))
        object.__setattr__(ckpt, "device", "cpu")
        passes.answer_tensor(ckpt, ctx)
        held = [k for k in ctx.cache if isinstance(k, tuple) and str(k[0]).startswith("pass_")]
        assert ("pass_window", "clean") in held
        ctx.begin_chunk([2, 3])
        assert not [k for k in ctx.cache if isinstance(k, tuple) and k[0] in ("pass_window", "pass_params")]


# --------------------------------------------------------------------------------------------------
# the cache: keys do not depend on the form
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["restricted_loss", "fourier_norms", "pca_projection_accuracy"])
def test_results_cached_by_the_per_checkpoint_form_are_read_by_the_batched_form(runs, metric, monkeypatch,
                                                                                  tmp_path_factory):
    path = shipped_copy(tmp_path_factory, "modadd-p53")
    first = _compute(path, metric, {}, "checkpoint", monkeypatch, cache=True)
    files = {p.name: p.stat().st_mtime_ns for p in (path / "analysis").glob(f"{metric}-*.parquet")}
    assert len(files) == 1
    again = _compute(path, metric, {}, "batched", monkeypatch, cache=True)
    assert {p.name: p.stat().st_mtime_ns for p in (path / "analysis").glob(f"{metric}-*.parquet")} == files
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    with probe.load_run(path) as run:  # and the key is the one each form would write
        m = get_metric(metric)
        idx = run.select(",".join(map(str, _steps(path))))
        assert result_cache.cache_path(run, m, m.resolve({}), idx).name in files


# --------------------------------------------------------------------------------------------------
# the models' batched forwards
# --------------------------------------------------------------------------------------------------
TRANSFORMERS = [{}, {"layernorm": True}, {"layernorm": True, "ln_final": False}, {"n_layers": 2},
                {"n_layers": 2, "layernorm": True, "act": "gelu"}, {"eq_token": False}, {"attention_rate": 0.3},
                {"attention_rate": 0.0, "attn_bias": False, "causal": False, "eq_token": False},
                {"op_token": True}, {"layernorm": True, "block": "ln_replaces_residual"},
                {"head_bias": False, "positional": "none"},
                {"readout": "concat", "eq_token": False, "positional": "none", "causal": False}]


def _stack(model: Any) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {n: torch.stack([p.detach(), p.detach() + 0.1 * torch.randn(p.shape, generator=gen), 1.3 * p.detach()])
            for n, p in model.named_parameters()}


def _hooked(model: Any, params: dict[str, torch.Tensor], j: int, x: torch.Tensor, hook: str,
            new: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(params[n][j])
        seen: dict[str, torch.Tensor] = {}

        def keep(a: torch.Tensor, hook: Any) -> torch.Tensor:
            if new is not None:
                a = a.clone()
                if a.ndim == 3:
                    a[:, -1] = new
                else:
                    a = new
            seen["a"] = a
            return a

        with model.hooks(fwd_hooks=[(hook, keep)]):
            out = model.answer(x)
    act = seen["a"]
    return out, act[:, -1] if act.ndim == 3 else act


@pytest.mark.parametrize("variant", TRANSFORMERS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "nanda")
def test_transformer_stacked_equals_the_hooked_model(variant):
    from probe.config import TransformerConfig
    from probe.models import build_model
    from probe.models.base import ANSWER, ProbeModel
    from probe.tasks import make_task

    torch.manual_seed(0)
    task = make_task("add", p=11)
    cfg = TransformerConfig(d_model=16, n_heads=2, d_mlp=24, **variant)
    model = build_model(cfg, task).eval()
    x = model.model_inputs(torch.as_tensor(task.inputs))
    hook = cfg.neuron_hook
    params = _stack(model)
    with torch.no_grad():
        fast = model.stacked(params, x, (ANSWER, hook))
        generic = ProbeModel.stacked(model, params, x, (ANSWER, hook))
        neurons = fast[hook][:, :, -1]
        swapped = model.stacked(params, x, (ANSWER,), {hook: 0.7 * neurons})[ANSWER]
        jac = model.answer_map(params)
        classes = torch.as_tensor(task.labels[::-1].copy())  # any class per sample
        entries = model.stacked_entries(params, x, classes)
        grads = model.stacked_embed_gradients(params, x, classes)  # closed form where the model allows
        generic_grads = ProbeModel.stacked_embed_gradients(model, params, x, classes)  # backward pass
        alone = [model.stacked({n: v[j: j + 1] for n, v in params.items()}, x, (ANSWER, hook)) for j in range(3)]
    for j in range(3):  # a checkpoint's numbers do not depend on the others stacked with it (on the CPU)
        assert torch.equal(alone[j][ANSWER][0], fast[ANSWER][j]) and torch.equal(alone[j][hook][0], fast[hook][j])
        out, act = _hooked(model, params, j, x, hook)
        scale = float(out.abs().max())
        torch.testing.assert_close(entries[j], out[torch.arange(len(classes)), classes], rtol=0, atol=1e-5 * scale)
        torch.testing.assert_close(grads[j], generic_grads[j], rtol=0, atol=1e-5 * float(generic_grads.abs().max()))
        torch.testing.assert_close(fast[ANSWER][j], out, rtol=0, atol=1e-5 * scale)
        torch.testing.assert_close(generic[ANSWER][j], out, rtol=0, atol=1e-5 * scale)
        torch.testing.assert_close(neurons[j], act, rtol=0, atol=1e-5 * float(act.abs().max()))
        out2, _ = _hooked(model, params, j, x, hook, 0.7 * neurons[j])
        torch.testing.assert_close(swapped[j], out2, rtol=0, atol=1e-5 * scale)
        if jac is not None:  # affine readout: the change of the outputs is the change of the neurons through J
            torch.testing.assert_close(swapped[j] - fast[ANSWER][j], (-0.3 * neurons[j]) @ jac[j], rtol=0,
                                       atol=1e-5 * scale)
    assert (jac is None) == (cfg.readout == "concat" or (cfg.layernorm and cfg.ln_final))


@pytest.mark.parametrize("kind", ["toy", "toy-matrix", "mlp", "digits"])
def test_decoder_models_stacked_equal_the_hooked_model(kind):
    from probe.config import DigitsConfig, MLPConfig, ToyConfig
    from probe.models import build_model
    from probe.models.base import ANSWER, ProbeModel
    from probe.tasks import make_task

    torch.manual_seed(0)
    if kind == "digits":
        task = make_task("digits")
        cfg: Any = DigitsConfig(width=16, depth=3)
    else:
        task = make_task("perm", n=3) if kind == "toy-matrix" else make_task("add", p=7)
        cfg = {"toy": ToyConfig(d_embed=3, decoder=(8, 8)), "toy-matrix": ToyConfig(d_embed=2, aggregation="matrix"),
               "mlp": MLPConfig(d_embed=4, hidden=(8,))}[kind]
    model = build_model(cfg, task).eval()
    x = model.model_inputs(torch.as_tensor(task.inputs))
    hook = cfg.neuron_hook
    params = _stack(model)
    with torch.no_grad():
        fast = model.stacked(params, x, (ANSWER, hook))
        generic = ProbeModel.stacked(model, params, x, (ANSWER, hook))
        alone = [model.stacked({n: v[j: j + 1] for n, v in params.items()}, x, (ANSWER, hook)) for j in range(3)]
    for j in range(3):
        assert torch.equal(alone[j][ANSWER][0], fast[ANSWER][j]) and torch.equal(alone[j][hook][0], fast[hook][j])
        out, act = _hooked(model, params, j, x, hook)
        torch.testing.assert_close(fast[ANSWER][j], out, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(generic[ANSWER][j], out, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fast[hook][j], act, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [5, 6, 11, 23])
def test_neuron_norms_without_the_transform_equal_the_transform(p):
    from probe.analyses import fourier as fr
    from probe.analyses.fourier import frequency_norms_2d_batched

    acts = np.maximum(np.random.default_rng(p).normal(size=(p, p, 9)), 0.0)
    ref = fr.frequency_norms_2d(acts, p)
    np.testing.assert_allclose(frequency_norms_2d_batched(torch.from_numpy(acts), p), ref, rtol=1e-12)
    np.testing.assert_allclose(frequency_norms_2d_batched(torch.from_numpy(acts.astype(np.float32)), p), ref,
                               rtol=1e-5)


def test_an_unknown_form_is_refused(monkeypatch):
    monkeypatch.setenv(passes.MODE_ENV, "sideways")
    with pytest.raises(ProbeError, match="PROBE_PASSES"):
        passes.mode_from_env()
