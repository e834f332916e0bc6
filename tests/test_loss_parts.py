"""An objective's loss parts are logged beside the loss, and its own metrics are shown after an eval.

The objective here is registered in-process. Its parts are chosen so the logged values can be
worked out by hand: ``call`` is the number of the ``loss`` call (1, 2, 3, ...), ``odd`` is reported
only by odd calls, ``late`` only from the fifth call on, and ``total`` is the loss itself, as a
tensor with its graph (the trainer must detach it).
"""

from __future__ import annotations

import json
import logging
from typing import Literal

import pytest
import torch

import pgmm_core
from pgmm_core.config.loading import validate_config
from pgmm_core.config.sections import ComponentConfig
from pgmm_core.hookspecs import hookimpl
from pgmm_core.metrics import format_table
from pgmm_core.objectives.base import EvalOutput, LossOutput
from pgmm_core.plugins import PluginHost
from pgmm_core.testing import log_records, tiny_config


class PartsConfig(ComponentConfig):
    type: Literal["counted_parts"] = "counted_parts"


class ImageBatch:
    def __init__(self, images: torch.Tensor, bad: list, size_before_drop: int) -> None:
        self.images = images
        self.bad = bad
        self.size_before_drop = size_before_drop

    def __len__(self) -> int:
        return int(self.images.shape[0])


class CountedParts:
    """Regresses the query tokens onto 0.5 (image side only) and reports counted loss parts."""

    parts = frozenset({"vision", "connector"})

    def __init__(self) -> None:
        self.calls = 0

    def collate(self, samples):
        good = [s["image"] for s in samples if "bad" not in s]
        images = torch.stack(good) if good else torch.empty(0, 3, 1, 1)
        return ImageBatch(images, [s["bad"] for s in samples if "bad" in s], len(samples))

    def loss(self, model, batch):
        self.calls += 1
        error = (model.encode_image(batch.images.to(model.device)).query_embeds - 0.5).pow(2)
        loss = error.mean()
        parts = {"call": float(self.calls), "total": loss}
        if self.calls % 2 == 1:
            parts["odd"] = float(self.calls)
        if self.calls >= 5:
            parts["late"] = float(self.calls)
        return LossOutput(loss, error.numel(), parts)

    def evaluate(self, model, dataset, context):
        return EvalOutput(getattr(dataset, "name", "dataset"), [{"n": 1}, {"n": 2}],
                          {"mse": 0.0123, "neg_mse": -0.0123, "unavailable": {"x": "not here"}}, 0)


class Plugin:
    def __init__(self) -> None:
        self.step_metrics: dict[int, dict] = {}

    @hookimpl
    def pgmm_register_objectives(self, registrar):
        registrar.add("counted_parts", lambda config: CountedParts(), PartsConfig,
                      description="counted loss parts (test)")

    @hookimpl
    def pgmm_on_step_end(self, run, step, metrics):
        self.step_metrics[step] = dict(metrics)


