"""Run logs: ``log.jsonl`` (one object per logged step), TensorBoard scalars and a progress bar.

Only rank 0 writes; other ranks get a logger whose methods do nothing. A run starts its logs at the
step it starts from: records of later steps (written before an interruption, and about to be
redone; or, for a fresh start, left by an earlier run that saved no checkpoint) are dropped from
``log.jsonl`` and purged from the TensorBoard events, so each step is logged once.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from pgmm_core.run_dir import RunDirectory


class RunLogger:
    def __init__(self, output_dir: Path, *, enabled: bool, tensorboard: bool, total_steps: int,
                 initial_step: int = 0) -> None:
        self.enabled = enabled
        self.output_dir = output_dir
        self._jsonl = None
        self._writer = None
        self._bar = None
        if not enabled:
            return
        run_dir = RunDirectory(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        _drop_records_after(run_dir.log, initial_step)  # a fresh start (0) keeps none
        self._jsonl = run_dir.log.open("a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(run_dir.tensorboard), purge_step=initial_step + 1)
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total_steps, initial=initial_step, desc="train", unit="step",
                         dynamic_ncols=True, mininterval=0.5)

    def step(self, step: int, record: dict[str, Any]) -> None:
        """Advance the bar; ``record`` (already reduced across ranks) goes to the files when non-empty."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            if record:
                self._bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                      sps=f"{record.get('samples_per_s', 0):.1f}", refresh=False)
        if record:
            self.write_record({"step": step, **record})
            self.scalars("train", step, {k: v for k, v in record.items() if k not in ("epoch", "time")})

    def write_record(self, record: dict[str, Any]) -> None:
        if self._jsonl is None:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._jsonl.write(json.dumps({**clean, "time": time.time()}) + "\n")
        self._jsonl.flush()

    def scalars(self, prefix: str, step: int, values: dict[str, Any]) -> None:
        if self._writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(f"{prefix}/{key}", value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
        if self._jsonl is not None:
            self._jsonl.close()


def _drop_records_after(path: Path, step: int) -> None:
    if not path.is_file():
        return
    from pgmm_core.train.checkpoint import atomic_write_text

    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record_step = json.loads(line).get("step", 0)
        except (json.JSONDecodeError, AttributeError):
            continue  # a line cut short by the interruption
        if isinstance(record_step, int) and record_step <= step:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))
