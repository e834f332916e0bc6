"""A strategy from a plugin outside the core trains through ``python -m pgmm_core.train``.

The plugin (installed the way ``pip install`` does it) registers ``recording``: a one-process
strategy that writes down everything the trainer asks of it — accumulation contexts, backward,
clipping, optimizer steps, checkpoint state — and every collective it is asked for. The run it
trains is bit-identical to one with the default strategy, and the record shows the trainer went
through the strategy for each of those jobs.
"""

from __future__ import annotations

import json
import os

import torch

from pgmm_core.testing import final_weights, install_fake_distribution, log_records, run_train, tiny_config

PLUGIN = '''
from typing import Literal

from pgmm_core.hookspecs import hookimpl
from pgmm_core.strategies.base import StrategyConfig


class RecordingConfig(StrategyConfig):
    type: Literal["recording"] = "recording"
    log: str


@hookimpl
def pgmm_register_strategies(registrar):
    registrar.add("recording", "pgmm_recording_strategy.strategy:build_recording", RecordingConfig,
                  description="one process; records every call and collective")
'''

STRATEGY = '''
import json

from pgmm_core.strategies.base import Strategy

RECORDED = ("setup", "teardown", "wrap", "backward", "clip_gradients", "optimizer_step", "model_state",
            "optimizer_state", "load_model_state", "load_optimizer_state", "data_shard")


class RecordingCollectives:
    def __init__(self, inner, record):
        self._inner, self._record = inner, record

    def __getattr__(self, name):
        value = getattr(self._inner, name)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            self._record("collective:" + name, kwargs.get("op"))
            return value(*args, **kwargs)

        return call


class RecordingStrategy(Strategy):
    """One process, written with the public base class only; records what it is asked."""

    name = "recording"

    def __init__(self, config, *, device_backend):
        super().__init__(config, device_backend=device_backend)
        self._file = open(config.log, "a", encoding="utf-8")

    def _record(self, call, detail=None):
        self._file.write(json.dumps([call, detail]) + "\\n")
        self._file.flush()

    def setup(self):
        self.device = self.device_backend.setup(self.env.local_rank)
        return self.device

    def teardown(self):
        self._file.close()

    def wrap(self, module):
        return module

    @property
    def collectives(self):
        return RecordingCollectives(super().collectives, self._record)

    def accumulation(self, *, sync):
        self._record("accumulation", sync)
        return super().accumulation(sync=sync)


def _recorded(name, implementation):
    def method(self, *args, **kwargs):
        self._record(name)  # (teardown: before the file is closed)
        return implementation(self, *args, **kwargs)

    return method


for _name in RECORDED:
    setattr(RecordingStrategy, _name, _recorded(_name, getattr(RecordingStrategy, _name)))


def build_recording(config, *, device_backend):
    return RecordingStrategy(config, device_backend=device_backend)
'''


def test_a_plugin_strategy_trains_through_the_cli(tmp_path):
    site = tmp_path / "site"
    install_fake_distribution(site, "pgmm-recording-strategy", "0.1.0",
                              {"pgmm_recording_strategy.__init__": PLUGIN,
                               "pgmm_recording_strategy.strategy": STRATEGY},
                              {"recording": "pgmm_recording_strategy"})
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    train = {"max_steps": 3, "accum_steps": 2, "log_every": 1, "save_every": 2}
    reference = tiny_config(tmp_path / "reference", train=train)
    reference["data"]["val"] = []
    result = run_train(reference, tmp_path, name="reference.json")
    assert result.returncode == 0, result.stderr[-3000:]

    log = tmp_path / "calls.jsonl"
    recorded = tiny_config(tmp_path / "recorded", train=train, strategy={"type": "recording", "log": str(log)})
    recorded["data"]["val"] = []
    result = run_train(recorded, tmp_path, name="recorded.json", env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    calls = [tuple(json.loads(line)) for line in log.read_text().splitlines()]
    names = [name for name, _ in calls]
    assert names[0] == "setup" and names[-1] == "teardown" and names.count("wrap") == 1
    assert [detail for name, detail in calls if name == "accumulation"] == [False, True] * 3
    assert names.count("backward") == 6 and names.count("clip_gradients") == names.count("optimizer_step") == 3
    # checkpoints at step 2 and at the end (3): state asked of the strategy, RNG states gathered through it
    assert names.count("model_state") == names.count("optimizer_state") == 2
    assert names.count("collective:all_gather_object") == 2
    assert names.count("collective:reduce_scalars") == 2 * 3  # loss/grad norm (avg) and samples (sum), 3 records
    assert "data_shard" in names
    assert [r["loss"] for r in log_records(tmp_path / "recorded")] == [
        r["loss"] for r in log_records(tmp_path / "reference")]
    reference_weights, recorded_weights = final_weights(tmp_path / "reference"), final_weights(tmp_path / "recorded")
    assert reference_weights.keys() == recorded_weights.keys()
    for key in reference_weights:
        assert torch.equal(reference_weights[key], recorded_weights[key]), key