@pytest.fixture(scope="module")
def parts_run(tmp_path_factory):
    """Four optimizer steps of two micro-batches each, logged every two steps."""
    plugin = Plugin()
    host = PluginHost(environ={})
    host.register(plugin, name="counted-parts")
    out = tmp_path_factory.mktemp("parts") / "run"
    data = tiny_config(out, train={"accum_steps": 2, "log_every": 2, "eval_every": 4, "tensorboard": True,
                                   "best_metric": "neg_mse"})
    data["objective"] = {"type": "counted_parts"}
    config = validate_config(data, host, source="loss parts test")
    logger = logging.getLogger("pgmm_core")
    messages: list[str] = []
    handler = logging.Handler(level=logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        summary = pgmm_core.train(config)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return plugin, summary, out, messages, host


def test_loss_parts_are_averaged_and_logged_beside_the_loss(parts_run):
    _, summary, out, *_ = parts_run
    assert summary["steps"] == 4
    records = [r for r in log_records(out) if "loss" in r]
    assert [r["step"] for r in records] == [2, 4]
    first, second = records
    # calls 1-4 make steps (1+2)/2 and (3+4)/2; the window averages them
    assert first["loss/call"] == pytest.approx(2.5)
    assert second["loss/call"] == pytest.approx(6.5)
    # only odd calls report `odd`: steps 1 and 3, then 5 and 7
    assert first["loss/odd"] == pytest.approx(2.0)
    assert second["loss/odd"] == pytest.approx(6.0)
    # `late` starts at call 5: absent from the first window, (5.5 + 7.5) / 2 in the second
    assert "loss/late" not in first
    assert second["loss/late"] == pytest.approx(6.5)
    # a tensor part is detached and read; the loss itself, averaged the same way, is the logged loss
    for record in records:
        assert isinstance(record["loss/total"], float)
        assert record["loss/total"] == pytest.approx(record["loss"], rel=1e-5)
    assert [k for k in first if k.startswith("loss")] == ["loss", "loss/call", "loss/odd", "loss/total"]


def test_loss_parts_reach_the_step_end_metrics_and_tensorboard(parts_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    plugin, _, out, *_ = parts_run
    assert plugin.step_metrics[1] == {} and plugin.step_metrics[3] == {}
    assert plugin.step_metrics[2]["loss/call"] == pytest.approx(2.5)
    assert plugin.step_metrics[4]["loss/late"] == pytest.approx(6.5)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    late = events.Scalars("train/loss/late")
    assert [(e.step, round(e.value, 4)) for e in late] == [(4, 6.5)]
    assert [e.step for e in events.Scalars("train/loss/call")] == [2, 4]


def test_an_objectives_own_metrics_are_shown_after_an_eval(parts_run):
    _, _, out, messages, _ = parts_run
    shown = [m for m in messages if m.startswith("eval ") and " at step 4:" in m]
    assert shown, messages
    header, values = shown[0].splitlines()[1:3]
    assert header.split() == ["mse", "|", "neg_mse"]
    assert values.split() == ["0.0123", "|", "-0.0123"]
    history = json.loads((out / "metrics.json").read_text())
    assert history[-1]["mse"] == 0.0123


def test_evaluate_counts_items_and_shows_the_objectives_metrics(parts_run, caplog, tmp_path):
    from pgmm_core.evaluate_run import evaluate_run

    _, _, out, _, host = parts_run
    caplog.set_level(logging.INFO, logger="pgmm_core")
    metrics = evaluate_run(out, checkpoint="last", out_dir=tmp_path / "eval", host=host)
    assert metrics["mse"] == 0.0123
    lines = [r.getMessage() for r in caplog.records]
    heading = next(i for i, line in enumerate(lines) if "checkpoint step-000004" in line)
    assert "(2 items, checkpoint step-000004)" in lines[heading] and "images" not in lines[heading]
    header, values = lines[heading + 1].split("\n")
    assert header.split() == ["mse", "|", "neg_mse"] and values.split() == ["0.0123", "|", "-0.0123"]


def test_format_table_keeps_the_caption_table_and_adds_other_numbers():
    caption = {"CIDEr": 0.5, "Bleu_1": 0.25, "ROUGE_L": 0.125, "unavailable": {"METEOR": "no Java"}}
    assert format_table(caption) == (f"{'Bleu_1':>8} | {'ROUGE_L':>8} | {'CIDEr':>8}\n"
                                     f"{25.0:8.2f} | {12.5:8.2f} | {50.0:8.2f}")
    mixed = {"zeta": 2, "accuracy_top1": 0.875, "CIDEr": 0.5, "flag": True, "note": "text",
             "unavailable": {"SPICE": "no jars"}}
    header, values = format_table(mixed).split("\n")
    assert header == f"{'CIDEr':>8} | accuracy_top1 | {'zeta':>8}"
    assert values == f"{50.0:8.2f} | {0.875:>13.4g} | {2:>8.4g}"
    assert format_table({"mse": 0.0123}) == f"{'mse':>8}\n{0.0123:>8.4g}"


RANKED_PLUGIN = '''
from typing import Literal

import torch
import torch.distributed as dist

from pgmm_core.config.sections import ComponentConfig
from pgmm_core.hookspecs import hookimpl
from pgmm_core.objectives.base import EvalOutput, LossOutput


class RankedConfig(ComponentConfig):
    type: Literal["ranked_parts"] = "ranked_parts"


class ImageBatch:
    def __init__(self, images, bad, size_before_drop):
        self.images, self.bad, self.size_before_drop = images, bad, size_before_drop

    def __len__(self):
        return int(self.images.shape[0])


class RankedParts:
    parts = frozenset({"vision", "connector"})

    def __init__(self, config):
        pass

    def collate(self, samples):
        good = [s["image"] for s in samples if "bad" not in s]
        images = torch.stack(good) if good else torch.empty(0, 3, 1, 1)
        return ImageBatch(images, [s["bad"] for s in samples if "bad" in s], len(samples))

    def loss(self, model, batch):
        rank = dist.get_rank()
        error = (model.encode_image(batch.images.to(model.device)).query_embeds - 0.5).pow(2)
        parts = {"rank": float(rank)}
        if rank == 1:
            parts["only_rank1"] = 3.0
        return LossOutput(error.mean(), error.numel(), parts)

    def evaluate(self, model, dataset, context):
        return EvalOutput("none", [], {"mse": 0.0}, 0)


@hookimpl
def pgmm_register_objectives(registrar):
    registrar.add("ranked_parts", RankedParts, RankedConfig, description="rank-dependent loss parts (test)")
'''


def test_loss_parts_are_averaged_over_the_ranks_that_report_them(tmp_path):
    import os
    import sys

    from pgmm_core.testing import install_fake_distribution, run_train

    site = install_fake_distribution(tmp_path / "site", "pgmm-ranked-parts", "0.1.0",
                                     {"pgmm_ranked_parts": RANKED_PLUGIN}, {"ranked_parts": "pgmm_ranked_parts"})
    data = tiny_config(tmp_path / "run", train={"max_steps": 2, "log_every": 2})
    data["data"]["val"] = []
    data["objective"] = {"type": "ranked_parts"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = run_train(data, tmp_path, launcher=launcher, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = [r for r in log_records(tmp_path / "run") if "loss" in r]
    assert record["loss/rank"] == pytest.approx(0.5)  # ranks 0 and 1, averaged
    assert record["loss/only_rank1"] == pytest.approx(3.0)  # rank 0 never had it: not averaged in
