"""``python -m pgmm_core evaluate``: score a run's checkpoint on a split, on one or many ranks.

Uses exactly what the trainer uses for its in-training evaluation (same datasets, generation
settings, batch size, precision policy and scorers), so evaluating the last checkpoint reproduces
the trainer's last validation metrics.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pgmm_core.errors import ConfigError
from pgmm_core.run_dir import RunDirectory

logger = logging.getLogger(__name__)


def read_dataset_file(path: str | Path) -> list[dict[str, Any]]:
    """A JSON file holding one dataset config or a list of them."""
    from pgmm_core.config.loading import read_json_file

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"dataset file not found: {path}"]) from None
    except json.JSONDecodeError:
        read_json_file(path)  # raises with line and column
        raise
    return data if isinstance(data, list) else [data]


def evaluate_run(run_dir: str | Path, *, split: str = "val", data_file: str | None = None,
                 checkpoint: str = "best", overrides: list[str] | tuple[str, ...] = (),
                 out_dir: str | Path | None = None, host: Any | None = None) -> dict[str, Any]:
    """Caption and score; rank 0 writes ``results.json`` and ``metrics.json``. Returns the metrics.

    The processes are the run's strategy's (``auto``: one, or every rank torchrun started), each
    captioning its share of the images.
    """
    from pgmm_core.devices.select import select_device_backend
    from pgmm_core.metrics import format_table
    from pgmm_core.objectives.caption import CaptionObjective
    from pgmm_core.preprocessing import run_image_spec
    from pgmm_core.runs import load_run
    from pgmm_core.train.evaluator import Evaluator, build_datasets

    overrides = list(overrides)
    if data_file is not None:
        overrides.append(f"data.{split}=" + json.dumps(read_dataset_file(data_file)))
    try:
        run = load_run(run_dir, checkpoint=checkpoint, overrides=overrides, host=host)
    except ConfigError as exc:
        prefix = f"data.{split}."
        if data_file is None or not all(p.startswith(prefix) for p in exc.problems):
            raise
        # the problems are in the --data file, not in the run's config: say so, with its own paths
        problems = [f"dataset {p[len(prefix):]}" for p in exc.problems]
        problems.append('the file holds one dataset config ({"type": "coco_caption", ...}) or a list of them')
        raise ConfigError(problems, f"{data_file} (--data)") from None
    config = run.config
    layout = RunDirectory(run.run_dir)
    datasets_config = getattr(config.data, split)
    if not datasets_config:
        raise ConfigError([f"data.{split} is empty in {layout.config}; pass --data FILE"])
    backend = select_device_backend(config.device, config.host)
    strategy = config.host.build("strategy", config.strategy, device_backend=backend)
    try:
        device = strategy.setup()
        main = strategy.is_main
        policy = backend.precision_policy()
        run.model.to(device)
        out = Path(out_dir) if out_dir else layout.evaluation(split, run.step)
        if main and layout.evaluation_metrics(out).is_file():
            logger.info(f"replacing the earlier evaluation in {out}" + ("" if out_dir else " (--out DIR keeps it)"))
        image_spec = run_image_spec(run.run_dir, config, run.model.vision)
        datasets = build_datasets(config, datasets_config, split=split, image_spec=image_spec)
        objective = config.host.build("objective", config.objective)
        evaluator = Evaluator(config, objective, datasets, device=device, policy=policy,
                              collectives=strategy.collectives, is_main=main)

        def report(index: int, result: Any) -> None:
            if not main:
                return
            layout.write_text(layout.evaluation_results(out, index), json.dumps(result.results, ensure_ascii=False))
            counted = "images" if isinstance(objective, CaptionObjective) else "items"  # one caption per image
            logger.info(f"{result.name} ({len(result.results)} {counted}, checkpoint {run.checkpoint.name}):")
            logger.info(format_table(result.metrics))
            if result.bad_images:
                logger.info(f"  {result.bad_images} unreadable image(s) skipped")

        merged = evaluator.run(run.model, run.step, on_result=report).metrics
        if main:
            summary = {"split": split, "step": run.step, "checkpoint": str(run.checkpoint), **merged}
            layout.write_json(layout.evaluation_metrics(out), summary)
            logger.info(f"wrote {layout.evaluation_results(out, 0)} and {layout.evaluation_metrics(out)}")
        return merged
    finally:
        strategy.teardown()
