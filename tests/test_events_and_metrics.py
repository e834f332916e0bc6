"""Callbacks receive the trainer's events through the plugin hooks; metrics are pycocoevalcap's."""

from __future__ import annotations

import json
import shutil

import pytest

import pgmm_core
from pgmm_core.config.loading import validate_config
from pgmm_core.hookspecs import hookimpl
from pgmm_core.metrics import caption_metrics
from pgmm_core.plugins import PluginHost
from pgmm_core.testing import tiny_config


class Recorder:
    def __init__(self, stop_at=None):
        self.events = []
        self.stop_at = stop_at

    @hookimpl
    def pgmm_on_train_start(self, run):
        self.events.append(("start", run.step))

    @hookimpl
    def pgmm_on_step_end(self, run, step, metrics):
        self.events.append(("step", step, bool(metrics)))
        if step == self.stop_at:
            run.request_stop("recorder asked to stop")

    @hookimpl
    def pgmm_on_eval_end(self, run, step, metrics):
        self.events.append(("eval", step, "CIDEr" in metrics))

    @hookimpl
    def pgmm_on_checkpoint_saved(self, run, step, path):
        self.events.append(("saved", step))

    @hookimpl
    def pgmm_on_train_end(self, run, summary):
        self.events.append(("end", summary["steps"], summary["stop_reason"]))


def test_events_in_order_and_request_stop(tmp_path):
    host = PluginHost(environ={})
    recorder = Recorder(stop_at=3)
    host.register(recorder, name="recorder")
    config = validate_config(tiny_config(tmp_path / "run", train={"eval_every": 2, "save_every": 2},
                                         eval={"java": "no-such-java"}), host)
    summary = pgmm_core.train(config)
    assert summary["steps"] == 3 and summary["stop_reason"] == "recorder asked to stop"
    assert recorder.events == [
        ("start", 0), ("step", 1, False), ("step", 2, True), ("eval", 2, True), ("saved", 2),
        ("step", 3, False), ("eval", 3, True), ("saved", 3), ("end", 3, "recorder asked to stop")]
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["step"] for h in history] == [2, 3]


def test_early_stopping_callback_from_config(tmp_path):
    host = PluginHost(environ={})
    recorder = Recorder()
    host.register(recorder, name="recorder")
    config = validate_config(tiny_config(tmp_path / "run", train={
        "epochs": 4, "eval_every": 1, "lr": 1e-12, "min_lr": 0.0, "warmup_lr": 0.0,
        "callbacks": [{"type": "early_stopping", "metric": "Bleu_1", "patience": 2, "min_delta": 1.0}]},
        eval={"java": "no-such-java"}), host)
    summary = pgmm_core.train(config)
    # nothing can improve Bleu_1 by 1.0: the run stops after the first eval plus `patience` more
    assert summary["steps"] == 3 and "early stopping" in summary["stop_reason"]


REFERENCES = {
    1: ["a red circle in the top left", "a red circle at the top left"],
    2: ["a blue square in the center", "a blue square at the center"],
    3: ["a green star in the bottom right", "a green star at the bottom right"],
}


def test_metrics_of_perfect_and_wrong_captions():
    perfect = caption_metrics({k: v[0] for k, v in REFERENCES.items()}, REFERENCES)
    wrong = caption_metrics({1: "two dogs", 2: "a plate of food", 3: "snow"}, REFERENCES)
    assert perfect["Bleu_4"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["CIDEr"] > 1.0 and wrong["CIDEr"] < 0.1
    assert perfect["ROUGE_L"] == pytest.approx(1.0)
    if shutil.which("java"):
        assert perfect["METEOR"] > 0.9 and wrong["METEOR"] < 0.2
    assert "SPICE" in perfect["unavailable"]


def test_metrics_without_java_are_reported_unavailable():
    scores = caption_metrics({k: v[0] for k, v in REFERENCES.items()}, REFERENCES, java="no-such-java")
    assert "METEOR" not in scores and "METEOR" in scores["unavailable"]
    assert scores["Bleu_4"] == pytest.approx(1.0, abs=1e-6)


def test_request_stop_reason_is_shown_and_ends_the_cli_final_line(tmp_path):
    """The reason given to request_stop reaches the user: logged when asked, and in the last line."""
    from pgmm_core.testing import run_train

    config = tiny_config(tmp_path / "run", train={
        "epochs": 4, "eval_every": 1, "lr": 1e-12, "min_lr": 0.0, "warmup_lr": 0.0,
        "callbacks": [{"type": "early_stopping", "metric": "Bleu_1", "patience": 2, "min_delta": 1.0}]},
        eval={"java": "no-such-java"})
    config["data"]["val"] = [{"type": "synthetic_shapes", "num_samples": 2, "seed": 0}]
    result = run_train(config, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("stopping after step 3: early stopping") for line in lines), result.stdout
    assert lines[-1].startswith("pgmm: done: 3 steps, loss ") and "; stopped early: early stopping" in lines[-1]
