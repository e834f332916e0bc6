"""The best checkpoint: an evaluation done after its step was saved still counts (``best.json`` and
the checkpoint's own record of its metrics), so a resumed run picks the same best as an
uninterrupted one and a finished run is not evaluated again. (``train.best_mode`` and a missing
``train.best_metric``: tests/test_objective_plugin.py.)"""

from __future__ import annotations

import json
import shutil

from pgmm_core.testing import run_train, tiny_config


def _config(run_dir, **train):
    # save_every=8 saves each epoch's last step inside the loop, before the epoch-end evaluation
    return tiny_config(run_dir, train={"epochs": 2, "save_every": 8, "keep_last": 10, **train})


def _best_by_history(history, metric="CIDEr+Bleu_4"):
    values = [(sum(h[name] for name in metric.split("+")), h["step"]) for h in history]
    best = max(values, key=lambda v: (v[0], -v[1]))
    return best[1]


def test_the_final_evaluation_of_a_saved_step_updates_best_and_meta(tmp_path):
    straight = tmp_path / "straight"
    result = run_train(_config(straight), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((straight / "metrics.json").read_text())
    assert [h["step"] for h in history] == [8, 16]
    best = json.loads((straight / "checkpoints" / "best.json").read_text())
    assert best["step"] == _best_by_history(history) and best["metric"] == "CIDEr+Bleu_4"
    for h in history:  # each checkpoint records its own evaluation
        meta = json.loads((straight / "checkpoints" / f"step-{h['step']:06d}" / "meta.json").read_text())
        assert meta["metrics_step"] == h["step"]
        assert meta["metrics"]["CIDEr"] == h["CIDEr"] and meta["metrics"]["Bleu_4"] == h["Bleu_4"]

    # continuing the finished run evaluates nothing again
    result = run_train(_config(straight), tmp_path, "--resume", "auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "nothing to train" in result.stdout and "eval " not in result.stdout
    assert json.loads((straight / "metrics.json").read_text()) == history

    # stopped after step 8's checkpoint, before its evaluation: the resumed run picks the same best
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    shutil.rmtree(run / "checkpoints" / "step-000016")
    meta_path = run / "checkpoints" / "step-000008" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta.update(metrics={}, metrics_step=-1, best=None)
    meta_path.write_text(json.dumps(meta))
    (run / "checkpoints" / "best.json").unlink()
    (run / "metrics.json").unlink()
    result = run_train(_config(run), tmp_path, "--resume", "auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text()) == history
    assert json.loads((run / "checkpoints" / "best.json").read_text()) == best
