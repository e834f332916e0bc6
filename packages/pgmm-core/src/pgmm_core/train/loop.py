"""The training loop: LAVIS stage-2 recipe, accumulation, mixed precision, DDP, eval, checkpoints."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pgmm_core import frozen_weights
from pgmm_core.config.loading import changed_paths, config_to_json
from pgmm_core.data import BadImageTracker, ResumableSampler, make_loader
from pgmm_core.devices.select import select_device_backend
from pgmm_core.errors import CheckpointError, ConfigError, DataError
from pgmm_core.metrics import format_table
from pgmm_core.metrics_expr import evaluate_metric_expression
from pgmm_core.model import build_model
from pgmm_core.objectives.base import EvalContext, ObjectiveModule
from pgmm_core.preprocessing import IMAGE_SPEC_FILE, encoder_image_spec
from pgmm_core.run_state import RunView
from pgmm_core.train import checkpoint as ckpt
from pgmm_core.train import rng
from pgmm_core.train.distributed import DistEnv, destroy_process_group, init_process_group
from pgmm_core.train.logging import RunLogger
from pgmm_core.train.optim import build_optimizer
from pgmm_core.train.schedule import learning_rate


def refuse_to_mix_runs(output_dir: Path, resume: str | None) -> None:
    """A fresh run into a directory that holds another run's checkpoints would interleave the two
    (logs appended, best checkpoint compared across runs, ``--resume auto`` picking the old one)."""
    if resume and resume != "none":
        return
    existing = ckpt.list_checkpoints(output_dir / "checkpoints")
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


@dataclass
class Position:
    """Where training stands: optimizer steps taken, epoch, and micro-batches consumed in the epoch."""

    global_step: int = 0
    epoch: int = 0
    micro: int = 0


class Trainer:
    def __init__(self, config: Any, *, resume: str | None = None) -> None:
        self.config = config
        self.host = config.host
        self.resume = resume

    # --- entry ------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.env = DistEnv.from_environ()
        self.backend = select_device_backend(self.config.device, self.host)  # fails before any work
        refuse_to_mix_runs(Path(self.config.train.output_dir), self.resume)
        self.device = self.backend.setup(self.env.local_rank)
        init_process_group(self.env, self.backend.dist_backend, self.device)
        try:
            return self._run()
        finally:
            destroy_process_group()

    # --- setup ------------------------------------------------------------------------------------

    def _build(self) -> None:
        cfg, t = self.config, self.config.train
        self.out = Path(t.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.collectives = self.backend.collectives
        self.policy = self.backend.precision_policy()
        rng.seed_everything(t.seed, self.backend)  # identical initialisation on every rank
        self.objective = self.host.build("objective", cfg.objective)
        self.model = build_model(cfg, self.objective.parts, policy=self.policy)
        self.frozen_prints = self.model.frozen_fingerprint  # taken before the precision policy's cast
        self.model.to(self.device)
        rng.seed_everything(t.seed + self.env.rank, self.backend)  # LAVIS: per-rank stream for dropout
        self.image_spec = encoder_image_spec(self.model.vision)
        spec = {"image_spec": self.image_spec, "image_size": self.image_spec.size}
        build = self.host.build
        self.train_sets = [build("dataset", d, split="train", **spec) for d in cfg.data.train]
        self.val_sets = [build("dataset", d, split="val", **spec) for d in cfg.data.val]
        self.batch_size = cfg.data.batch_size
        self.sampler = ResumableSampler([len(d) for d in self.train_sets], num_replicas=self.env.world_size,
                                        rank=self.env.rank, seed=t.seed, weights=cfg.data.train_weights)
        self.loader = make_loader(self.train_sets, self.sampler, batch_size=self.batch_size,
                                  num_workers=cfg.data.num_workers, drop_last=True, seed=t.seed,
                                  collate_fn=self.objective.collate)
        micro_per_epoch = self.sampler.per_rank // self.batch_size
        self.steps_per_epoch = micro_per_epoch // t.accum_steps
        if self.steps_per_epoch == 0:
            raise DataError(
                f"the train data ({self.sampler.total} samples over {self.env.world_size} rank(s)) is smaller than "
                f"one optimizer step (batch_size {self.batch_size} x accum_steps {t.accum_steps})"
            )
        self.total_steps = self.steps_per_epoch * t.epochs
        if t.max_steps is not None:
            self.total_steps = min(self.total_steps, t.max_steps)
        self.optimizer = build_optimizer(self.model, t)
        self.scaler = self.policy.grad_scaler()
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.ddp: nn.Module = ObjectiveModule(self.model, self.objective)
        self.distributed = self.env.distributed
        if self.env.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type != "cpu" else None
            self.ddp = DistributedDataParallel(self.ddp, device_ids=ids)
        self.tracker = BadImageTracker(cfg.data.max_bad_fraction, collectives=self.collectives, device=self.device)
        self.best: dict[str, Any] | None = None
        self.last_metrics: dict[str, Any] = {}
        self.metrics_step = -1
        self.saved_step = -1

    # --- resume -----------------------------------------------------------------------------------

    def _resume(self) -> Position:
        if not self.resume or self.resume == "none":
            return Position()
        if self.resume == "auto":
            found = ckpt.latest_complete(self.ckpt_root)
            if found is None:
                self._message(f"--resume auto: no complete checkpoint in {self.ckpt_root}; starting fresh")
                return Position()
            path = found[0]
        else:
            path = Path(self.resume)
        shapes = {k: tuple(v.shape) for k, v in self.model.trainable_state_dict().items()}
        weights, state, meta = ckpt.load_checkpoint(path, shapes)
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        if unexpected:
            raise CheckpointError(f"{path}: unexpected weights {unexpected[:5]}")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rng_states = state["rng"]
        if len(rng_states) != self.env.world_size:
            self._message(f"resuming {len(rng_states)}-rank RNG state on {self.env.world_size} rank(s): "
                          "data order is exact, dropout streams are re-seeded")
            rng.seed_everything(self.config.train.seed + self.env.rank + meta["step"], self.backend)
        else:
            rng.restore(rng_states[self.env.rank], self.backend)
        if meta.get("bad_images"):
            self.tracker.load_state_dict(meta["bad_images"])
        self.best = meta.get("best")
        self.last_metrics = meta.get("metrics", {})
        self.metrics_step = meta.get("metrics_step", -1)
        self.saved_step = meta["step"]
        self._message(f"resumed from {path} (step {meta['step']}, epoch {meta['epoch']}, "
                      f"micro-batch {meta['micro']})")
        return Position(meta["step"], meta["epoch"], meta["micro"])

    # --- the loop ---------------------------------------------------------------------------------

    def _run(self) -> dict[str, Any]:
        self._build()
        t = self.config.train
        position = self._resume()
        main = self.env.is_main
        if main:
            if position.global_step:
                self._warn_about_changes_since_checkpoint()
            self._drop_metrics_after(position.global_step)
            ckpt.atomic_write_text(self.out / "config.json", config_to_json(self.config))
            ckpt.atomic_write_text(self.out / frozen_weights.FILE_NAME, frozen_weights.to_json(self.frozen_prints))
            ckpt.atomic_write_text(self.out / IMAGE_SPEC_FILE, self.image_spec.to_json())
        self.logger = RunLogger(self.out, enabled=main, tensorboard=t.tensorboard,
                                total_steps=self.total_steps, initial_step=position.global_step)
        counts = self.model.parameter_counts()
        self._message(f"device: {self.backend.describe()}; precision {self.policy.name}; "
                      f"world size {self.env.world_size}")
        self._message(f"parameters: {counts['trainable']:,} trainable, {counts['frozen']:,} frozen; "
                      f"{self.total_steps} steps ({self.steps_per_epoch}/epoch), "
                      f"global batch {self.batch_size * self.env.world_size * t.accum_steps}")
        self.view = RunView(self.config, self.out, self.env.rank, self.env.world_size, self.model,
                            step=position.global_step, epoch=position.epoch)
        callback_names = self._register_callbacks()
        losses: list[float] = []
        try:
            self.host.call_event("pgmm_on_train_start", run=self.view)
            with self._graceful_interrupt():
                self._evaluate_pending(position)
                losses = self._epochs(position)
            if self.metrics_step != self.view.step and self.val_sets:
                self._evaluate(self.view.step, self.view.epoch)
            if self.saved_step != self.view.step:
                self._save(self._position_now())
            summary = {"steps": self.view.step, "first_loss": losses[0] if losses else None,
                       "last_loss": losses[-1] if losses else None, "metrics": self.last_metrics,
                       "bad_images": self.tracker.bad, "stop_reason": self.view.stop_reason,
                       "output_dir": str(self.out)}
            if self.tracker.bad:
                self._message(f"{self.tracker.bad} unreadable image(s) were skipped in total "
                              f"(examples: {'; '.join(self.tracker.examples[:3])})")
            self.host.call_event("pgmm_on_train_end", run=self.view, summary=summary)
            return summary
        finally:
            for name in callback_names:
                self.host.unregister(name)
            self.logger.close()

    @contextlib.contextmanager
    def _graceful_interrupt(self):
        """First Ctrl-C: finish the current step, save a checkpoint, stop (:class:`TrainingInterrupted`).
        A second one stops at once. Single-process runs only: under torchrun the ranks would have to
        agree on the step, and the launcher stops its workers itself."""
        self._interrupt_requested = False
        if self.env.distributed or threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_interrupt(signum: int, frame: Any) -> None:
            if self._interrupt_requested:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self._interrupt_requested = True
            self._message("interrupt: finishing this step, then saving a checkpoint (Ctrl-C again to stop now)")

        previous = signal.signal(signal.SIGINT, on_interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _evaluate_unless_interrupted(self, position: Position) -> None:
        """Ctrl-C reaches the scorers' Java processes too; when they die of it, the evaluation is
        abandoned and the interrupted step is saved, as promised, instead of failing the run."""
        try:
            self._evaluate(position.global_step, self.view.epoch)
        except Exception:
            if not self._interrupt_requested:
                raise
            self._message("interrupt: evaluation abandoned")
        self._stop_if_interrupted(position)

    def _evaluate_pending(self, position: Position) -> None:
        """A resumed run first does the evaluation that was due at its checkpoint but did not finish
        (abandoned by Ctrl-C), so ``metrics.json`` and the best checkpoint miss no step. The RNG
        state is put back afterwards: the training that follows is the uninterrupted run's."""
        step, t = position.global_step, self.config.train
        if not step or not self.val_sets or self.metrics_step == step or step >= self.total_steps:
            return  # (the final evaluation is done after the loop in any case)
        at_epoch_end = position.micro == 0
        if not ((t.eval_every and step % t.eval_every == 0) or (t.eval_every is None and at_epoch_end)):
            return
        self._message(f"evaluating step {step} first: its evaluation did not finish")
        state = rng.capture(self.backend)
        try:
            self._evaluate(step, position.epoch - 1 if at_epoch_end else position.epoch)
        except Exception:
            if not self._interrupt_requested:
                raise
            raise TrainingInterrupted(step, self.ckpt_root / f"step-{step:06d}") from None
        rng.restore(state, self.backend)
        self._record_best(step)

    def _stop_if_interrupted(self, position: Position) -> None:
        if not self._interrupt_requested:
            return
        if self.saved_step != position.global_step:
            self._save(position)
        raise TrainingInterrupted(position.global_step, self.ckpt_root / f"step-{position.global_step:06d}")

    def _warn_about_changes_since_checkpoint(self) -> None:
        """A resumed run continues with the config given now; say what differs from the run's own,
        since a changed batch size or dataset changes the data order the checkpoint's position means."""
        saved_path = self.out / "config.json"
        if saved_path.is_file():
            before = json.loads(saved_path.read_text(encoding="utf-8"))
            changed = [p for p in changed_paths(before, json.loads(config_to_json(self.config)))
                       if p != "train.output_dir"]  # a run directory copied or moved elsewhere
            if changed:
                shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
                self._message(f"warning: resuming with a config that differs from the run's in {shown}; "
                              f"the previous one is kept as config.previous.json")
                ckpt.atomic_write_text(self.out / "config.previous.json", saved_path.read_text(encoding="utf-8"))
        changed_parts = frozen_weights.differing_parts(self.out, self.frozen_prints)
        if changed_parts:
            self._message(f"warning: {frozen_weights.mismatch_warning(self.out, changed_parts)}")

    def _register_callbacks(self) -> list[str]:
        names = []
        for i, cb_config in enumerate(self.config.train.callbacks):
            name = f"run-callback-{i}-{cb_config.type}"
            self.host.register(self.host.build("callback", cb_config), name=name)
            names.append(name)
        return names

    def _epochs(self, start: Position) -> list[float]:
        t = self.config.train
        accum = t.accum_steps
        micro_limit = self.steps_per_epoch * accum
        losses: list[float] = []
        window_loss, window_steps, window_samples = 0.0, 0, 0
        window_start = time.perf_counter()
        if start.global_step >= self.total_steps:
            self._last_position = start
            self._message(f"the run is already at step {start.global_step} of {self.total_steps}: nothing to train")
            return losses
        self.ddp.train()
        for epoch in range(start.epoch, t.epochs):
            first_micro = start.micro if epoch == start.epoch else 0
            self.sampler.set_epoch(epoch, start=first_micro * self.batch_size)
            self.view.epoch = epoch
            micro = first_micro
            step_loss = 0.0
            for batch in self.loader:
                if micro >= micro_limit:
                    break
                self.tracker.update(batch)
                if micro % accum == 0:
                    lr = learning_rate(t, epoch=epoch, step_in_epoch=micro // accum,
                                       global_step=self.view.step, total_steps=self.total_steps)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                last_micro = (micro + 1) % accum == 0
                sync = contextlib.nullcontext() if last_micro or not self.distributed else self.ddp.no_sync()
                with sync:
                    loss = self._micro_loss(batch) / accum
                    (self.scaler.scale(loss) if self.scaler else loss).backward()
                step_loss += float(loss.detach())
                window_samples += len(batch)
                micro += 1
                if not last_micro:
                    continue
                grad_norm = self._optimizer_step()
                self.view.step += 1
                losses.append(step_loss)
                window_loss += step_loss
                window_steps += 1
                step_loss = 0.0
                record: dict[str, Any] = {}
                if self.view.step % t.log_every == 0 or self.view.step == self.total_steps:
                    record = self._log_record(window_loss / window_steps, grad_norm, epoch,
                                              window_samples, time.perf_counter() - window_start)
                    window_loss, window_steps, window_samples = 0.0, 0, 0
                    window_start = time.perf_counter()
                self.logger.step(self.view.step, record)
                self.host.call_event("pgmm_on_step_end", run=self.view, step=self.view.step, metrics=record)
                position = Position(self.view.step, epoch, micro) if micro < micro_limit else Position(
                    self.view.step, epoch + 1, 0)
                if t.eval_every and self.view.step % t.eval_every == 0 and self.val_sets:
                    self._evaluate_unless_interrupted(position)
                if t.save_every and self.view.step % t.save_every == 0:
                    self._save(position)
                self._stop_if_interrupted(position)
                if self.view.step >= self.total_steps or self.view.stop_reason is not None:
                    self._last_position = position
                    self._report_bad_images(epoch)
                    return losses
            self._report_bad_images(epoch)
            self._last_position = Position(self.view.step, epoch + 1, 0)
            if t.eval_every is None and self.val_sets:
                self._evaluate_unless_interrupted(self._last_position)
            if t.save_every is None:
                self._save(self._last_position)
            if self.view.stop_reason is not None:
                break
        return losses

    def _report_bad_images(self, epoch: int) -> None:
        bad = self.tracker.end_epoch()
        if bad:
            self._message(f"epoch {epoch}: skipped {bad} unreadable image(s)")

    def _position_now(self) -> Position:
        return getattr(self, "_last_position", Position(self.view.step, self.view.epoch, 0))

    def _micro_loss(self, batch: Any) -> torch.Tensor:
        if len(batch) == 0:  # every image in this batch was unreadable: keep DDP in step with zero grads
            return sum(p.sum() * 0.0 for p in self.trainable)
        with self.policy.autocast():
            output = self.ddp(batch)
        return output.loss

    def _optimizer_step(self) -> float:
        t = self.config.train
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if t.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.trainable, t.grad_clip)
        else:
            grads = [p.grad for p in self.trainable if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])) \
                if grads else torch.zeros(())
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def _log_record(self, loss: float, grad_norm: float, epoch: int, samples: int, seconds: float) -> dict[str, Any]:
        reduced = self.collectives.reduce_scalars({"loss": loss, "grad_norm": grad_norm}, op="avg",
                                                  device=self.device)
        total_samples = self.collectives.reduce_scalars({"samples": float(samples)}, op="sum",
                                                        device=self.device)["samples"]
        record = {
            "epoch": epoch,
            "loss": reduced["loss"],
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": reduced["grad_norm"],
            "samples_per_s": total_samples / max(seconds, 1e-9),
            "bad_images": self.tracker.bad,
            **self.backend.memory_stats(),
        }
        if self.scaler is not None:
            record["loss_scale"] = float(self.scaler.get_scale())
        return record

    # --- evaluation and checkpoints ---------------------------------------------------------------

    def _evaluate(self, step: int, epoch: int) -> None:
        cfg = self.config
        merged: dict[str, Any] = {}
        context = EvalContext(device=self.device, policy=self.policy, collectives=self.collectives,
                              batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
                              num_workers=cfg.data.num_workers, eval=cfg.eval, progress=self.env.is_main)
        for i, dataset in enumerate(self.val_sets):
            result = self.objective.evaluate(self.model, dataset, context)
            prefix = "" if i == 0 else f"{result.name}/"
            merged.update({f"{prefix}{k}": v for k, v in result.metrics.items() if k != "unavailable"})
            if self.env.is_main:
                results_dir = self.out / "results"
                text = json.dumps(result.results, ensure_ascii=False)
                ckpt.atomic_write_text(results_dir / f"val{i}_step{step:06d}.json", text)
                if i == 0:
                    ckpt.atomic_write_text(self.out / "results.json", text)
                self._message(f"eval {result.name} at step {step}:\n{format_table(result.metrics)}")
                if result.bad_images:
                    self._message(f"  {result.bad_images} unreadable image(s) skipped: not scored")
                if result.metrics.get("unavailable"):
                    self._message("  unavailable: " + "; ".join(f"{k}: {v}" for k, v in result.metrics["unavailable"].items()))
        self.last_metrics, self.metrics_step = merged, step
        if self.env.is_main:
            history_path = self.out / "metrics.json"
            history = json.loads(history_path.read_text()) if history_path.is_file() else []
            history = [h for h in history if h["step"] < step] + [{"step": step, "epoch": epoch, **merged}]
            ckpt.atomic_write_text(history_path, json.dumps(history, indent=2) + "\n")
            self.logger.scalars("eval", step, merged)
        self.host.call_event("pgmm_on_eval_end", run=self.view, step=step, metrics=merged)

    def _save(self, position: Position) -> None:
        t = self.config.train
        rng_states = self.collectives.all_gather_object(self.backend.to_serializable(rng.capture(self.backend)))
        self.saved_step = position.global_step
        if not self.env.is_main:
            return
        metrics = self.last_metrics if self.metrics_step == position.global_step else {}
        self._update_best(position.global_step)
        state = {
            "optimizer": self.backend.to_serializable(self.optimizer.state_dict()),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_states,
        }
        meta = {"epoch": position.epoch, "micro": position.micro, "metrics": metrics,
                "metrics_step": self.metrics_step, "best": self.best, "world_size": self.env.world_size,
                "bad_images": self.tracker.state_dict(),
                "batch_size": self.batch_size, "created": time.time()}
        path = ckpt.save_checkpoint(self.ckpt_root, position.global_step,
                                    self.backend.to_serializable(self.model.trainable_state_dict()), state, meta)
        protect = {path}
        if self.best is not None:
            protect.add(self.ckpt_root / f"step-{self.best['step']:06d}")
            ckpt.atomic_write_text(self.ckpt_root / "best.json", json.dumps(self.best, indent=2) + "\n")
        ckpt.prune(self.ckpt_root, t.keep_last, protect)
        self.host.call_event("pgmm_on_checkpoint_saved", run=self.view, step=position.global_step, path=str(path))

    def _update_best(self, step: int) -> bool:
        """Take the metrics of ``step`` (if they are the latest) into account for the best checkpoint."""
        metrics = self.last_metrics if self.metrics_step == step else {}
        value = evaluate_metric_expression(self.config.train.best_metric, metrics) if metrics else None
        if value is not None and (self.best is None or value > self.best["value"]):
            self.best = {"step": step, "metric": self.config.train.best_metric, "value": value}
            return True
        return False

    def _record_best(self, step: int) -> None:
        if self._update_best(step) and self.env.is_main:
            ckpt.atomic_write_text(self.ckpt_root / "best.json", json.dumps(self.best, indent=2) + "\n")

    def _drop_metrics_after(self, step: int) -> None:
        """Evaluations after the step the run starts from belong to work that is about to be redone."""
        path = self.out / "metrics.json"
        if not path.is_file():
            return
        history = json.loads(path.read_text(encoding="utf-8"))
        kept = [h for h in history if h.get("step", 0) <= step]
        if len(kept) != len(history):
            ckpt.atomic_write_text(path, json.dumps(kept, indent=2) + "\n")

    def _message(self, text: str) -> None:
        if self.env.is_main:
            logger = getattr(self, "logger", None)
            if logger is not None:
                logger.message(text)
            else:
                print(text, flush=True)
