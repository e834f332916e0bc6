"""The layout of a run directory, in one place.

A run directory (``train.output_dir``) is self-contained: the trainer writes it, and ``evaluate``,
``report``, ``runs.load_run`` and the Captioner read it. Every file name a run uses is spelt here
and nowhere else, so the layout can change (or be read by another tool) without hunting through
the code base::

    config.json             the resolved config the run was (last) started with
    config.previous.json    the run's earlier config, kept when a resume changed it
    frozen_weights.json     fingerprint of the frozen towers (see pgmm_core.frozen_weights)
    image_spec.json         the image preprocessing of the run's vision encoder
    log.jsonl               one JSON object per logged step
    tensorboard/            TensorBoard event files
    metrics.json            every evaluation of the run: [{"step", "epoch", metric...}]
    results.json            the latest evaluation's captions of the first val dataset
    results/                every evaluation's captions, per dataset and step
    checkpoints/step-NNNNNN checkpoints (see pgmm_core.train.checkpoint for what is inside)
    checkpoints/best.json   which checkpoint scored best
    eval/<split>-stepNNNNNN ``python -m pgmm_core evaluate`` output
    report/                 ``python -m pgmm_core report`` output

Writes are atomic (temporary file, fsync, rename): a run killed at any moment never leaves a file
that looks complete but is not. Only this module and the checkpoint module know these names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pgmm_core.files import atomic_write_text
from pgmm_core.preprocessing import IMAGE_SPEC_FILE

CHECKPOINT_DIR = re.compile(r"^step-(\d+)$")
"""Names of checkpoint directories under ``checkpoints/``."""


def checkpoint_dir_name(step: int) -> str:
    """``step-000123``: the directory name of step ``step``'s checkpoint."""
    return f"step-{step:06d}"


class RunDirectory:
    """The files of one run. Construction touches nothing on disk."""

    CONFIG = "config.json"
    PREVIOUS_CONFIG = "config.previous.json"
    FROZEN_WEIGHTS = "frozen_weights.json"
    IMAGE_SPEC = IMAGE_SPEC_FILE
    LOG = "log.jsonl"
    TENSORBOARD = "tensorboard"
    METRICS = "metrics.json"
    RESULTS = "results.json"
    RESULTS_DIR = "results"
    CHECKPOINTS = "checkpoints"
    BEST = "best.json"
    EVAL_DIR = "eval"
    REPORT_DIR = "report"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.root)!r})"

    # --- paths ------------------------------------------------------------------------------------

    @property
    def config(self) -> Path:
        return self.root / self.CONFIG

    @property
    def previous_config(self) -> Path:
        return self.root / self.PREVIOUS_CONFIG

    @property
    def frozen_weights(self) -> Path:
        return self.root / self.FROZEN_WEIGHTS

    @property
    def image_spec(self) -> Path:
        return self.root / self.IMAGE_SPEC

    @property
    def log(self) -> Path:
        return self.root / self.LOG

    @property
    def tensorboard(self) -> Path:
        return self.root / self.TENSORBOARD

    @property
    def metrics(self) -> Path:
        return self.root / self.METRICS

    @property
    def results(self) -> Path:
        return self.root / self.RESULTS

    @property
    def checkpoints(self) -> Path:
        return self.root / self.CHECKPOINTS

    @property
    def best(self) -> Path:
        return self.checkpoints / self.BEST

    @property
    def report(self) -> Path:
        return self.root / self.REPORT_DIR

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / checkpoint_dir_name(step)

    def step_results(self, index: int, step: int) -> Path:
        """Captions of val dataset ``index`` at ``step`` (``results/val0_step000020.json``)."""
        return self.root / self.RESULTS_DIR / f"val{index}_step{step:06d}.json"

    def evaluation(self, split: str, step: int) -> Path:
        """Default output directory of ``evaluate`` for a split and a checkpoint's step."""
        return self.root / self.EVAL_DIR / f"{split}-step{step:06d}"

    @staticmethod
    def evaluation_results(out: Path, index: int) -> Path:
        """``results.json`` for the first dataset of an ``evaluate`` output, ``results_N.json`` after."""
        return out / ("results.json" if index == 0 else f"results_{index}.json")

    @staticmethod
    def evaluation_metrics(out: Path) -> Path:
        return out / "metrics.json"

    def is_run(self) -> bool:
        """Whether this looks like a pgmm run directory (it has its config)."""
        return self.config.is_file()

    # --- reading and writing ----------------------------------------------------------------------

    @staticmethod
    def write_text(path: Path, text: str) -> None:
        """Atomically replace ``path`` with ``text`` (creating its folder)."""
        atomic_write_text(path, text)

    def write_json(self, path: Path, value: Any) -> None:
        """Indented JSON with a final newline (``metrics.json``, ``best.json``, ``evaluate``'s metrics)."""
        self.write_text(path, json.dumps(value, indent=2) + "\n")

    @staticmethod
    def read_json(path: Path, default: Any = None) -> Any:
        if not path.is_file():
            return default
        return json.loads(path.read_text(encoding="utf-8"))

    def read_log(self) -> list[dict[str, Any]]:
        """The records of ``log.jsonl`` (none when the run has not logged yet)."""
        if not self.log.is_file():
            return []
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines() if line.strip()]

    def metrics_history(self) -> list[dict[str, Any]]:
        return self.read_json(self.metrics, [])

    def record_metrics(self, step: int, epoch: int, metrics: dict[str, Any]) -> None:
        """Put the evaluation of ``step`` into ``metrics.json``, replacing it and any later one."""
        history = [h for h in self.metrics_history() if h["step"] < step]
        self.write_json(self.metrics, history + [{"step": step, "epoch": epoch, **metrics}])

    def drop_metrics_after(self, step: int) -> None:
        """Evaluations after the step a run starts from belong to work that is about to be redone."""
        if not self.metrics.is_file():
            return
        history = self.metrics_history()
        kept = [h for h in history if h.get("step", 0) <= step]
        if len(kept) != len(history):
            self.write_json(self.metrics, kept)

    def write_results(self, index: int, step: int, results: list[dict[str, Any]]) -> None:
        """An evaluation's captions: per dataset and step, and the first dataset's as ``results.json``."""
        text = json.dumps(results, ensure_ascii=False)
        self.write_text(self.step_results(index, step), text)
        if index == 0:
            self.write_text(self.results, text)

    def read_best(self) -> dict[str, Any] | None:
        return self.read_json(self.best)

    def write_best(self, best: dict[str, Any]) -> None:
        self.write_json(self.best, best)
