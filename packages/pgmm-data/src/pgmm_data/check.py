"""``python -m pgmm_core data check --config FILE``: scan the configured datasets before training.

(``data check --shards DIR`` reads WebDataset shards instead: :mod:`pgmm_data.shard_check`; ``data shard``
writes them: :mod:`pgmm_data.shard_cli`.)

For every dataset in ``data.train``, ``data.val`` and ``data.test`` it builds the dataset exactly
as the trainer does (so annotation problems surface with the same messages), decodes every image it
uses in worker processes with a progress bar, and reports counts, the bad files (missing, unreadable,
too large) with how many training samples they would cost per epoch, and caption length statistics
in words after ``blip_caption``. Datasets from other plugins are checked by reading every item.
Exit status: 0 when every image is usable, 1 when some are not.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pgmm_data.shard_cli import (
    SHARD_DESCRIPTION,
    add_check_shards_arguments,
    configure_shard,
    run_check_shards,
    run_shard,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DESCRIPTION = (
    "Build every dataset of data.train, data.val and data.test as the trainer does, decode every image "
    "they use (in --workers processes), and report counts, bad files (missing, unreadable, too large) "
    "with the samples they cost per epoch, and caption lengths in words. Exit status 0 when every "
    "image is usable, 1 when some are not."
)
SHARDS_DESCRIPTION = (
    "read WebDataset tar shards member by member and report samples, bad members (undecodable image, "
    "missing or empty caption, bad JSON), truncated tars, and disagreements with data shard's manifest.json "
    "(size, sha256, sample count). Exit status 0 when all is well, 1 otherwise."
)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    sub.required = True
    p = sub.add_parser("check", help="scan the configured datasets (or shards): counts, bad files, caption lengths",
                       description=DESCRIPTION + " With --shards DIR instead: " + SHARDS_DESCRIPTION)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", help="the training config (JSON)")
    what.add_argument("--shards", nargs="+", metavar="DIR_OR_TAR",
                      help="WebDataset shards to read: a directory (with data shard's manifest.json, if any) or tars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.num_workers=8")
    p.add_argument("--split", choices=SPLITS, action="append",
                   help="check only this list of datasets (repeatable; default: all)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes decoding images (default: data.num_workers, at least 1)")
    p.add_argument("--headers-only", action="store_true",
                   help="read only file headers: much faster, but truncated files pass")
    p.add_argument("--show", type=int, default=20, metavar="N", help="bad files listed per dataset (default 20)")
    p.add_argument("--json", action="store_true", help="print one JSON report instead of text")
    add_check_shards_arguments(p)
    shard = sub.add_parser("shard", help="write a configured dataset as WebDataset tar shards with a manifest",
                           description=SHARD_DESCRIPTION)
    configure_shard(shard)


@dataclass
class DatasetReport:
    name: str
    source: str
    split: str
    samples: int
    images: int
    bad_images: int = 0
    bad_by_kind: dict[str, int] = field(default_factory=dict)
    bad_samples: int = 0
    bad_examples: list[str] = field(default_factory=list)
    captions: int = 0
    caption_words: dict[str, float] = field(default_factory=dict)
    over_max_words: int = 0
    empty_captions: int = 0  # nothing left after blip_caption: the sample trains on EOS alone
    max_words: int | None = None


def run(args: argparse.Namespace) -> int:
    if args.data_command == "shard":
        return run_shard(args)
    if args.shards:
        return run_check_shards(args)
    from pgmm_core import load_config
    from pgmm_core.preprocessing import config_image_spec
    from pgmm_core.streaming import is_streaming

    config = load_config(args.config, args.overrides)
    workers = max(1, args.workers if args.workers is not None else config.data.num_workers)
    spec = config_image_spec(config.model.vision, config.host)  # the encoder's preprocessing, no weights
    reports: list[DatasetReport] = []
    shard_reports: list[Any] = []
    for split in args.split or SPLITS:
        for ds_config in getattr(config.data, split):
            dataset = config.host.build("dataset", ds_config, split=split, image_spec=spec, image_size=spec.size)
            if is_streaming(dataset):  # a shard stream has no length: read its shards member by member
                shard_reports.append(_check_stream(dataset, workers=workers))
                continue
            reports.append(check_dataset(dataset, ds_config, split, workers=workers,
                                         headers_only=args.headers_only, show=args.show))
    limit = config.data.max_bad_fraction
    if args.json:
        print(json.dumps({"datasets": [asdict(r) for r in reports], "max_bad_fraction": limit,
                          "shards": [r.as_dict() for r in shard_reports]}, indent=2))
    else:
        from pgmm_data.shard_check import format_shards_report

        for report in reports:
            print(format_report(report, limit))
        for shard_report in shard_reports:
            print(format_shards_report(shard_report, args.show))
        total = sum(r.bad_images for r in reports) + sum(sum(r.bad_by_kind.values()) for r in shard_reports)
        count = len(reports) + len(shard_reports)
        print(f"{total} bad image(s) in {count} dataset(s)" if total else
              f"all images of {count} dataset(s) are usable")
    return 1 if any(r.bad_images for r in reports) or not all(r.ok for r in shard_reports) else 0


def _check_stream(dataset: Any, *, workers: int) -> Any:
    """The local shards of a streaming dataset checked as ``data check --shards`` does (``pipe:``
    shards are left out: reading them would fetch the whole dataset)."""
    from pgmm_core.images import DEFAULT_MAX_IMAGE_PIXELS

    from pgmm_data.shard_check import check_shards

    local = [name for name in dataset.shards if not name.startswith("pipe:")]
    skipped = len(dataset.shards) - len(local)
    if skipped:
        logger.warning("%s: %d pipe: shard(s) not checked", getattr(dataset, "name", "dataset"), skipped)
    return check_shards(local, max_pixels=DEFAULT_MAX_IMAGE_PIXELS, workers=workers)


def check_dataset(dataset: Any, ds_config: Any, split: str, *, workers: int = 1, headers_only: bool = False,
                  show: int = 20) -> DatasetReport:
    from pgmm_data.datasets import CaptionEvalSet, CaptionTrainSet

    if isinstance(dataset, (CaptionTrainSet, CaptionEvalSet)):
        return _check_files(dataset, split, workers=workers, headers_only=headers_only, show=show)
    return _check_items(dataset, ds_config, split, show=show)


def _check_files(dataset: Any, split: str, *, workers: int, headers_only: bool, show: int) -> DatasetReport:
    """pgmm-data's own datasets: decode each used image once, in parallel."""
    from pgmm_data.datasets import CaptionTrainSet

    ann = dataset.annotations
    is_train = isinstance(dataset, CaptionTrainSet)
    if is_train:
        caption_rows = ann.caption_image[: len(dataset)]
        rows = np.unique(caption_rows)
        captions = [ann.captions[i] for i in range(len(dataset))]
    else:
        caption_rows = None
        rows = np.arange(len(dataset))
        captions = [text for i in rows.tolist() for text in dataset.references_of(i)]
    paths = [ann.images[int(r)] for r in rows]
    outcomes = _scan(paths, dataset.max_pixels, workers=workers, headers_only=headers_only, label=dataset.name)
    bad_rows = [int(r) for r, outcome in zip(rows, outcomes) if outcome is not None]
    kinds = Counter(outcome[0] for outcome in outcomes if outcome is not None)
    examples = [f"{path}: {outcome[1]}" for path, outcome in zip(paths, outcomes) if outcome is not None][:show]
    if is_train:
        bad_samples = int(np.isin(caption_rows, np.asarray(bad_rows, dtype=np.int64)).sum())
    else:
        bad_samples = len(bad_rows)
    report = DatasetReport(
        name=dataset.name, source=ann.source, split=split, samples=len(dataset), images=len(paths),
        bad_images=len(bad_rows), bad_by_kind=dict(kinds), bad_samples=bad_samples, bad_examples=examples,
    )
    _caption_stats(report, captions, getattr(dataset, "max_words", None))
    return report


