"""A resumed run's logs hold each step once, and METEOR's Java process cannot hang an interrupted exit."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import types

from pgmm_core.metrics import stop_meteor
from pgmm_core.train.logging import RunLogger


def test_resumed_logger_drops_records_after_the_checkpoint(tmp_path):
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in range(1, 11)]
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + '\n{"step": 11, "lo', encoding="utf-8")
    logger = RunLogger(tmp_path, enabled=True, tensorboard=False, total_steps=20, initial_step=6)
    logger.step(7, {"loss": 0.5, "lr": 1e-4})
    logger.close()
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6, 7]


def test_fresh_logger_drops_what_an_unsaved_earlier_run_left(tmp_path):
    (tmp_path / "log.jsonl").write_text(json.dumps({"step": 3}) + "\n", encoding="utf-8")
    logger = RunLogger(tmp_path, enabled=True, tensorboard=False, total_steps=5)
    logger.step(1, {"loss": 0.5, "lr": 1e-4})
    logger.close()
    assert [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()] == [1]


def test_stopping_meteor_with_its_lock_held_does_not_hang():
    """Ctrl-C inside ``Meteor.compute_score`` leaves its lock held; ``Meteor.__del__`` then blocked forever."""
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = types.SimpleNamespace(
        meteor_p=subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.PIPE),
        lock=threading.Lock(),
    )
    meteor.lock.acquire()  # as an interrupted compute_score leaves it
    stop_meteor(meteor)
    assert meteor.meteor_p.returncode is not None
    finished = threading.Event()

    def finalize():
        Meteor.__del__(meteor)
        finished.set()

    threading.Thread(target=finalize, daemon=True).start()
    assert finished.wait(10), "Meteor.__del__ blocked on the lock"


def test_checkpoints_and_run_files_follow_the_umask(tmp_path):
    import os
    import stat

    import torch

    from pgmm_core.train.checkpoint import atomic_write_text, save_checkpoint

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "config.json", "{}")
        step = save_checkpoint(tmp_path / "checkpoints", 3, {"w": torch.zeros(2)}, {"x": 1}, {"epoch": 0})
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "config.json") == 0o644
    assert mode(step) == 0o755
    assert mode(step / "model.safetensors") == 0o644 and mode(step / "meta.json") == 0o644


def test_checkpoint_paths_that_are_not_checkpoints_say_what_they_are(tmp_path):
    import pytest

    from pgmm_core.errors import CheckpointError
    from pgmm_core.train.checkpoint import verify_checkpoint

    with pytest.raises(CheckpointError, match="does not exist"):
        verify_checkpoint(tmp_path / "nothing")
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(CheckpointError, match="is a file"):
        verify_checkpoint(tmp_path / "file.json")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="is a run directory.*--resume auto"):
        verify_checkpoint(tmp_path / "run")


def test_running_the_demo_again_keeps_the_earlier_run_beside_it(tmp_path):
    from pgmm_core.train.__main__ import _move_earlier_demo_aside

    run = tmp_path / "tiny"
    (run / "checkpoints" / "step-000010").mkdir(parents=True)
    (tmp_path / "tiny.1").mkdir()
    _move_earlier_demo_aside(run)
    assert not run.exists() and (tmp_path / "tiny.2" / "checkpoints" / "step-000010").is_dir()
