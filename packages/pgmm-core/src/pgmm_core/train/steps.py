"""The step loop: micro-batches, gradient accumulation, loss normalisation, the optimizer step.

It knows how one optimizer step is made — the learning rate of the step, the loss of each
micro-batch, the strategy's accumulation context, backward, clipping and step — and nothing about
evaluation, checkpoints or hooks: after every optimizer step and at every epoch end it yields an
event, and the trainer decides what follows (log, evaluate, save, stop).

Loss normalisation over accumulation and ranks (``train.loss_normalization``):

``mean`` (default, LAVIS): every micro-batch contributes its mean loss / ``accum_steps``; the
strategy averages the gradients over ranks. Every micro-batch weighs the same, however many caption
tokens it holds.

``token``: every micro-batch contributes the *sum* of its per-token losses; once the step's last
micro-batch is done, the gradients are multiplied by ``world_size / T``, where ``T`` is the number
of target tokens of the whole step (all micro-batches, all ranks). With the strategy's mean over
ranks that is exactly the gradient of (sum of all the step's token losses) / T.

A step whose loss or gradient norm is not finite is skipped (:mod:`~pgmm_core.train.nonfinite`):
its gradients are cleared and the optimizer does not step, but the step still counts — the
learning-rate schedule and the data position go on, as they do when the fp16 grad scaler skips a
step. Before every optimizer step that is taken, ``before_step(step)`` is called with the
gradients in place (unscaled, clipped): the trainer's ``pgmm_on_before_optimizer_step`` event.

The loss parts an objective reports (``LossOutput.parts``) are logged beside the loss as
``loss/<name>``: each is the mean over the step's micro-batches that reported it, then the mean over
the logging window's steps that had it (skipped steps left out, like the loss), then the mean over
the ranks that had it. A part missing from a micro-batch, step or rank is not averaged in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from pgmm_core.errors import PgmmError
from pgmm_core.train.nonfinite import NonFiniteSteps
from pgmm_core.train.schedule import learning_rate


@dataclass
class Position:
    """Where training stands: optimizer steps taken, epoch, and micro-batches consumed in the epoch."""

    global_step: int = 0
    epoch: int = 0
    micro: int = 0


@dataclass
class StepEnd:
    """An optimizer step was taken. ``record`` is the logged (rank-reduced) record, empty when the
    step is not a logging step; ``position`` is where a checkpoint taken now resumes."""

    step: int
    epoch: int
    position: Position
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class EpochEnd:
    """The epoch's micro-batches are used up; ``position`` is the start of the next epoch."""

    epoch: int
    position: Position


@dataclass
class _Means:
    """Running means by name; a name missing from an :meth:`add` is not averaged in for it."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def means(self) -> dict[str, float]:
        return {name: total / self.counts[name] for name, total in self.sums.items()}


@dataclass
class _Window:
    """What the next logged record averages over."""

    loss: float = 0.0
    steps: int = 0
    samples: int = 0
    parts: _Means = field(default_factory=_Means)  # the loss parts of the steps taken
    started: float = field(default_factory=time.perf_counter)


def _part_values(parts: dict[str, Any]) -> dict[str, float]:
    """An objective's loss parts as plain floats (a tensor part is detached and read)."""
    values: dict[str, float] = {}
    for name, value in parts.items():
        try:
            values[str(name)] = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise PgmmError(f"the objective's loss part '{name}' is not a number ({value!r}): {exc}") from None
    return values


