"""Checkpoints of a run: when to save, what a checkpoint holds, resuming from one, the best one.

The manager saves the state of every stateful part of training:

* the position (step, epoch, micro-batch in the epoch) and the evaluator's latest metrics;
* the trainable weights and the optimizer state, through the strategy (a sharded strategy gathers
  or writes shards; the built-in ones hand rank 0 the whole state);
* the grad scaler, every rank's random generators;
* the named parts given to it (``state_dict()``/``load_state_dict()``: bad-image counts, callbacks),
  and the per-rank parts, whose states differ by rank (the train data's stream position): gathered
  from every rank, saved as a list, each rank restoring its own;
* the best checkpoint so far (``best.json``), and pruning to ``train.keep_last``.

Every rank calls :meth:`maybe_save`, :meth:`save` and :meth:`load` (collectives happen inside);
only the strategy's writing rank touches the disk. The on-disk format is
:mod:`pgmm_core.train.checkpoint`'s (atomic directories, sizes and hashes checked on load).

Two things stop a save, on every rank alike: weights that are not finite (NaN or infinite weights
are never written over good ones: :class:`~pgmm_core.errors.TrainingDivergedError`), and a write
that fails — a full disk, a quota, a lost mount (:class:`~pgmm_core.errors.CheckpointWriteError`,
one message naming the error, the path, the last complete checkpoint and how to resume). The
partial checkpoint is removed by the atomic write, so nothing that looks complete is left behind.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError

from pgmm_core.errors import CheckpointError, CheckpointWriteError, TrainingDivergedError
from pgmm_core.metrics_expr import evaluate_metric_expression, is_better, metric_names
from pgmm_core.train import checkpoint as ckpt
from pgmm_core.train import rng
from pgmm_core.train.steps import Position

logger = logging.getLogger(__name__)


class Stateful(Protocol):
    """A part of training whose JSON-native state a checkpoint keeps."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class CheckpointManager:
    def __init__(self, *, run_dir: Any, train: Any, strategy: Any, model: Any, optimizer: Any, scaler: Any,
                 evaluator: Any, parts: dict[str, Stateful], batch_size: int, message: Any,
                 rank_parts: dict[str, Stateful] | None = None) -> None:
        self.run_dir = run_dir
        self.train = train
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.evaluator = evaluator
        self.parts = parts
        self.rank_parts = rank_parts or {}
        self.batch_size = batch_size
        self.message = message
        self.best: dict[str, Any] | None = None
        self.saved_step = -1
        self.last_saved: Path | None = None
        self.warned_metric_missing = False

    # --- saving -----------------------------------------------------------------------------------

    def due(self, step: int, *, epoch_end: bool) -> bool:
        """``train.save_every`` steps, or (without it) every epoch end."""
        every = self.train.save_every
        return every is None if epoch_end else bool(every) and step % every == 0

    def maybe_save(self, position: Position, *, epoch_end: bool = False) -> Path | None:
        if not self.due(position.global_step, epoch_end=epoch_end):
            return None
        return self.save(position)

    def save_unless_saved(self, position: Position) -> Path | None:
        if self.saved_step == position.global_step:
            return None
        return self.save(position)

    def save(self, position: Position) -> Path | None:
        """Save ``position``; returns the checkpoint's path on the writing rank, ``None`` elsewhere."""
        self._refuse_nonfinite_weights(position.global_step)
        rng_states, rank_states = self._gather_rank_states()
        weights = self.strategy.model_state(self.model)
        optimizer_state = self.strategy.optimizer_state(self.optimizer)
        failure: CheckpointWriteError | None = None
        path = None
        if self.strategy.is_main:
            try:
                path = self._write(position, weights, optimizer_state, rng_states, rank_states)
            except (OSError, RuntimeError, SafetensorError) as exc:
                failure = self._write_failure(position.global_step, exc)
        if self.strategy.world_size > 1:  # every rank stops together, not only the writing one
            flag = torch.tensor(int(failure is not None), dtype=torch.int64)
            if int(self.strategy.collectives.all_reduce(flag, op="sum")) and failure is None:
                failure = CheckpointWriteError(f"the checkpoint of step {position.global_step} could not be "
                                               "written (see rank 0's message)")
        if failure is not None:
            raise failure from None
        self.saved_step = position.global_step
        return path

    def _gather_rank_states(self) -> tuple[list[Any], dict[str, list[dict[str, Any]]]]:
        """Every rank's RNG state and state of each per-rank part (a stream's position), in one
        collective; parts with no state on any rank are left out."""
        backend = self.strategy.device_backend
        mine = {"rng": backend.to_serializable(rng.capture(backend)),
                "parts": {name: part.state_dict() for name, part in self.rank_parts.items()}}
        gathered = self.strategy.collectives.all_gather_object(mine)
        parts = {name: [rank["parts"][name] for rank in gathered] for name in self.rank_parts}
        return [rank["rng"] for rank in gathered], {name: states for name, states in parts.items() if any(states)}

    def _write(self, position: Position, weights: Any, optimizer_state: Any, rng_states: Any,
               rank_states: dict[str, list[dict[str, Any]]]) -> Path:
        step = position.global_step
        metrics = self.evaluator.metrics_at(step)
        self._update_best(step)
        state = {
            "optimizer": optimizer_state,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_states,
        }
        meta = {"epoch": position.epoch, "micro": position.micro, "metrics": metrics,
                "metrics_step": self.evaluator.metrics_step, "best": self.best,
                "world_size": self.strategy.world_size, "batch_size": self.batch_size, "created": time.time(),
                **{name: part.state_dict() for name, part in self.parts.items()}, **rank_states}
        path = ckpt.save_checkpoint(self.run_dir.checkpoints, step, weights, state, meta)
        protect = {path}
        if self.best is not None:
            protect.add(self.run_dir.checkpoint(self.best["step"]))
            self.run_dir.write_best(self.best)
        ckpt.prune(self.run_dir.checkpoints, self.train.keep_last, protect)
        self.last_saved = path
        return path

    def _refuse_nonfinite_weights(self, step: int) -> None:
        """Never write NaN or infinite weights (they would replace good checkpoints via keep_last)."""
        bad = any(not bool(torch.isfinite(p).all()) for p in self.model.parameters() if p.requires_grad)
        if self.strategy.world_size > 1:  # sharded weights differ per rank: agree
            bad = int(self.strategy.collectives.all_reduce(torch.tensor(int(bad), dtype=torch.int64),
                                                           op="sum")) > 0
        if bad:
            raise TrainingDivergedError(f"the trainable weights are not finite (NaN or infinite) at step {step}; "
                                        "the checkpoint was not written. Lower train.lr, set train.grad_clip "
                                        "or check the data.")

    def _write_failure(self, step: int, exc: Exception) -> CheckpointWriteError:
        """The user's one message for a checkpoint that could not be written; other errors go on."""
        if not isinstance(exc, OSError) and not _is_write_error(exc):
            raise exc
        target = self.run_dir.checkpoint(step)
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                reason += " (the disk is full)"
        else:
            reason = f"the write failed ({str(exc).strip().splitlines()[0][:200]})"
            if "os error 28" in str(exc):
                reason += " (the disk is full)"
        free = _free_space(self.run_dir.checkpoints)
        found = ckpt.latest_complete(self.run_dir.checkpoints)
        last = (f"the last complete checkpoint is {found[0]} (step {found[1]['step']})" if found
                else "no complete checkpoint was written yet")
        return CheckpointWriteError(
            f"could not write the checkpoint of step {step} to {target}: {reason}; {free}.\n"
            f"The incomplete checkpoint was removed and earlier ones are intact: {last}.\n"
            "Free some disk space (or lower train.keep_last), then continue with the same command and "
            "--resume auto.")

    # --- the best checkpoint ----------------------------------------------------------------------

    def _update_best(self, step: int) -> bool:
        """Take the metrics of ``step`` (if they are the latest) into account for the best checkpoint."""
        metrics = self.evaluator.metrics_at(step)
        if not metrics:
            return False
        value = evaluate_metric_expression(self.train.best_metric, metrics)
        if value is None:
            self._warn_metric_missing(metrics)
            return False
        if is_better(value, self.best["value"] if self.best is not None else None, self.train.best_mode):
            self.best = {"step": step, "metric": self.train.best_metric, "value": value}
            return True
        return False

    def _warn_metric_missing(self, metrics: dict[str, Any]) -> None:
        """Once per run: an objective that reports e.g. only ``mse`` would otherwise track no best
        checkpoint without a word."""
        if self.warned_metric_missing:
            return
        self.warned_metric_missing = True
        if not self.strategy.is_main:
            return
        missing = [name for name in metric_names(self.train.best_metric) if name not in metrics]
        reported = sorted(name for name, value in metrics.items() if isinstance(value, (int, float)))
        logger.warning("train.best_metric=%s: the evaluation reported no %s (its metrics: %s); no best "
                       "checkpoint is tracked. Set train.best_metric to one of them (and train.best_mode "
                       "to min for an error or a loss).", self.train.best_metric, ", ".join(missing),
                       ", ".join(reported) or "none")

    def record_best(self, step: int) -> None:
        """After an evaluation of an already saved step: update ``best.json`` if it is the best, and
        record the metrics in that checkpoint's ``meta.json`` so resuming from it (a finished run
        continued with ``--resume auto``) does not evaluate the step again."""
        improved = self._update_best(step)
        if not self.strategy.is_main:
            return
        if improved:
            self.run_dir.write_best(self.best)
        if self.saved_step == step and self.evaluator.has_evaluated(step):
            saved = self.run_dir.checkpoint(step)
            if saved.is_dir():
                ckpt.update_meta(saved, metrics=self.evaluator.metrics_at(step), metrics_step=step,
                                 best=self.best)

    # --- resuming ---------------------------------------------------------------------------------

    def find(self, resume: str | None) -> Path | None:
        """The checkpoint ``--resume`` names (``auto``: the newest complete one), or ``None``."""
        if not resume or resume == "none":
            return None
        if resume != "auto":
            return Path(resume)
        found = ckpt.latest_complete(self.run_dir.checkpoints)
        if found is None:
            self.message(f"--resume auto: no complete checkpoint in {self.run_dir.checkpoints}; starting fresh")
            return None
        return found[0]

    def load(self, path: Path, seed: int) -> Position:
        """Restore every stateful part from ``path`` (on every rank); returns where to go on."""
        weights, state, meta = ckpt.load_checkpoint(path, self.strategy.trainable_shapes(self.model))
        unexpected = self.strategy.load_model_state(self.model, weights)
        if unexpected:
            raise CheckpointError(f"{path}: unexpected weights {unexpected[:5]}")
        self.strategy.load_optimizer_state(self.optimizer, state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        backend = self.strategy.device_backend
        rng_states = state["rng"]
        if len(rng_states) != self.strategy.world_size:
            self.message(f"resuming {len(rng_states)}-rank RNG state on {self.strategy.world_size} rank(s): "
                         "data order is exact, dropout streams are re-seeded")
            rng.seed_everything(seed + self.strategy.rank + meta["step"], backend)
        else:
            rng.restore(rng_states[self.strategy.rank], backend)
        for name, part in self.parts.items():
            if meta.get(name):
                part.load_state_dict(meta[name])
        for name, part in self.rank_parts.items():
            states = meta.get(name)
            if not states:
                continue
            if len(states) != self.strategy.world_size:
                raise CheckpointError(f"{path}: the {name} position was saved by {len(states)} rank(s); a stream "
                                      f"is dealt to ranks, so resume with {len(states)} (now "
                                      f"{self.strategy.world_size})")
            part.load_state_dict(states[self.strategy.rank])
        self.best = meta.get("best")
        self.evaluator.restore(meta.get("metrics", {}), meta.get("metrics_step", -1))
        self.saved_step = meta["step"]
        self.message(f"resumed from {path} (step {meta['step']}, epoch {meta['epoch']}, "
                     f"micro-batch {meta['micro']})")
        return Position(meta["step"], meta["epoch"], meta["micro"])


def _is_write_error(exc: Exception) -> bool:
    """``torch.save`` reports a failed write (a full disk among others) as a RuntimeError from its
    zip writer (``[enforce fail at inline_container.cc:…] . unexpected pos …``, ``… file write
    failed``); safetensors as a SafetensorError (``Error while serializing: I/O error: …``)."""
    text = str(exc)
    return any(mark in text for mark in ("inline_container", "PytorchStreamWriter", "file write failed",
                                         "I/O error"))


def _free_space(path: Path) -> str:
    probe = path if path.exists() else path.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return "free space unknown"
    return f"{free / 2**20:,.0f} MiB free on {os.path.realpath(probe)}'s disk"
