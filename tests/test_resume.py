"""Checkpoints: a run killed with SIGKILL, or stopped with Ctrl-C, and resumed ends bit-identical to an
uninterrupted run; incomplete, truncated or foreign checkpoints are never loaded as if they were fine."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import torch

from pgmm_core.testing import final_weights, install_fake_distribution, log_records, run_train, tiny_config

KILLER = '''
import os
import signal
from typing import Literal

from pgmm_core.config.sections import ComponentConfig
from pgmm_core.hookspecs import hookimpl


class KillAtConfig(ComponentConfig):
    type: Literal["kill_at"] = "kill_at"
    step: int


class KillAt:
    """Dies like an OOM-killed process right after the checkpoint of `step` is on disk."""

    def __init__(self, config):
        self.step = config.step

    @hookimpl
    def pgmm_on_checkpoint_saved(self, run, step, path):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class InterruptAtConfig(ComponentConfig):
    type: Literal["interrupt_at"] = "interrupt_at"
    step: int


class InterruptAt:
    """Presses Ctrl-C (SIGINT to this process) while step `step` is being finished."""

    def __init__(self, config):
        self.step = config.step

    @hookimpl
    def pgmm_on_step_end(self, run, step, metrics):
        if step == self.step:
            signal.raise_signal(signal.SIGINT)


@hookimpl
def pgmm_register_callbacks(registrar):
    registrar.add("kill_at", KillAt, KillAtConfig)
    registrar.add("interrupt_at", InterruptAt, InterruptAtConfig)
'''


@pytest.fixture(scope="module")
def killer_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    install_fake_distribution(site, "pgmm-killer", "0.1.0", {"pgmm_killer": KILLER}, {"killer": "pgmm_killer"})
    return site


def _config(run_dir, **train):
    config = tiny_config(run_dir, train={"epochs": 2, "save_every": 3, "keep_last": 10, **train})
    config["data"]["val"] = []
    return config


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("straight")
    result = run_train(_config(tmp / "run"), tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run"


def test_sigkill_then_resume_is_bit_identical(straight_run, tmp_path, killer_site):
    env = {"PYTHONPATH": os.pathsep.join([str(killer_site), os.environ.get("PYTHONPATH", "")])}
    killed = _config(tmp_path / "run", callbacks=[{"type": "kill_at", "step": 6}])
    result = run_train(killed, tmp_path, name="killed.json", env=env)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*")) == [
        "step-000003", "step-000006"]
    result = run_train(_config(tmp_path / "run"), tmp_path, "--resume", "auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout + result.stderr
    straight, resumed = final_weights(straight_run), final_weights(tmp_path / "run")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    steps = [r["step"] for r in log_records(tmp_path / "run")]
    assert steps[-1] == 16 and steps == sorted(set(steps))  # each step logged once


def test_ctrl_c_saves_the_step_then_resume_is_bit_identical(straight_run, tmp_path, killer_site):
    env = {"PYTHONPATH": os.pathsep.join([str(killer_site), os.environ.get("PYTHONPATH", "")])}
    stopped = _config(tmp_path / "run", callbacks=[{"type": "interrupt_at", "step": 5}])
    result = run_train(stopped, tmp_path, name="stopped.json", env=env)
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "interrupted after step 5" in result.stderr and "--resume auto" in result.stderr
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*")) == [
        "step-000003", "step-000005"]  # the step in progress was finished and saved
    resumed_config = _config(tmp_path / "run", log_every=1)  # a changed config is named on resume
    result = run_train(resumed_config, tmp_path, "--resume", "auto")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "step-000005" in output and "train.callbacks" in output and "train.log_every" in output
    assert (tmp_path / "run" / "config.previous.json").is_file()
    straight, resumed = final_weights(straight_run), final_weights(tmp_path / "run")
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_resuming_a_finished_run_trains_nothing(straight_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight_run, run)
    before = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    result = run_train(_config(run), tmp_path, "--resume", "auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already at step 16 of 16: nothing to train" in result.stdout + result.stderr
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == before


def test_an_evaluation_interrupted_at_a_checkpoint_is_done_on_resume(tmp_path):
    """Ctrl-C can abandon the evaluation of the step it then saves; the resumed run does it first,
    and the run ends as the uninterrupted one: same weights, same evaluations."""
    def config(run_dir):
        c = _config(run_dir, eval_every=4, save_every=4)
        c["data"]["val"] = [{"type": "synthetic_shapes", "num_samples": 8, "seed": 0}]
        return c

    straight = tmp_path / "straight"
    assert run_train(config(straight), tmp_path).returncode == 0
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    for later in ("step-000012", "step-000016"):  # as if stopped at step 8, its evaluation abandoned
        shutil.rmtree(run / "checkpoints" / later)
    meta_path = run / "checkpoints" / "step-000008" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta.update(metrics={}, metrics_step=4)
    meta_path.write_text(json.dumps(meta))
    (run / "checkpoints" / "best.json").unlink()
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps([m for m in metrics if m["step"] == 4]))

    result = run_train(config(run), tmp_path, "--resume", "auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "evaluating step 8 first" in result.stdout + result.stderr
    assert json.loads((run / "metrics.json").read_text()) == json.loads((straight / "metrics.json").read_text())
    assert json.loads((run / "checkpoints" / "best.json").read_text()) == json.loads(
        (straight / "checkpoints" / "best.json").read_text())
    straight_weights, resumed = final_weights(straight), final_weights(run)
    for key in straight_weights:
        assert torch.equal(straight_weights[key], resumed[key]), key


def test_a_fresh_run_into_an_existing_run_is_refused(straight_run, tmp_path):
    result = run_train(_config(straight_run), tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "already holds a run" in result.stderr and "--resume auto" in result.stderr


def test_auto_resume_skips_incomplete_and_truncated(straight_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight_run, run)
    checkpoints = run / "checkpoints"
    newest = sorted(checkpoints.glob("step-*"))[-1]
    # a newer directory without metadata (as if killed mid-copy) and a truncated weights file
    (checkpoints / "step-000099").mkdir()
    (checkpoints / "step-000099" / "model.safetensors").write_bytes(b"partial")
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    config = _config(run, epochs=3)
    result = run_train(config, tmp_path, "--resume", "auto")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "skipping step-000099" in output and "incomplete" in output
    assert f"skipping {newest.name}" in output and "truncated" in output
    assert "resumed from" in output and "step-000015" in output


def test_explicit_truncated_checkpoint_is_refused(straight_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight_run, run)
    newest = sorted((run / "checkpoints").glob("step-*"))[-1]
    state = newest / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    result = run_train(_config(run, epochs=3), tmp_path, "--resume", str(newest))
    assert result.returncode == 3
    assert "truncated" in result.stderr and "Traceback" not in result.stderr


def test_checkpoint_of_another_shape_names_the_mismatch(straight_run, tmp_path):
    newest = sorted((straight_run / "checkpoints").glob("step-*"))[-1]
    config = _config(tmp_path / "run")
    config["model"]["connector"]["num_query_tokens"] = 6
    result = run_train(config, tmp_path, "--resume", str(newest))
    assert result.returncode == 3
    assert "connector.query_tokens" in result.stderr and "[1, 4, 32]" in result.stderr and "[1, 6, 32]" in result.stderr