class StepLoop:
    """Turns the train loader into optimizer steps, through the strategy."""

    def __init__(self, *, train: Any, strategy: Any, module: Any, trainable: list[torch.Tensor], optimizer: Any,
                 scaler: Any, policy: Any, device: torch.device, source: Any, tracker: Any,
                 batch_size: int, steps_per_epoch: int, total_steps: int, view: Any,
                 memory_stats: Any, nonfinite: NonFiniteSteps | None = None,
                 before_step: Callable[[int], None] | None = None) -> None:
        self.train = train
        self.strategy = strategy
        self.module = module  # the strategy-wrapped module whose forward computes the loss
        self.trainable = trainable
        self.optimizer = optimizer
        self.scaler = scaler
        self.policy = policy
        self.device = device
        self.source = source  # the batches of an epoch from a micro-batch on (pgmm_core.train.sources)
        self.tracker = tracker
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps
        self.view = view
        self.memory_stats = memory_stats
        self.token_normalised = train.loss_normalization == "token"
        self.nonfinite = nonfinite or NonFiniteSteps(train.max_nonfinite_steps, strategy=strategy,
                                                     scaled=scaler is not None)
        self.before_step = before_step
        self.losses: list[float] = []  # the loss of every step taken (skipped non-finite steps are not)

    # --- the objective ------------------------------------------------------------------------------

    def _loss(self, batch: Any) -> tuple[torch.Tensor, int, dict[str, float]]:
        """One micro-batch's mean loss, its number of target tokens and its loss parts."""
        if len(batch) == 0:  # every image of this batch was unreadable: zero gradients, still in sync
            return self.strategy.zero_loss(self.trainable), 0, {}
        with self.policy.autocast():
            output = self.module(batch)  # the objective's loss, inside the strategy's wrapper
        return output.loss, int(output.num_targets), _part_values(output.parts or {})

    # --- the loop -----------------------------------------------------------------------------------

    def run(self, start: Position) -> Iterator[StepEnd | EpochEnd]:
        """Train from ``start``; yields after every optimizer step and at every epoch end. The
        caller stops the loop by no longer iterating."""
        t = self.train
        accum = t.accum_steps
        micro_limit = self.steps_per_epoch * accum
        # Images of an epoch the loader never reads: drop_last's partial batch, an unfinished accumulation.
        unread = self.source.unread_per_epoch(micro_limit)
        window = _Window()
        self.module.train()
        for epoch in range(start.epoch, t.epochs):
            first_micro = start.micro if epoch == start.epoch else 0
            batches = self.source.batches(epoch, first_micro, micro_limit)
            self.view.epoch = epoch
            micro = first_micro
            step_loss, step_targets, step_parts = 0.0, 0, _Means()
            for batch in batches:
                if micro >= micro_limit:
                    break
                self.tracker.update(batch)
                if micro % accum == 0:
                    self._set_learning_rate(epoch, micro // accum)
                last_micro = (micro + 1) % accum == 0
                with self.strategy.accumulation(sync=last_micro):
                    loss, targets, parts = self._loss(batch)
                    loss = loss * targets if self.token_normalised else loss / accum
                    self.strategy.backward(loss, self.scaler)
                step_loss += float(loss.detach())
                step_targets += targets
                step_parts.add(parts)
                window.samples += len(batch)
                micro += 1
                if not last_micro:
                    continue
                if self.token_normalised:
                    step_loss = self._normalise_by_tokens(step_loss, step_targets)
                grad_norm = self.strategy.clip_gradients(self.optimizer, self.trainable, t.grad_clip, self.scaler)
                if self.nonfinite.is_bad(step_loss, grad_norm):
                    self._skip_step()
                    self.nonfinite.skipped(self.view.step + 1, step_loss, grad_norm)
                else:
                    if self.before_step is not None:
                        self.before_step(self.view.step + 1)
                    self.strategy.optimizer_step(self.optimizer, self.scaler)
                    self.nonfinite.good()
                    self.losses.append(step_loss)
                    window.loss += step_loss
                    window.steps += 1
                    window.parts.add(step_parts.means())
                self.view.step += 1
                step_loss, step_targets, step_parts = 0.0, 0, _Means()
                if micro == micro_limit:
                    self.tracker.add_unread(unread)
                record: dict[str, Any] = {}
                if self.view.step % t.log_every == 0 or self.view.step == self.total_steps:
                    record = self._log_record(window, grad_norm, epoch, micro)
                    window = _Window()
                position = Position(self.view.step, epoch, micro) if micro < micro_limit else Position(
                    self.view.step, epoch + 1, 0)
                yield StepEnd(self.view.step, epoch, position, record)
            yield EpochEnd(epoch, Position(self.view.step, epoch + 1, 0))

    def _skip_step(self) -> None:
        """Drop a non-finite step's gradients. The optimizer's state is untouched; the fp16 grad
        scaler, which has unscaled the gradients already, is updated so it is ready for the next
        step (it lowers its scale if the gradients overflowed, as when it skips a step itself)."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.update()

    def _set_learning_rate(self, epoch: int, step_in_epoch: int) -> None:
        lr = learning_rate(self.train, epoch=epoch, step_in_epoch=step_in_epoch, global_step=self.view.step,
                           total_steps=self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _normalise_by_tokens(self, loss_sum: float, targets: int) -> float:
        """Scale the step's summed gradients to the mean over all its target tokens (every rank);
        returns this rank's share of the step's mean loss (their average over ranks is the mean)."""
        collectives = self.strategy.collectives
        total = int(collectives.all_reduce(torch.tensor(targets, dtype=torch.int64), op="sum"))
        if total == 0:
            return 0.0
        factor = self.strategy.world_size / total
        self.strategy.scale_gradients(self.trainable, factor)
        return loss_sum * factor

    def _log_record(self, window: _Window, grad_norm: float, epoch: int, micro: int) -> dict[str, Any]:
        collectives = self.strategy.collectives
        seconds = time.perf_counter() - window.started
        loss = window.loss / window.steps if window.steps else math.nan  # every step of the window skipped
        parts = window.parts.means()
        names = self._part_names(parts)
        # a rank without a part sends 0 for it; the ranks that had it are counted beside the samples
        reduced = collectives.reduce_scalars(
            {"loss": loss, "grad_norm": grad_norm, **{f"loss/{n}": parts.get(n, 0.0) for n in names}},
            op="avg", device=self.device)
        summed = collectives.reduce_scalars(
            {"samples": float(window.samples), **{f"ranks/{n}": float(n in parts) for n in names}},
            op="sum", device=self.device)
        total_samples = summed["samples"]
        world = self.strategy.world_size
        loss_parts = {}
        for n in names:
            having = summed[f"ranks/{n}"]
            value = reduced[f"loss/{n}"]
            loss_parts[f"loss/{n}"] = value if having == world else value * world / having
        record = {
            "epoch": epoch,
            "loss": reduced["loss"],
            **loss_parts,
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": reduced["grad_norm"],
            "samples_per_s": total_samples / max(seconds, 1e-9),
            "bad_images": self.tracker.bad,
            "nonfinite_steps": self.nonfinite.total,
            **self.memory_stats(),
        }
        record.update(self._dataset_counts(epoch, micro))
        if self.scaler is not None:
            record["loss_scale"] = float(self.scaler.get_scale())
        return record

    def _dataset_counts(self, epoch: int, micro: int) -> dict[str, int]:
        """``samples/<dataset>``: samples drawn from each dataset so far, over all ranks (mixed data only)."""
        counts = self.source.counts(epoch, micro)
        if not counts:
            return {}
        summed = self.strategy.collectives.reduce_scalars({k: float(v) for k, v in counts.items()}, op="sum",
                                                          device=self.device)
        return {f"samples/{name}": int(round(value)) for name, value in summed.items()}

    def _part_names(self, parts: dict[str, float]) -> list[str]:
        """The loss parts any rank has in this window, the same sorted list on every rank (their
        values then cross in the loss's collective; a single process exchanges nothing)."""
        if self.strategy.world_size == 1:
            return sorted(parts)
        return sorted(set().union(*self.strategy.collectives.all_gather_object(sorted(parts))))
