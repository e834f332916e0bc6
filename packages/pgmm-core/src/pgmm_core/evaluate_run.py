"""``python -m pgmm_core evaluate``: score a run's checkpoint on a split, on one or many ranks.

Uses exactly what the trainer uses for its in-training evaluation (same datasets, generation
settings, batch size, precision policy and scorers), so evaluating the last checkpoint reproduces
the trainer's last validation metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pgmm_core.errors import ConfigError


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
    """Caption and score; rank 0 writes ``results.json`` and ``metrics.json``. Returns the metrics."""
    from pgmm_core.devices.select import select_device_backend
    from pgmm_core.metrics import format_table
    from pgmm_core.objectives.base import EvalContext
    from pgmm_core.preprocessing import run_image_spec
    from pgmm_core.runs import load_run
    from pgmm_core.train import checkpoint as ckpt
    from pgmm_core.train.distributed import DistEnv, destroy_process_group, init_process_group

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
    datasets_config = getattr(config.data, split)
    if not datasets_config:
        raise ConfigError([f"data.{split} is empty in {run.run_dir / 'config.json'}; pass --data FILE"])
    env = DistEnv.from_environ()
    backend = select_device_backend(config.device, config.host)
    device = backend.setup(env.local_rank)
    init_process_group(env, backend.dist_backend, device)
    try:
        policy = backend.precision_policy()  # build_model (in load_run) stored the frozen towers in its dtype
        run.model.to(device)
        objective = config.host.build("objective", config.objective)
        context = EvalContext(device=device, policy=policy, collectives=backend.collectives,
                              batch_size=config.data.eval_batch_size or config.data.batch_size,
                              num_workers=config.data.num_workers, eval=config.eval, progress=env.is_main)
        out = Path(out_dir) if out_dir else run.run_dir / "eval" / f"{split}-step{run.step:06d}"
        if env.is_main and (out / "metrics.json").is_file():
            print(f"replacing the earlier evaluation in {out}" + ("" if out_dir else " (--out DIR keeps it)"))
        image_spec = run_image_spec(run.run_dir, config, run.model.vision)
        merged: dict[str, Any] = {}
        for i, dataset_config in enumerate(datasets_config):
            dataset = config.host.build("dataset", dataset_config, split=split, image_spec=image_spec,
                                        image_size=image_spec.size)
            result = objective.evaluate(run.model, dataset, context)
            prefix = "" if i == 0 else f"{result.name}/"
            merged.update({f"{prefix}{k}": v for k, v in result.metrics.items() if k != "unavailable"})
            if env.is_main:
                name = "results.json" if i == 0 else f"results_{i}.json"
                ckpt.atomic_write_text(out / name, json.dumps(result.results, ensure_ascii=False))
                print(f"{result.name} ({len(result.results)} images, checkpoint {run.checkpoint.name}):")
                print(format_table(result.metrics))
                if result.bad_images:
                    print(f"  {result.bad_images} unreadable image(s) skipped")
        if env.is_main:
            summary = {"split": split, "step": run.step, "checkpoint": str(run.checkpoint), **merged}
            ckpt.atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
            print(f"wrote {out / 'results.json'} and {out / 'metrics.json'}")
        return merged
    finally:
        destroy_process_group()
