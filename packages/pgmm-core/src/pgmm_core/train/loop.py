"""The trainer: wires the owners of a run together and fires the event hooks.

Each job has one owner: the strategy (processes, wrapping, gradient sync, optimizer step, state
for checkpoints), the step loop (:mod:`~pgmm_core.train.steps`), the evaluator
(:mod:`~pgmm_core.train.evaluator`), the checkpoint manager (:mod:`~pgmm_core.train.checkpointing`),
the run directory (:mod:`pgmm_core.run_dir`), the run logs (:mod:`~pgmm_core.train.logging`) and
the callbacks of the config (:mod:`~pgmm_core.train.run_callbacks`). The trainer decides what
follows each step — log, evaluate, save, stop — and tells the plugins.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pgmm_core import frozen_weights
from pgmm_core.config.loading import config_to_json
from pgmm_core.devices.select import select_device_backend
from pgmm_core.errors import ConfigError, TooManyBadImagesError, TrainingDivergedError
from pgmm_core.metrics import format_table
from pgmm_core.run_dir import RunDirectory
from pgmm_core.run_state import RunView
from pgmm_core.train import checkpoint as ckpt
from pgmm_core.train import rng
from pgmm_core.train.build import Built, build_run
from pgmm_core.train.checkpointing import CheckpointManager
from pgmm_core.train.evaluator import Evaluator
from pgmm_core.train.interrupt import InterruptFlag
from pgmm_core.train.logging import RunLogger
from pgmm_core.train.lost_peer import explain_lost_peer
from pgmm_core.train.resume_checks import changes_since_checkpoint
from pgmm_core.train.nonfinite import NonFiniteSteps
from pgmm_core.train.run_callbacks import RunCallbacks
from pgmm_core.train.steps import EpochEnd, Position, StepLoop

__all__ = ["Position", "Trainer", "TrainingInterrupted", "refuse_to_mix_runs"]

logger = logging.getLogger(__name__)


def refuse_to_mix_runs(output_dir: Path, resume: str | None) -> None:
    """A fresh run into a directory that holds another run's checkpoints would interleave the two
    (logs appended, best checkpoint compared across runs, ``--resume auto`` picking the old one)."""
    if resume and resume != "none":
        return
    existing = ckpt.list_checkpoints(RunDirectory(output_dir).checkpoints)
    if existing:
        raise ConfigError([
            f"train.output_dir: {output_dir} already holds a run (checkpoints up to {existing[-1].name}); "
            "continue it with --resume auto, or choose another train.output_dir (or remove that directory)"
        ])


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after a completed step whose checkpoint is saved: ``--resume auto`` goes on."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"interrupted after step {step}; checkpoint {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


class Trainer:
    def __init__(self, config: Any, *, resume: str | None = None) -> None:
        self.config = config
        self.host = config.host
        self.resume = resume
        self.run_dir = RunDirectory(config.train.output_dir)
        self.strategy: Any = None
        self.built: Built | None = None
        self.callbacks: RunCallbacks | None = None
        self.evaluator: Evaluator | None = None
        self.checkpoints: CheckpointManager | None = None
        self.loop: StepLoop | None = None
        self.nonfinite: NonFiniteSteps | None = None
        self.logger: RunLogger | None = None
        self.view: RunView | None = None
        self.interrupt = InterruptFlag(enabled=False, announce=self._message)
        self.last_position: Position | None = None

    # --- entry ------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        backend = select_device_backend(self.config.device, self.host)  # fails before any work
        self.strategy = self.host.build("strategy", self.config.strategy, device_backend=backend)
        refuse_to_mix_runs(self.run_dir.root, self.resume)
        try:
            with explain_lost_peer(self.strategy, self.run_dir):
                device = self.strategy.setup()
                return self._run(device)
        finally:
            # the model, optimizer and loaders hold the process groups: let them go first, so that
            # teardown frees the groups while the interpreter is whole
            self.built = self.loop = self.evaluator = self.checkpoints = self.view = None
            self.strategy.teardown()

    def _wire(self, device: Any) -> Position:
        """Build the run, its owners and the callbacks; resume; returns where training starts."""
        cfg, strategy = self.config, self.strategy
        self.built = built = build_run(cfg, strategy, device)
        self.callbacks = RunCallbacks(self.host, cfg.train.callbacks)
        self.nonfinite = NonFiniteSteps(cfg.train.max_nonfinite_steps, strategy=strategy,
                                        scaled=built.scaler is not None)
        self.evaluator = Evaluator(cfg, built.objective, built.val_sets, device=device, policy=built.policy,
                                   collectives=strategy.collectives, is_main=strategy.is_main,
                                   scope=strategy.evaluation)
        self.checkpoints = CheckpointManager(
            run_dir=self.run_dir, train=cfg.train, strategy=strategy, model=built.model, optimizer=built.optimizer,
            scaler=built.scaler, evaluator=self.evaluator, batch_size=cfg.data.batch_size, message=self._message,
            parts={"bad_images": built.tracker, "callbacks": self.callbacks, "nonfinite": self.nonfinite},
            rank_parts={"data": built.source})
        found = self.checkpoints.find(self.resume)
        return self.checkpoints.load(found, cfg.train.seed) if found is not None else Position()

    def _run(self, device: Any) -> dict[str, Any]:
        position = self._wire(device)
        cfg, t, built, strategy = self.config, self.config.train, self.built, self.strategy
        if strategy.is_main:
            if position.global_step:
                for warning in changes_since_checkpoint(self.run_dir, self.config, built.frozen_prints):
                    self._warn(warning)
            self.run_dir.drop_metrics_after(position.global_step)
            self.run_dir.write_text(self.run_dir.config, config_to_json(cfg))
            self.run_dir.write_text(self.run_dir.frozen_weights, frozen_weights.to_json(built.frozen_prints))
            self.run_dir.write_text(self.run_dir.image_spec, built.image_spec.to_json())
        self.logger = RunLogger(self.run_dir.root, enabled=strategy.is_main, tensorboard=t.tensorboard,
                                total_steps=built.total_steps, initial_step=position.global_step)
        counts = built.model.parameter_counts()
        self._message(f"device: {strategy.device_backend.describe()}; precision {built.policy.name}; "
                      f"world size {strategy.world_size}")
        self._message(f"parameters: {counts['trainable']:,} trainable, {counts['frozen']:,} frozen; "
                      f"{built.total_steps} steps ({built.steps_per_epoch}/epoch), "
                      f"global batch {cfg.data.batch_size * strategy.world_size * t.accum_steps}")
        self.view = view = RunView(cfg, self.run_dir.root, strategy.rank, strategy.world_size, built.model,
                                   step=position.global_step, epoch=position.epoch)
        self.loop = StepLoop(
            train=t, strategy=strategy, module=built.module, trainable=built.trainable, optimizer=built.optimizer,
            scaler=built.scaler, policy=built.policy, device=device, source=built.source,
            tracker=built.tracker, batch_size=cfg.data.batch_size, steps_per_epoch=built.steps_per_epoch,
            total_steps=built.total_steps, view=view, memory_stats=strategy.device_backend.memory_stats,
            nonfinite=self.nonfinite, before_step=self._before_optimizer_step)
        self.interrupt = InterruptFlag(enabled=strategy.world_size == 1, announce=self._message)
        try:
            self.callbacks.register()
            self.host.call_event("pgmm_on_train_start", run=view)
            with self._explain_stops():
                with self.interrupt.armed():
                    self._evaluate_pending(position)
                    self._train(position)
                if not self.evaluator.has_evaluated(view.step) and built.val_sets:
                    self._evaluate(view.step, view.epoch)
                self._save_unless_saved(self.last_position or Position(view.step, view.epoch, 0))
            return self._finish()
        finally:
            self.callbacks.unregister()
            self.logger.close()

    def _finish(self) -> dict[str, Any]:
        losses, tracker, view = self.loop.losses, self.built.tracker, self.view
        summary = {"steps": view.step, "first_loss": losses[0] if losses else None,
                   "last_loss": losses[-1] if losses else None, "metrics": self.evaluator.last_metrics,
                   "bad_images": tracker.bad, "unread_images": tracker.unread,
                   "nonfinite_steps": self.nonfinite.total, "stop_reason": view.stop_reason,
                   "output_dir": str(self.run_dir.root)}
        if tracker.bad:
            self._message(f"{tracker.bad} unreadable image(s) were skipped in total "
                          f"(examples: {'; '.join(tracker.examples[:3])})")
        if tracker.unread:
            self._message(f"{tracker.unread} image(s) were never read: each epoch's last partial batch "
                          "is dropped")
        if self.nonfinite.total:
            self._message(f"{self.nonfinite.total} step(s) with a non-finite loss or gradient norm were skipped")
        self.host.call_event("pgmm_on_train_end", run=view, summary=summary)
        return summary

    # --- what follows each step -------------------------------------------------------------------

    @contextlib.contextmanager
    def _explain_stops(self) -> Iterator[None]:
        """A run stopped by its data or by divergence says which checkpoint is the last good one."""
        try:
            yield
        except (TooManyBadImagesError, TrainingDivergedError) as exc:
            raise type(exc)(f"{exc}\n{self._last_good_checkpoint()}") from None

    def _last_good_checkpoint(self) -> str:
        found = ckpt.latest_complete(self.run_dir.checkpoints)
        if found is None:
            return "No checkpoint was saved before it: once fixed, start the run again."
        return (f"The last good checkpoint is {found[0]} (step {found[1]['step']}): once fixed, continue "
                "from it with the same command and --resume auto.")

    def _before_optimizer_step(self, step: int) -> None:
        self.host.call_event("pgmm_on_before_optimizer_step", run=self.view, step=step)

    def _train(self, start: Position) -> None:
        view, total = self.view, self.built.total_steps
        if start.global_step >= total:
            self.last_position = start
            self._message(f"the run is already at step {start.global_step} of {total}: nothing to train")
            return
        for event in self.loop.run(start):
            if isinstance(event, EpochEnd):
                self.built.tracker.check()  # whatever the number of images read
                self._report_bad_images(event.epoch)
                self.last_position = event.position
                if self.evaluator.should_evaluate(view.step, epoch_end=True):
                    self._evaluate_unless_interrupted(event.position)
                if self.checkpoints.due(view.step, epoch_end=True):
                    self._save(event.position)
                if view.stop_reason is not None:
                    return
                continue
            if event.step >= total or event.position.epoch > event.epoch:
                self.built.tracker.check()  # the run's or the epoch's last step: before evaluating, saving
            self.logger.step(event.step, event.record)
            self.host.call_event("pgmm_on_step_end", run=view, step=event.step, metrics=event.record)
            if self.evaluator.should_evaluate(event.step, epoch_end=False):
                self._evaluate_unless_interrupted(event.position)
            if self.checkpoints.due(event.step, epoch_end=False):
                self._save(event.position)
            self._stop_if_interrupted(event.position)
            if event.step >= total or view.stop_reason is not None:
                self.last_position = event.position
                self._report_bad_images(event.epoch)
                return

    def _report_bad_images(self, epoch: int) -> None:
        bad = self.built.tracker.end_epoch()
        if bad:
            self._message(f"epoch {epoch}: skipped {bad} unreadable image(s)")

    def _save(self, position: Position) -> None:
        path = self.checkpoints.save(position)
        if path is not None:
            self.host.call_event("pgmm_on_checkpoint_saved", run=self.view, step=position.global_step, path=str(path))

    def _save_unless_saved(self, position: Position) -> None:
        if self.checkpoints.saved_step != position.global_step:
            self._save(position)

    # --- interruption -----------------------------------------------------------------------------

    def _stop_if_interrupted(self, position: Position) -> None:
        if not self.interrupt.requested:
            return
        self._save_unless_saved(position)
        raise TrainingInterrupted(position.global_step, self.run_dir.checkpoint(position.global_step))

    def _evaluate_unless_interrupted(self, position: Position) -> None:
        """Ctrl-C reaches the scorers' Java processes too; when they die of it, the evaluation is
        abandoned and the interrupted step is saved, as promised, instead of failing the run."""
        try:
            self._evaluate(position.global_step, self.view.epoch)
        except Exception:
            if not self.interrupt.requested:
                raise
            self._message("interrupt: evaluation abandoned")
        self._stop_if_interrupted(position)

    def _evaluate_pending(self, position: Position) -> None:
        """A resumed run first does the evaluation that was due at its checkpoint but did not finish
        (abandoned by Ctrl-C), so ``metrics.json`` and the best checkpoint miss no step. The RNG
        state is put back afterwards: the training that follows is the uninterrupted run's."""
        step, backend = position.global_step, self.strategy.device_backend
        if not step or self.evaluator.has_evaluated(step) or step >= self.built.total_steps:
            return  # (the final evaluation is done after the loop in any case)
        at_epoch_end = position.micro == 0
        due = self.evaluator.should_evaluate(step, epoch_end=False) or (
            at_epoch_end and self.evaluator.should_evaluate(step, epoch_end=True))
        if not due:
            return
        self._message(f"evaluating step {step} first: its evaluation did not finish")
        state = rng.capture(backend)
        try:
            self._evaluate(step, position.epoch - 1 if at_epoch_end else position.epoch)
        except Exception:
            if not self.interrupt.requested:
                raise
            raise TrainingInterrupted(step, self.run_dir.checkpoint(step)) from None
        rng.restore(state, backend)

    # --- evaluation -------------------------------------------------------------------------------

    def _evaluate(self, step: int, epoch: int) -> None:
        main = self.strategy.is_main

        def report(index: int, result: Any) -> None:
            if not main:
                return
            self.run_dir.write_results(index, step, result.results)
            self._message(f"eval {result.name} at step {step}:\n{format_table(result.metrics)}")
            if result.bad_images:
                self._message(f"  {result.bad_images} unreadable image(s) skipped: not scored")
            unavailable = result.metrics.get("unavailable")
            if unavailable:
                self._message("  unavailable: " + "; ".join(f"{k}: {v}" for k, v in unavailable.items()))

        metrics = self.evaluator.run(self.built.model, step, on_result=report).metrics
        if main:
            self.run_dir.record_metrics(step, epoch, metrics)
            self.logger.scalars("eval", step, metrics)
        if self.checkpoints.saved_step == step:  # saved before this evaluation (epoch or run end, resumed)
            self.checkpoints.record_best(step)
        self.host.call_event("pgmm_on_eval_end", run=self.view, step=step, metrics=metrics)

    # --- messages ---------------------------------------------------------------------------------

    def _message(self, text: str) -> None:
        """A message for the user, from rank 0 (the CLI shows INFO records; see pgmm_core.logs)."""
        if self.strategy is None or self.strategy.is_main:
            logger.info(text)

    def _warn(self, text: str) -> None:
        if self.strategy is None or self.strategy.is_main:
            logger.warning(text)
