"""What an objective is, what it returns, and what the trainer wraps around it.

An objective decides what training means: which model parts it needs, what a batch holds (its
``collate``), the loss (and its logged parts), and how a model is evaluated on a dataset. The
trainer knows only these names, so stage-1 Q-Former pretraining, VQA or instruction tuning are new
objectives in their own modules, registered with ``pgmm_register_objectives``, not branches in the
step loop. Plugins import this module (it is public API); the built-in ``caption`` objective
(BLIP-2 stage 2) is :mod:`pgmm_core.objectives.caption`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from pgmm_core.config.sections import MODEL_PARTS, ObjectiveConfig

__all__ = ["MODEL_PARTS", "Batch", "EvalContext", "EvalOutput", "LossOutput", "Objective", "ObjectiveConfig",
           "ObjectiveModule"]


@dataclass
class LossOutput:
    """One micro-batch's loss.

    ``loss`` is a scalar tensor with a graph: the mean over the micro-batch's targets (what the
    trainer back-propagates, divided by the accumulation steps under the default ``mean``
    normalisation — LAVIS's). ``num_targets`` counts the targets the mean ran over (caption tokens,
    pairs, answers), for token-weighted normalisation. ``parts`` are named components of the loss
    (``{"itc": 1.2, "itm": 0.6}``), detached numbers (a tensor is read with ``float``), logged beside
    the total as ``loss/<name>`` (``loss/itc``) in ``log.jsonl``, TensorBoard and the
    ``pgmm_on_step_end`` metrics: the mean over the micro-batches, steps and ranks that reported the
    part (one may be missing from some batches). An objective with one loss leaves it empty.
    """

    loss: torch.Tensor
    num_targets: int
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class EvalOutput:
    """One dataset's evaluation, the same on every rank: ``results`` (JSON-native, written to the run's
    ``results.json``), ``metrics`` (numbers; an ``unavailable`` entry may map a metric to why it was
    not computed), and how many unreadable images were skipped."""

    name: str
    results: list[Any]
    metrics: dict[str, Any]
    bad_images: int = 0


class Batch(Protocol):
    """What the trainer reads from a collated batch (everything else is the objective's).

    ``len(batch)`` counts usable samples (0: every image was unreadable; the trainer then skips the
    loss), ``bad`` lists the reasons of dropped samples and ``size_before_drop`` the samples drawn.
    """

    bad: list[str]
    size_before_drop: int

    def __len__(self) -> int: ...


@dataclass
class EvalContext:
    """What an objective's ``evaluate`` runs with: the run's device and precision policy, the device
    backend's collectives (every rank calls ``evaluate``), the eval batch size and loader workers,
    whether to show a progress bar (rank 0), and the ``eval`` config section."""

    device: torch.device
    policy: Any
    collectives: Any
    batch_size: int
    num_workers: int
    eval: Any
    progress: bool = False

    @property
    def rank(self) -> int:
        from pgmm_core.devices.collectives import rank

        return rank()

    @property
    def world_size(self) -> int:
        from pgmm_core.devices.collectives import world_size

        return world_size()

    def shard_loader(self, dataset: Any, collate: Callable[[list[dict[str, Any]]], Any], *,
                     max_items: int | None = None) -> Iterable[Any]:
        """This rank's share of ``dataset`` (items ``rank, rank + R, ...`` of the first ``max_items``,
        no padding: every item is evaluated exactly once over all ranks), batched by ``collate``."""
        from pgmm_core.data import EvalShardSampler, make_loader

        size = len(dataset) if max_items is None else min(len(dataset), max_items)
        sampler = EvalShardSampler(size, num_replicas=self.world_size, rank=self.rank)
        loader = make_loader([dataset], sampler, batch_size=self.batch_size, num_workers=self.num_workers,
                             drop_last=False, collate_fn=collate)
        if not self.progress:
            return loader
        from tqdm.auto import tqdm

        return tqdm(loader, desc=f"eval {getattr(dataset, 'name', 'dataset')}", leave=False, dynamic_ncols=True)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        return self.collectives.all_gather_object(obj)


@runtime_checkable
class Objective(Protocol):
    """A training objective (built by a factory registered with ``pgmm_register_objectives``).

    * ``parts``: the model parts to build, a subset of :data:`MODEL_PARTS` (``{"vision",
      "connector"}`` for image-side pretraining: the LLM is then not built).
    * ``collate(samples)``: the DataLoader's ``collate_fn`` for train and eval items; returns a
      :class:`Batch`.
    * ``loss(model, batch)``: the micro-batch's :class:`LossOutput`, never called with an empty batch.
      It runs inside the strategy-wrapped :class:`ObjectiveModule` and under the precision policy's
      autocast; it moves what it needs to ``model.device``. Objectives hold no parameters: whatever
      is trained belongs to the model.
    * ``evaluate(model, dataset, context)``: called on every rank; returns the same
      :class:`EvalOutput` on every rank (use ``context.shard_loader`` and ``context.gather``).
    """

    parts: frozenset[str]

    def collate(self, samples: list[dict[str, Any]]) -> Any: ...

    def loss(self, model: nn.Module, batch: Any) -> LossOutput: ...

    def evaluate(self, model: nn.Module, dataset: Any, context: EvalContext) -> EvalOutput: ...


class ObjectiveModule(nn.Module):
    """``forward(batch) -> objective.loss(model, batch)``: the module a strategy wraps.

    Distributed data parallelism synchronises gradients through the wrapped module's forward, so the
    loss must be computed inside it; this module owns nothing but ``model``'s parameters (its state
    dict keys are ``model.*``).
    """

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Any) -> LossOutput:
        return self.objective.loss(self.model, batch)
