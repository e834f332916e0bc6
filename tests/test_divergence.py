"""A diverging run stops instead of training on in NaN: non-finite steps are skipped and counted,
non-finite weights are never saved, and too many bad steps in a row end the run naming the first
bad step and the last good checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

import pgmm_core
from pgmm_core.config.loading import validate_config
from pgmm_core.errors import TrainingDivergedError
from pgmm_core.plugins import PluginHost
from pgmm_core.strategies.base import Strategy
from pgmm_core.testing import log_records, run_train, tiny_config


def _config(run_dir, **train):
    config = tiny_config(run_dir, train={"epochs": 2, "log_every": 1, "save_every": 2, "keep_last": 10, **train})
    config["data"]["val"] = []
    return config


BLOWS_UP = {"lr": 1e6, "warmup_steps": 0, "max_nonfinite_steps": 3}  # steps 1-2 finite, NaN from step 3


def _checkpoint_weights_are_finite(run_dir):
    from safetensors.torch import load_file

    found = sorted((run_dir / "checkpoints").glob("step-*"))
    assert found
    for path in found:
        for key, value in load_file(str(path / "model.safetensors")).items():
            assert torch.isfinite(value).all(), f"{path.name}: {key}"
    return [p.name for p in found]


def test_a_learning_rate_that_blows_up_stops_the_run(tmp_path):
    config = validate_config(_config(tmp_path / "run", **BLOWS_UP), PluginHost(environ={}))
    with pytest.raises(TrainingDivergedError, match=r"3 consecutive steps had a non-finite loss or gradient "
                       r"norm, from step 3 to step 5[\s\S]*last good checkpoint is .*step-000004"):
        pgmm_core.train(config)
    assert _checkpoint_weights_are_finite(tmp_path / "run") == ["step-000002", "step-000004"]
    records = log_records(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # step 5 ends the run before its record
    assert [r["nonfinite_steps"] for r in records] == [0, 0, 1, 2]
    assert records[2]["loss"] is None and math.isfinite(records[1]["loss"])  # NaN is written as null
    # the skipped steps changed nothing: step 4's checkpoint holds step 2's weights
    from safetensors.torch import load_file

    two, four = (load_file(str(tmp_path / "run" / "checkpoints" / name / "model.safetensors"))
                 for name in ("step-000002", "step-000004"))
    assert all(torch.equal(two[k], four[k]) for k in two)


def test_the_cli_exits_non_zero_with_one_message(tmp_path):
    result = run_train(_config(tmp_path / "run", **BLOWS_UP), tmp_path)
    assert result.returncode == TrainingDivergedError.exit_code != 0
    assert "Traceback" not in result.stderr and result.stderr.count("pgmm: error:") == 1
    assert "from step 3" in result.stderr and "step-000004" in result.stderr and "--resume auto" in result.stderr
    assert "pgmm: done" not in result.stdout


def test_one_non_finite_step_is_skipped_and_counted(tmp_path, monkeypatch):
    """A single bad step (here its gradient norm made NaN) is skipped — no weight or optimizer-state
    change — and the run goes on to the end, reporting the count."""
    clip = Strategy.clip_gradients
    calls = []

    def nan_at_third(self, *args, **kwargs):
        calls.append(1)
        norm = clip(self, *args, **kwargs)
        return math.nan if len(calls) == 3 else norm

    monkeypatch.setattr(Strategy, "clip_gradients", nan_at_third)
    config = validate_config(_config(tmp_path / "run", max_steps=4), PluginHost(environ={}))
    summary = pgmm_core.train(config)
    assert summary["steps"] == 4 and summary["nonfinite_steps"] == 1
    assert [r["nonfinite_steps"] for r in log_records(tmp_path / "run")] == [0, 0, 1, 1]
    state = torch.load(tmp_path / "run" / "checkpoints" / "step-000004" / "trainer_state.pt", weights_only=True)
    assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {3.0}  # 4 steps, one skipped


class _Rank:
    """One rank of two, whose other rank reports ``other_bad`` in the agreement."""

    world_size, is_main = 2, False

    def __init__(self, other_bad: bool) -> None:
        self.other_bad = other_bad
        self.collectives = self

    def all_reduce(self, tensor, op="sum"):
        assert op == "sum"
        return tensor + int(self.other_bad)


def test_every_rank_takes_the_same_decision():
    from pgmm_core.train.nonfinite import NonFiniteSteps

    # this rank's loss is finite, the other rank's is not: both skip
    assert NonFiniteSteps(3, strategy=_Rank(other_bad=True), scaled=False).is_bad(2.5, 1.0)
    assert not NonFiniteSteps(3, strategy=_Rank(other_bad=False), scaled=False).is_bad(2.5, 1.0)
    assert NonFiniteSteps(3, strategy=_Rank(other_bad=False), scaled=False).is_bad(math.inf, 1.0)
    # with an fp16 grad scaler, an overflowing gradient is the scaler's skip, not a non-finite step
    assert not NonFiniteSteps(3, strategy=_Rank(other_bad=False), scaled=True).is_bad(2.5, math.inf)


def test_two_processes_stop_together(tmp_path):
    import sys

    config = _config(tmp_path / "run", **BLOWS_UP)
    config["data"]["batch_size"] = 4
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = run_train(config, tmp_path, launcher=launcher, timeout=300)  # a rank left waiting would time out
    assert result.returncode != 0
    assert "world size 2" in result.stdout
    assert "training diverged" in result.stderr and "from step 3 to step 5" in result.stderr
    assert _checkpoint_weights_are_finite(tmp_path / "run") == ["step-000002", "step-000004"]


def test_non_finite_weights_are_never_saved(tmp_path):
    from pgmm_core.hookspecs import hookimpl

    class Poison:
        @hookimpl
        def pgmm_on_step_end(self, run, step, metrics):
            if step == 4:  # weights gone bad without a bad step (say, an overflow in the update)
                with torch.no_grad():
                    next(p for p in run.model.parameters() if p.requires_grad).fill_(math.inf)

    host = PluginHost(environ={})
    host.register(Poison(), name="poison")
    config = validate_config(_config(tmp_path / "run"), host)
    with pytest.raises(TrainingDivergedError, match=r"not finite \(NaN or infinite\) at step 4; the checkpoint "
                       r"was not written[\s\S]*last good checkpoint is .*step-000002 \(step 2\)"):
        pgmm_core.train(config)
    assert _checkpoint_weights_are_finite(tmp_path / "run") == ["step-000002"]
