"""A trainer option from outside the package: docs/design.md's worked example (gradient noise, keys
``noise.sigma`` and ``noise.decay``) is registered by importing it as any user module would, then
configured, trained, killed with kill -9, resumed bit-identically, described by ``probe info``
and refused by the vectorised ensemble; a process without it refuses its runs by name."""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import probe
from probe.config import SECTIONS, TRAINING_OPTIONS, TrainConfig, register_section, valid_keys
from probe.errors import ProbeError
from probe.train.config import load_config
from probe.train.interventions import INTERVENTIONS, Intervention, intervention
from probe.train.loop import resume, train

ROOT = Path(__file__).resolve().parents[2]
MODULE = "probe_noise_example"
DESCRIPTION = "gradient noise (sigma 0.01, decay 0.55)"
SETS = {"p": "11", "model.d_embed": "16", "model.hidden": "16", "checkpoint.schedule": "every",
        "checkpoint.every": "3", "checkpoint.metrics_every": "3"}


def _example_source() -> str:
    """The code of the worked example in docs/design.md (the one python block registering "noise")."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "design.md").read_text(), re.S)
    found = [b for b in blocks if '@intervention("noise"' in b]
    assert len(found) == 1, "docs/design.md should hold the gradient-noise example exactly once"
    return found[0]


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the example as module ``probe_noise_example``, imported into this process."""
    folder = tmp_path_factory.mktemp("plugin")
    (folder / f"{MODULE}.py").write_text(_example_source())
    if MODULE not in sys.modules:  # registering twice is an error: import it once per process
        sys.path.insert(0, str(folder))
        try:
            importlib.import_module(MODULE)
        finally:
            sys.path.remove(str(folder))
    return folder


def _cli(*args: str, plugin: Path | None = None) -> list[str]:
    """The command line, in a process that first imports the example when ``plugin`` is given."""
    if plugin is None:
        return [sys.executable, "-m", "probe.cli", *args]
    code = (f"import sys; sys.path.insert(0, sys.argv.pop(1)); import {MODULE}; "
            "from probe.cli import main; sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-c", code, str(plugin), *args]


def _noisy(steps: int, sigma: str = "0.01") -> TrainConfig:
    return load_config("kitouni-mlp", overrides={**SETS, "steps": str(steps), "noise.sigma": sigma})


