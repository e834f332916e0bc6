"""The evaluator evaluates every objective in eval mode and without autograd, and puts the model back."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from pgmm_core.objectives.base import EvalOutput
from pgmm_core.train.evaluator import Evaluator


class _Recording:
    """An objective whose evaluate only records how it was called."""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, bool, bool]] = []

    def evaluate(self, model, dataset, context):
        dropout_output = model(torch.ones(64))
        self.seen.append((model.training, torch.is_grad_enabled(), bool(torch.equal(dropout_output, torch.ones(64)))))
        return EvalOutput("toy", [], {"value": 1.0})


def test_objectives_are_evaluated_in_eval_mode_without_grad():
    config = SimpleNamespace(data=SimpleNamespace(eval_batch_size=None, batch_size=2, num_workers=0),
                             eval=SimpleNamespace(), train=SimpleNamespace(eval_every=None))
    objective = _Recording()
    model = nn.Dropout(0.5)
    model.train()
    evaluator = Evaluator(config, objective, ["dataset"], device=torch.device("cpu"), policy=None,
                          collectives=None, is_main=True)
    evaluation = evaluator.run(model, step=3)
    assert objective.seen == [(False, False, True)]  # eval mode, no autograd, dropout off
    assert model.training  # left as it was found
    assert evaluation.metrics == {"value": 1.0} and evaluator.metrics_at(3) == {"value": 1.0}
