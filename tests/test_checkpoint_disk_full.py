"""A checkpoint write that fails (a full disk) loses nothing and says so in one message: the
partial checkpoint never looks complete, earlier ones stay intact, and ``--resume auto`` after
freeing space ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import os

import pytest
import torch

from pgmm_core.errors import CheckpointWriteError
from pgmm_core.testing import final_weights, install_fake_distribution, run_train, tiny_config

DISK_FULL = '''
import errno
from typing import Literal

from pgmm_core.config.sections import ComponentConfig
from pgmm_core.hookspecs import hookimpl


class DiskFullAtConfig(ComponentConfig):
    type: Literal["disk_full_at"] = "disk_full_at"
    step: int
    writer: Literal["torch", "safetensors"]


def _partial_then(error):
    """A writer that gets some bytes onto the disk, then fails as a full disk makes it fail."""
    def write(obj, path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"PK" * 100)
        raise error
    return write


class DiskFullAt:
    """From the checkpoint of `step` on, the disk is full."""

    def __init__(self, config):
        self.step, self.writer = config.step, config.writer

    @hookimpl
    def pgmm_on_step_end(self, run, step, metrics):
        if step != self.step:
            return
        if self.writer == "torch":  # what torch.save raises when the disk fills during the write
            import torch
            torch.save = _partial_then(RuntimeError(
                "[enforce fail at inline_container.cc:672] . unexpected pos 4160 vs 4054"))
        else:
            import safetensors.torch
            safetensors.torch.save_file = _partial_then(
                OSError(errno.ENOSPC, "No space left on device"))


@hookimpl
def pgmm_register_callbacks(registrar):
    registrar.add("disk_full_at", DiskFullAt, DiskFullAtConfig)
'''


@pytest.fixture(scope="module")
def disk_full_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    install_fake_distribution(site, "pgmm-disk-full", "0.1.0", {"pgmm_disk_full": DISK_FULL},
                              {"disk_full": "pgmm_disk_full"})
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def _config(run_dir, **train):
    config = tiny_config(run_dir, train={"epochs": 2, "save_every": 3, "keep_last": 10, **train})
    config["data"]["val"] = []
    return config


def _failing_run(tmp_path, env, writer):
    config = _config(tmp_path / "run", callbacks=[{"type": "disk_full_at", "step": 6, "writer": writer}])
    result = run_train(config, tmp_path, name="full.json", env=env)
    assert result.returncode == CheckpointWriteError.exit_code != 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and result.stderr.count("pgmm: error:") == 1
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000003"]  # no partial directory left
    message = result.stderr
    assert f"could not write the checkpoint of step 6 to {checkpoints / 'step-000006'}" in message
    assert f"the last complete checkpoint is {checkpoints / 'step-000003'} (step 3)" in message
    assert "free on" in message and "--resume auto" in message
    return message


def test_torch_save_failing_on_a_full_disk_then_resume_is_bit_identical(tmp_path, disk_full_site):
    message = _failing_run(tmp_path, disk_full_site, "torch")
    assert "unexpected pos 4160 vs 4054" in message
    straight = tmp_path / "straight"
    assert run_train(_config(straight), tmp_path, name="straight.json").returncode == 0
    result = run_train(_config(tmp_path / "run"), tmp_path, "--resume", "auto")  # space freed
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout and "step-000003" in result.stdout
    expected, resumed = final_weights(straight), final_weights(tmp_path / "run")
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key


def test_no_space_left_from_a_file_write_names_the_disk_error(tmp_path, disk_full_site):
    message = _failing_run(tmp_path, disk_full_site, "safetensors")
    assert "No space left on device (the disk is full)" in message
