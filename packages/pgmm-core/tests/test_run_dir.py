"""The run directory's layout and its atomic bookkeeping of evaluations."""

from __future__ import annotations

import json

from pgmm_core.run_dir import RunDirectory


def test_layout_names(tmp_path):
    run = RunDirectory(tmp_path)
    assert run.config == tmp_path / "config.json" and not run.is_run()
    assert run.checkpoint(20) == tmp_path / "checkpoints" / "step-000020"
    assert run.best == tmp_path / "checkpoints" / "best.json"
    assert run.step_results(1, 40) == tmp_path / "results" / "val1_step000040.json"
    assert run.evaluation("test", 7) == tmp_path / "eval" / "test-step000007"
    assert RunDirectory.evaluation_results(tmp_path, 0).name == "results.json"
    assert RunDirectory.evaluation_results(tmp_path, 2).name == "results_2.json"


def test_metrics_history_is_replaced_from_a_step_on(tmp_path):
    run = RunDirectory(tmp_path)
    for step in (2, 4, 6):
        run.record_metrics(step, 0, {"CIDEr": float(step)})
    run.record_metrics(4, 1, {"CIDEr": 0.5})  # a redone evaluation replaces 4 and drops the later 6
    assert run.metrics_history() == [{"step": 2, "epoch": 0, "CIDEr": 2.0}, {"step": 4, "epoch": 1, "CIDEr": 0.5}]
    run.drop_metrics_after(2)
    assert [h["step"] for h in json.loads(run.metrics.read_text())] == [2]
    assert not list(tmp_path.glob(".metrics.json.*"))  # no temporary file left behind


def test_results_of_the_first_dataset_are_also_the_latest(tmp_path):
    run = RunDirectory(tmp_path)
    run.write_results(0, 8, [{"image_id": 1, "caption": "un chat"}])
    run.write_results(1, 8, [{"image_id": 2, "caption": "a dog"}])
    assert json.loads(run.results.read_text()) == [{"image_id": 1, "caption": "un chat"}]
    assert json.loads(run.step_results(1, 8).read_text()) == [{"image_id": 2, "caption": "a dog"}]
