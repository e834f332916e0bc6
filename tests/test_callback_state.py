"""Callback state is checkpointed: a resumed run's early stopping remembers its best value and its
patience count, and stops at the same step as the uninterrupted run."""

from __future__ import annotations

import json

import pgmm_core
from pgmm_core.config.loading import validate_config
from pgmm_core.plugins import PluginHost
from pgmm_core.testing import tiny_config

STOPPER = {"type": "early_stopping", "metric": "Bleu_1", "patience": 2, "min_delta": 1.0}


def _config(run_dir, **train):
    # nothing can improve Bleu_1 by 1.0: evaluations at 2 (best), 4 (1 bad), 6 (2 bad: stop)
    data = tiny_config(run_dir, train={"epochs": 4, "eval_every": 2, "save_every": 2, "keep_last": 10,
                                       "lr": 1e-12, "min_lr": 0.0, "warmup_lr": 0.0,
                                       "callbacks": [dict(STOPPER)], **train},
                       eval={"java": "no-such-java"})
    data["data"]["val"][0]["num_samples"] = 2
    return validate_config(data, PluginHost(environ={}))


def test_resumed_early_stopping_remembers_best_and_patience(tmp_path):
    straight = pgmm_core.train(_config(tmp_path / "straight"))
    assert straight["steps"] == 6 and "early stopping" in straight["stop_reason"]

    run = tmp_path / "run"
    first = pgmm_core.train(_config(run, max_steps=4))  # stops at step 4, one evaluation without improvement
    assert first["steps"] == 4 and first["stop_reason"] is None
    meta = json.loads((run / "checkpoints" / "step-000004" / "meta.json").read_text())
    state = meta["callbacks"]["run-callback-0-early_stopping"]
    assert state["bad_evals"] == 1 and state["best"] == straight_best(tmp_path / "straight")

    resumed = pgmm_core.train(_config(run), resume="auto")
    # without the saved state the callback would start over at step 6 and stop only at step 10
    assert resumed["steps"] == 6 and resumed["stop_reason"] == straight["stop_reason"]


def straight_best(run_dir) -> float:
    """Bleu_1 of the first evaluation: the best value early stopping keeps."""
    return json.loads((run_dir / "metrics.json").read_text())[0]["Bleu_1"]
