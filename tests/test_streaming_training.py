"""Training from WebDataset shards mixed with an indexable dataset: a run SIGKILLed mid-epoch and
resumed from its checkpoint (which holds the stream's position per rank and worker) ends with the
uninterrupted run's weights, bit for bit, and logs how many samples each dataset gave."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys

import pytest
import torch

from pgmm_core.testing import final_weights, install_fake_distribution, log_records, run_train, tiny_config
from pgmm_data.testing_shards import write_caption_shards

pytestmark = pytest.mark.slow  # several tiny training runs, some under torchrun

KILLER = '''
import os
import signal
from typing import Literal

from pgmm_core.config.sections import ComponentConfig
from pgmm_core.hookspecs import hookimpl


class DieAtConfig(ComponentConfig):
    type: Literal["die_at"] = "die_at"
    step: int


class DieAt:
    """Dies like an OOM-killed process right after the checkpoint of `step` is on disk."""

    def __init__(self, config):
        self.step = config.step

    @hookimpl
    def pgmm_on_checkpoint_saved(self, run, step, path):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


@hookimpl
def pgmm_register_callbacks(registrar):
    registrar.add("die_at", DieAt, DieAtConfig)
'''


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_caption_shards(tmp_path_factory.mktemp("shards"), shards=4, per_shard=4, size=(40, 36))


@pytest.fixture(scope="module")
def killer_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    install_fake_distribution(site, "pgmm-die-at", "0.1.0", {"pgmm_die_at": KILLER}, {"die_at": "pgmm_die_at"})
    return site


def _config(run_dir, shards, **train):
    config = tiny_config(run_dir, train={"epochs": 2, "save_every": 3, "keep_last": 10, "log_every": 1, **train})
    config["data"].update(
        train=[{"type": "synthetic_shapes", "num_samples": 16, "seed": 0},
               {"type": "webdataset_captions", "shards": shards.pattern, "buffer_size": 3}],
        train_weights=[1.0, 1.0], val=[], num_workers=2)
    return config


def test_sigkill_mid_epoch_then_resume_is_bit_identical(shards, tmp_path, killer_site):
    straight_dir = tmp_path / "straight"
    result = run_train(_config(straight_dir, shards), tmp_path, name="straight.json")
    assert result.returncode == 0, result.stderr[-3000:]
    records = log_records(straight_dir)
    assert [r["step"] for r in records][-1] == 8  # 32 samples an epoch, batch 8: 4 steps x 2 epochs
    counts = [(r["samples/synthetic_shapes"], r["samples/webdataset_captions"]) for r in records]
    assert all(a + b == 8 * r["step"] for (a, b), r in zip(counts, records))
    assert 0.3 < counts[-1][1] / 64 < 0.7  # equal weights

    env = {"PYTHONPATH": os.pathsep.join([str(killer_site), os.environ.get("PYTHONPATH", "")])}
    run = tmp_path / "run"
    killed = _config(run, shards, callbacks=[{"type": "die_at", "step": 6}])
    result = run_train(killed, tmp_path, name="killed.json", env=env)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    meta = json.loads((run / "checkpoints" / "step-000006" / "meta.json").read_text())
    assert meta["micro"] == 2 and meta["epoch"] == 1  # mid-epoch
    position = meta["data"][0]["loader"]["_snapshot"]["_worker_snapshots"]
    assert set(position) == {"worker_0", "worker_1"}  # each worker's stream position, for rank 0
    assert "buffer" in json.dumps(position)

    fewer_workers = _config(run, shards)
    fewer_workers["data"]["num_workers"] = 0
    result = run_train(fewer_workers, tmp_path, "--resume", "auto")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "data.num_workers=2" in result.stderr  # the stream position is per worker

    result = run_train(_config(run, shards), tmp_path, "--resume", "auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout + result.stderr
    straight, resumed = final_weights(straight_dir), final_weights(run)
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    resumed_counts = {r["step"]: (r["samples/synthetic_shapes"], r["samples/webdataset_captions"])
                      for r in log_records(run)}
    assert resumed_counts[8] == counts[-1]  # the mixing position went on where it was



def test_two_ranks_save_and_resume_their_own_stream_positions(tmp_path):
    """Under torchrun each rank reads its own shards; the checkpoint holds both ranks' positions, and
    the run resumed from a mid-epoch checkpoint with two ranks ends as the uninterrupted one."""
    shards = write_caption_shards(tmp_path / "shards", shards=8, per_shard=3, size=(40, 36))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

    def config(run_dir):
        c = tiny_config(run_dir, train={"epochs": 2, "save_every": 2, "keep_last": 10, "log_every": 1})
        c["data"].update(train=[{"type": "webdataset_captions", "shards": shards.pattern, "buffer_size": 2}],
                         val=[], num_workers=2, batch_size=4)
        return c

    straight = tmp_path / "straight"
    result = run_train(config(straight), tmp_path, name="straight.json", launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["step"] for r in log_records(straight)][-1] == 6  # 24 samples / (2 ranks x 4): 3 steps x 2 epochs
    meta = json.loads((straight / "checkpoints" / "step-000002" / "meta.json").read_text())
    assert meta["micro"] == 2 and len(meta["data"]) == 2  # one stream position per rank
    ranks = [json.dumps(state["loader"]["_snapshot"]["_worker_snapshots"], sort_keys=True) for state in meta["data"]]
    assert ranks[0] != ranks[1]

    run = tmp_path / "run"
    shutil.copytree(straight, run)
    for later in ("step-000004", "step-000006"):  # as if killed after the checkpoint of step 2
        shutil.rmtree(run / "checkpoints" / later)
    (run / "checkpoints" / "best.json").unlink(missing_ok=True)
    one_rank = run_train(config(run), tmp_path, "--resume", "auto", name="one.json")
    assert one_rank.returncode != 0 and "saved by 2 rank(s)" in one_rank.stderr
    result = run_train(config(run), tmp_path, "--resume", "auto", name="resumed.json", launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(step 2, epoch 0, micro-batch 2)" in result.stdout + result.stderr
    expected, resumed = final_weights(straight), final_weights(run)
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