def _check_items(dataset: Any, ds_config: Any, split: str, *, show: int) -> DatasetReport:
    """Any other dataset: read every item (this also runs its transforms)."""
    from tqdm.auto import tqdm

    name = getattr(dataset, "name", f"{ds_config.type}[{split}]")
    bad: list[str] = []
    captions: list[str] = []
    for index in tqdm(range(len(dataset)), desc=name, unit="item", file=sys.stderr, dynamic_ncols=True):
        item = dataset[index]
        if "bad" in item:
            bad.append(item["bad"])
            continue
        captions.extend([item["caption"]] if "caption" in item else item.get("references", []))
    report = DatasetReport(name=name, source=ds_config.type, split=split, samples=len(dataset), images=len(dataset),
                           bad_images=len(bad), bad_by_kind={"unreadable": len(bad)} if bad else {},
                           bad_samples=len(bad), bad_examples=bad[:show])
    _caption_stats(report, captions, getattr(ds_config, "max_words", None))
    return report


def inspect_image(task: tuple[str, int, bool]) -> tuple[str, str] | None:
    """``(kind, reason)`` when the image cannot be used, else None (runs in worker processes)."""
    from pgmm_core.images import BadImage, check_header, open_rgb

    path, max_pixels, headers_only = task
    try:
        (check_header if headers_only else open_rgb)(path, max_pixels)
    except BadImage as exc:
        return exc.kind, str(exc)
    return None