def test_the_section_works_wherever_config_keys_do(plugin, tmp_path):
    cfg = _noisy(6)
    assert cfg.section("noise") is cfg.noise and (cfg.noise.sigma, cfg.noise.decay) == (0.01, 0.55)
    assert cfg.to_dict()["noise"] == {"sigma": 0.01, "decay": 0.55}
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.interventions() == [DESCRIPTION]
    assert {"noise.sigma", "noise.decay"} <= set(valid_keys())
    # unset, the section reads as its defaults and a run does not store it
    plain = load_config("kitouni-mlp", overrides=SETS)
    assert plain.noise.sigma == 0.0 and "noise" not in plain.to_dict() and plain.interventions() == []
    assert load_config("kitouni-mlp", overrides={**SETS, "noise.sigma": "0"}) == plain
    path = tmp_path / "c.yaml"
    path.write_text("preset: kitouni-mlp\nnoise:\n  sigma: 0.02\n  decay: 0\n")
    from_file = load_config(path=path)
    assert (from_file.noise.sigma, from_file.noise.decay) == (0.02, 0.0)
    with pytest.raises(ProbeError, match=r"invalid config value noise.sigma=-1.0: must be a number >= 0"):
        load_config("kitouni-mlp", overrides={"noise.sigma": "-1"})
    dry = subprocess.run(_cli("train", "--preset", "kitouni-mlp", "--set", "noise.sigma=0.01", "--dry-run",
                              plugin=plugin), capture_output=True, text=True, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "noise:\n  sigma: 0.01\n  decay: 0.55\n" in dry.stdout


def test_unknown_section_keys_list_the_valid_ones(plugin):
    with pytest.raises(ProbeError, match=r"unknown config key 'nosuch.sigma' \(valid: .*noise\.sigma, noise\.decay"):
        load_config("kitouni-mlp", overrides={"nosuch.sigma": "1"})
    with pytest.raises(ProbeError, match=r"unknown config key 'noise.sigmaa' \(valid: noise\.decay, noise\.sigma\)"):
        load_config("kitouni-mlp", overrides={"noise.sigmaa": "1"})
    with pytest.raises(ProbeError, match=r"unknown config section 'nosuch' \(valid: .*noise\)"):
        TrainConfig.from_dict({"nosuch": {"sigma": 1}})


def test_registering_a_name_twice_is_an_error(plugin):
    noise = INTERVENTIONS.get("noise")

    class Again(Intervention):
        active = noise.active
        describe = noise.describe

    for name in ("noise", "grokfast", "constraint"):
        with pytest.raises(ValueError, match="registered twice"):
            intervention(name, stage="grad")(Again)
    with pytest.raises(ValueError, match="registered twice"):
        register_section("noise", noise.config)

    @dataclass(frozen=True)
    class Other:
        level: float = 0.0

    with pytest.raises(ValueError, match="would shadow"):
        register_section("lr", Other)
    with pytest.raises(ValueError, match="must define active"):
        intervention("undescribed", stage="post", config=Other)(type("Undescribed", (Intervention,), {}))
    assert "undescribed" not in SECTIONS and "undescribed" not in INTERVENTIONS  # nothing half-registered
    assert "undescribed" not in TRAINING_OPTIONS


def test_noise_changes_training_and_runs_describe_it(plugin, tmp_path):
    train(load_config("kitouni-mlp", overrides={**SETS, "steps": "6"}), tmp_path / "plain", progress=False)
    train(_noisy(6), tmp_path / "noisy", progress=False)
    with probe.load_run(tmp_path / "plain") as a, probe.load_run(tmp_path / "noisy") as b:
        assert np.array_equal(a.series("embed.W_E")[0], b.series("embed.W_E")[0])  # same initialisation
        assert not np.array_equal(a.series("embed.W_E")[-1], b.series("embed.W_E")[-1])
        assert b.config == _noisy(6) and probe.run.describe_run(b)["training"] == DESCRIPTION
    info = subprocess.run(_cli("info", str(tmp_path / "noisy"), plugin=plugin),
                          capture_output=True, text=True, cwd=tmp_path)
    assert info.returncode == 0 and DESCRIPTION in info.stdout, info.stderr
    # a process that has not imported the extension refuses the run, naming the section, in one line
    bare = subprocess.run(_cli("info", str(tmp_path / "noisy")), capture_output=True, text=True,
                          cwd=tmp_path)
    assert bare.returncode == 2 and len(bare.stderr.strip().splitlines()) == 1, bare.stderr
    assert "unknown config section 'noise'" in bare.stderr and "imported" in bare.stderr
    assert "damaged" not in bare.stderr and "Traceback" not in bare.stderr


def test_the_ensemble_refuses_it_with_its_description(plugin):
    from probe.train.ensemble import group_key, why_not

    assert why_not([_noisy(6), _noisy(6)]) == f"{DESCRIPTION}: applied by the one-run trainer only"
    assert group_key(_noisy(6)) is None
    assert group_key(_noisy(6, sigma="0")) is not None  # registered but off: it vectorises as before


def test_killed_run_with_noise_resumes_bit_identical(plugin, tmp_path, wait_for_checkpoints):
    """kill -9 while training, kill -9 again during the resume, then resume to the end: the noise's
    generator and update count come back from the resume slot, so the run equals an uninterrupted one."""
    cfg = _noisy(600)
    train(cfg, tmp_path / "ref", progress=False)
    run_dir = tmp_path / "killed"
    first = ["train", "--preset", "kitouni-mlp", "--no-progress", "--out", str(run_dir)]
    for key, value in {**SETS, "steps": "600", "noise.sigma": "0.01"}.items():
        first += ["--set", f"{key}={value}"]
    again = ["train", "--resume", str(run_dir), "--no-progress"]
    for args, at in ((first, 15), (again, 60)):
        proc = subprocess.Popen(_cli(*args, plugin=plugin), cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_checkpoints(proc, run_dir, at)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert killed, "training finished (or failed) before it could be killed"
        with probe.load_run(run_dir) as run:
            assert not run.finished and len(run.steps) >= at
    resume(run_dir, progress=False)
    with probe.load_run(tmp_path / "ref") as a, probe.load_run(run_dir) as b:
        assert b.finished and np.array_equal(a.steps, b.steps)
        for name in a.tensor_names:
            assert np.array_equal(a.series(name), b.series(name)), name
        assert a.metrics.equals(b.metrics)
        assert b.config == cfg


def _env_with(plugin: Path, names: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(plugin), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PROBE_PLUGINS"] = names
    return env


def test_probe_plugins_brings_the_option_to_the_command_line_and_sweep_workers(plugin, tmp_path):
    """``PROBE_PLUGINS`` names the extension: every command and every sweep worker imports it."""
    env = _env_with(plugin, MODULE)
    cli = [sys.executable, "-m", "probe.cli"]
    dry = subprocess.run([*cli, "train", "--preset", "kitouni-mlp", "--set", "noise.sigma=0.01", "--dry-run"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert dry.returncode == 0 and "noise:" in dry.stdout and "sigma: 0.01" in dry.stdout, dry.stderr
    spec = tmp_path / "noise.yaml"
    sets = {**SETS, "steps": 6, "noise.sigma": 0.01}
    spec.write_text("preset: kitouni-mlp\nset: {" + ", ".join(f"{k}: {v}" for k, v in sets.items()) + "}\n"
                    "grid:\n  seed: [0, 1]\n")
    swept = subprocess.run([*cli, "sweep", str(spec), "--out", str(tmp_path / "s"), "--no-progress"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert swept.returncode == 0, swept.stderr
    for seed in (0, 1):
        info = subprocess.run([*cli, "info", str(tmp_path / "s" / "runs" / f"seed={seed}")],
                              capture_output=True, text=True, cwd=tmp_path, env=env)
        assert info.returncode == 0 and DESCRIPTION in info.stdout, info.stderr
    with probe.load_run(tmp_path / "s" / "runs" / "seed=0") as run:
        assert run.finished and run.config == _noisy(6)
    # a name that cannot be imported, or is no module name: one line, exit 2
    for names, needle in (("no_such_module_here", "cannot import 'no_such_module_here'"),
                          ("bad name", "not a module name")):
        bad = subprocess.run([*cli, "presets"], capture_output=True, text=True, cwd=tmp_path,
                             env=_env_with(plugin, names))
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert needle in bad.stderr and "Traceback" not in bad.stderr
