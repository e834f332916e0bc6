"""The ``data shard`` subcommand and ``data check --shards``: argument parsing and printed reports.

``python -m pgmm_core data shard CONFIG --out DIR --samples-per-shard N [--split train] [--dataset NAME]``
builds the chosen dataset of ``data.<split>`` as the trainer would (same annotation parsing, same
path resolution, same bad-image verdicts) and writes its raw samples — annotation entries and image
files, not transformed tensors — as WebDataset shards (:mod:`pgmm_data.shard_writer`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SHARD_DESCRIPTION = (
    "Write one configured dataset as WebDataset tar shards in img2dataset's layout (NNNNN.tar holding "
    "{key}.jpg|png|webp, {key}.txt, {key}.json) plus manifest.json (per-shard samples, bytes, sha256; "
    "totals; skipped bad images). Deterministic: the same input gives the same bytes. Resumable: run the "
    "same command again after an interruption; verified shards are kept, the rest is written again."
)


def configure_shard(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the training config (JSON) whose dataset to write")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--out", required=True, help="output directory (created; resumed when it holds a manifest)")
    parser.add_argument("--samples-per-shard", dest="samples_per_shard", type=int, required=True, metavar="N",
                        help="usable samples per tar (img2dataset's default is 10000)")
    parser.add_argument("--split", choices=("train", "val", "test"), default="train",
                        help="which list of datasets: data.train (default), data.val or data.test")
    parser.add_argument("--dataset", metavar="NAME",
                        help="the dataset's type (e.g. coco_caption) or its position in the list; "
                        "needed when the list holds more than one")
    parser.add_argument("--shuffle", type=int, metavar="SEED",
                        help="write the samples in a permutation drawn from SEED (default: annotation order)")
    parser.add_argument("--workers", type=int, default=4, help="threads reading and verifying images (default 4)")
    parser.add_argument("--json", action="store_true", help="print the manifest's totals as JSON")


def _choose(datasets: list[Any], split: str, wanted: str | None) -> int:
    from pgmm_core.errors import ConfigError

    listing = ", ".join(f"{i}: {d.type}" for i, d in enumerate(datasets)) or "none"
    if not datasets:
        raise ConfigError([f"data.{split} holds no dataset to write"])
    if wanted is None:
        if len(datasets) == 1:
            return 0
        raise ConfigError([f"data.{split} holds {len(datasets)} datasets ({listing}): choose one with --dataset"])
    if wanted.isdigit() and int(wanted) < len(datasets):
        return int(wanted)
    matches = [i for i, d in enumerate(datasets) if d.type == wanted]
    if len(matches) == 1:
        return matches[0]
    problem = "matches several" if matches else "matches none"
    raise ConfigError([f"--dataset {wanted} {problem} of data.{split} ({listing}); give the position instead"])


def run_shard(args: argparse.Namespace) -> int:
    from pgmm_core import load_config
    from pgmm_core.errors import ConfigError
    from pgmm_core.preprocessing import config_image_spec

    from pgmm_data.shard_sources import SyntheticSource, source_of
    from pgmm_data.shard_writer import ShardSettings, ShardWriter

    if args.samples_per_shard < 1:
        raise ConfigError([f"--samples-per-shard must be at least 1, got {args.samples_per_shard}"])
    config = load_config(args.config, args.overrides)
    datasets = list(getattr(config.data, args.split))
    index = _choose(datasets, args.split, args.dataset)
    ds_config = datasets[index]
    spec = config_image_spec(config.model.vision, config.host)
    dataset = config.host.build("dataset", ds_config, split=args.split, image_spec=spec, image_size=spec.size)
    source = source_of(dataset, args.split)
    info: dict[str, Any] = {"config": str(Path(args.config).resolve()), "overrides": list(args.overrides),
                            "split": args.split, "dataset_index": index, "dataset": ds_config.model_dump(mode="json"),
                            "name": source.name, "samples": len(source)}
    if isinstance(source, SyntheticSource):
        info["image_size"] = source.size  # rendered at the model's size
    settings = ShardSettings(samples_per_shard=args.samples_per_shard, shuffle_seed=args.shuffle,
                             workers=max(1, args.workers))
    manifest = ShardWriter(source, Path(args.out), settings, info).run()
    totals = manifest["totals"]
    if args.json:
        print(json.dumps(totals, indent=2))
        return 0
    print(f"{args.out}: {totals['shards']} shard(s), {totals['samples']:,} samples, {totals['bytes'] / 1e6:,.1f} MB "
          f"from {source.name}")
    if totals["skipped_samples"]:
        kinds = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in totals["bad_by_kind"].items())
        print(f"skipped {totals['skipped_samples']:,} sample(s) of {totals['bad_images']:,} bad image(s) ({kinds}); "
              "listed in manifest.json")
    return 0


def add_check_shards_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-image-pixels", dest="max_image_pixels", type=int, default=None,
                        help="with --shards: images larger than this count as bad (default: PIL's limit, "
                        "as the datasets' max_image_pixels)")


def run_check_shards(args: argparse.Namespace) -> int:
    from pgmm_core.images import DEFAULT_MAX_IMAGE_PIXELS

    from pgmm_data.shard_check import check_shards, format_shards_report

    report = check_shards(args.shards, max_pixels=args.max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS,
                          workers=max(1, args.workers or 1))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(format_shards_report(report, args.show))
    return 0 if report.ok else 1