def _scan(paths: list[str], max_pixels: int, *, workers: int, headers_only: bool,
          label: str) -> list[tuple[str, str] | None]:
    from tqdm.auto import tqdm

    tasks = [(path, max_pixels, headers_only) for path in paths]
    bar = tqdm(total=len(tasks), desc=label, unit="img", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
    try:
        if workers <= 1 or len(tasks) < 64:
            results = []
            for task in tasks:
                results.append(inspect_image(task))
                bar.update()
            return results
        chunk = max(1, min(256, len(tasks) // (workers * 8)))
        with ProcessPoolExecutor(max_workers=min(workers, os.cpu_count() or 1)) as pool:
            results = []
            for outcome in pool.map(inspect_image, tasks, chunksize=chunk):
                results.append(outcome)
                bar.update()
            return results
    finally:
        bar.close()


def _caption_stats(report: DatasetReport, captions: list[str], max_words: int | None) -> None:
    from pgmm_data.processors import blip_caption

    report.captions = len(captions)
    report.max_words = max_words
    if not captions:
        return
    # words as the model sees them, before truncation to max_words
    words = np.asarray([len(blip_caption(c, max_words=1 << 30).split()) for c in captions])
    report.caption_words = {
        "min": int(words.min()), "mean": round(float(words.mean()), 2), "median": float(np.median(words)),
        "p95": float(np.percentile(words, 95)), "max": int(words.max()),
    }
    if max_words is not None:
        report.over_max_words = int((words > max_words).sum())
    report.empty_captions = int((words == 0).sum())


def format_report(report: DatasetReport, max_bad_fraction: float) -> str:
    lines = [f"{report.name}  ({report.source})"]
    kinds = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(report.bad_by_kind.items()))
    lines.append(f"  images   {report.images:,}" + (f"  — {report.bad_images:,} bad ({kinds})" if report.bad_images else
                                                       "  — all usable"))
    unit = "captions" if report.split == "train" else "images"
    fraction = report.bad_samples / report.samples if report.samples else 0.0
    samples = f"  samples  {report.samples:,} {unit}"
    if report.bad_samples:
        verdict = "over" if fraction > max_bad_fraction else "within"
        samples += (f"; {report.bad_samples:,} skipped per pass ({fraction:.2%}, {verdict} "
                    f"data.max_bad_fraction {max_bad_fraction:.2%})")
    lines.append(samples)
    if report.caption_words:
        w = report.caption_words
        line = (f"  caption words ({report.captions:,} captions)  min {w['min']} · mean {w['mean']:.1f} · "
                f"median {w['median']:g} · p95 {w['p95']:g} · max {w['max']}")
        if report.max_words is not None:
            line += f"; {report.over_max_words:,} longer than max_words {report.max_words}"
            line += " (truncated to it)" if report.over_max_words else ""
        lines.append(line)
        if report.empty_captions:
            lines.append(f"  warning: {report.empty_captions:,} empty caption(s) (nothing left after blip_caption); "
                         "they train the model to say nothing")
    if report.bad_examples:
        lines.append("  bad files:")
        lines.extend(f"    {example}" for example in report.bad_examples)
        if report.bad_images > len(report.bad_examples):
            lines.append(f"    … and {report.bad_images - len(report.bad_examples):,} more (--show N)")
    return "\n".join(lines)
