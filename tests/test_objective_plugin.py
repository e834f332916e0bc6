"""The objective seam, proven by use: a plugin outside the core adds an objective and trains with it.

The toy objective regresses the Q-Former's query tokens onto a constant. It needs only the image side
(vision + connector), so the LLM must not be built — its config points at a directory that would be
created if it were. It brings its own batch type, collate and evaluation (a mean squared error), and
``python -m pgmm_core.train`` trains with it without a change to any core file.
"""

from __future__ import annotations

import json
import os

from pgmm_core.testing import install_fake_distribution, log_records, run_train, tiny_config

PLUGIN = '''
from typing import Literal

from pydantic import Field

from pgmm_core.config.sections import ComponentConfig
from pgmm_core.hookspecs import hookimpl


class QueryRegressionConfig(ComponentConfig):
    type: Literal["query_regression"] = "query_regression"
    target: float = Field(0.5, description="the value every query-token feature is pulled towards")


@hookimpl
def pgmm_register_objectives(registrar):
    registrar.add("query_regression", "pgmm_toy_objective_impl:QueryRegression", QueryRegressionConfig,
                  description="query tokens regressed onto a constant (image side only)")
'''

IMPL = '''
from dataclasses import dataclass

import torch

from pgmm_core.objectives.base import EvalOutput, LossOutput


@dataclass
class ImageBatch:
    images: torch.Tensor
    bad: list
    size_before_drop: int

    def __len__(self):
        return int(self.images.shape[0])


class QueryRegression:
    parts = frozenset({"vision", "connector"})

    def __init__(self, config):
        self.target = config.target
        self.loss_calls = 0

    def collate(self, samples):
        good = [s["image"] for s in samples if "bad" not in s]
        images = torch.stack(good) if good else torch.empty(0, 3, 1, 1)
        return ImageBatch(images, [s["bad"] for s in samples if "bad" in s], len(samples))

    def loss(self, model, batch):
        if model.llm is not None or model.projector is not None:
            raise AssertionError("the image-side objective got a model with an LLM or a projector")
        queries = model.encode_image(batch.images.to(model.device)).query_embeds
        error = (queries - self.target).pow(2)
        return LossOutput(error.mean(), error.numel(), {"max_error": float(error.detach().max())})

    def evaluate(self, model, dataset, context):
        total, count = 0.0, 0
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for batch in context.shard_loader(dataset, self.collate):
                if len(batch):
                    queries = model.encode_image(batch.images.to(context.device)).query_embeds
                    total += float((queries - self.target).pow(2).sum())
                    count += queries.numel()
        model.train(was_training)
        shares = context.gather((total, count))
        mse = sum(t for t, _ in shares) / max(sum(c for _, c in shares), 1)
        return EvalOutput(getattr(dataset, "name", "dataset"), [{"mse": mse, "values": count}],
                          {"mse": mse, "neg_mse": -mse}, 0)
'''


def test_a_plugin_objective_trains_the_image_side_alone(tmp_path):
    site = install_fake_distribution(tmp_path / "site", "pgmm-toy-objective", "0.1.0",
                                     {"pgmm_toy_objective": PLUGIN, "pgmm_toy_objective_impl": IMPL},
                                     {"toy_objective": "pgmm_toy_objective"})
    out = tmp_path / "run"
    never_built = tmp_path / "llm-that-must-not-be-built"
    config = tiny_config(out, train={"max_steps": 6, "log_every": 1, "eval_every": 3, "save_every": 3,
                                     "lr": 0.01, "warmup_steps": 0, "min_lr": 0.01, "best_metric": "neg_mse"})
    config["objective"] = {"type": "query_regression", "target": 0.5}
    config["model"]["llm"]["path"] = str(never_built)
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = run_train(config, tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    assert not never_built.exists(), "the LLM was built for an objective that does not need it"
    saved = json.loads((out / "config.json").read_text())
    assert saved["objective"] == {"type": "query_regression", "target": 0.5}

    losses = [r["loss"] for r in log_records(out) if "loss" in r]
    assert len(losses) == 6 and all(0.0 < loss < 10.0 for loss in losses)
    assert losses[-1] < losses[0], losses

    history = json.loads((out / "metrics.json").read_text())
    assert [h["step"] for h in history] == [3, 6]
    assert history[1]["mse"] < history[0]["mse"] and history[1]["neg_mse"] == -history[1]["mse"]
    results = json.loads((out / "results.json").read_text())
    assert results[0]["mse"] == history[1]["mse"] and results[0]["values"] > 0
    best = json.loads((out / "checkpoints" / "best.json").read_text())
    assert best == {"step": 6, "metric": "neg_mse", "value": history[1]["neg_mse"]}

    from safetensors.torch import load_file

    weights = load_file(str(out / "checkpoints" / "step-000006" / "model.safetensors"))
    assert {key.split(".")[0] for key in weights} == {"ln_vision", "connector"}  # no projector, frozen tower


def _toy_objective_run(tmp_path, **train):
    site = install_fake_distribution(tmp_path / "site", "pgmm-toy-objective", "0.1.0",
                                     {"pgmm_toy_objective": PLUGIN, "pgmm_toy_objective_impl": IMPL},
                                     {"toy_objective": "pgmm_toy_objective"})
    out = tmp_path / "run"
    config = tiny_config(out, train={"max_steps": 6, "eval_every": 2, "save_every": 2, "keep_last": 10,
                                     "lr": 0.01, "warmup_steps": 0, "min_lr": 0.01, **train})
    config["objective"] = {"type": "query_regression", "target": 0.5}
    result = run_train(config, tmp_path, env={"PYTHONPATH": os.pathsep.join(
        [str(site), os.environ.get("PYTHONPATH", "")])})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result


def test_best_mode_min_picks_the_lowest_error(tmp_path):
    out, _ = _toy_objective_run(tmp_path, best_metric="mse", best_mode="min")
    history = json.loads((out / "metrics.json").read_text())
    lowest = min(history, key=lambda h: h["mse"])
    highest = max(history, key=lambda h: h["mse"])
    assert lowest["step"] != highest["step"]
    best = json.loads((out / "checkpoints" / "best.json").read_text())
    assert best == {"step": lowest["step"], "metric": "mse", "value": lowest["mse"]}


def test_a_best_metric_the_evaluation_does_not_report_is_warned_once(tmp_path):
    out, result = _toy_objective_run(tmp_path)  # the default CIDEr+Bleu_4; the objective reports mse
    warnings = [line for line in (result.stdout + result.stderr).splitlines()
                if "train.best_metric=CIDEr+Bleu_4" in line]
    assert len(warnings) == 1, result.stdout[-3000:]
    assert "CIDEr, Bleu_4" in warnings[0] and "mse, neg_mse" in warnings[0]
    assert "no best checkpoint is tracked" in warnings[0]
    assert not (out / "checkpoints" / "best.json").exists()
    assert len(json.loads((out / "metrics.json").read_text())) == 3
