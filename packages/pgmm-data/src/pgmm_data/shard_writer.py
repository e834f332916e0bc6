"""Writing a dataset as WebDataset tar shards in img2dataset's layout, resumably.

Samples are taken in source order (or a seeded permutation of it), ``samples_per_shard`` usable
ones per shard; samples whose image cannot be used are skipped and recorded in the shard's manifest
entry. Each entry also records the range of source positions the shard consumed, so a run can
continue exactly where a completed shard ended.

Resuming: an existing ``manifest.json`` must describe the same source and settings (else the
directory is refused). Its shards are verified in order (size and sha256); the verified prefix is
kept and everything from the first missing or damaged shard on — including a partial ``.tmp``
shard a killed run left behind — is written again. Output is a pure function of the input, so an
interrupted and resumed run gives the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import logging
import sys
from collections import OrderedDict, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgmm_core.errors import DataError

from pgmm_data.shard_sources import RawSample, ShardSource, StoredImage
from pgmm_data.shard_tar import (
    MANIFEST_FORMAT,
    ShardTarWriter,
    dump_json,
    file_sha256,
    read_manifest,
    sample_key,
    shard_name,
    write_manifest,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardSettings:
    samples_per_shard: int
    shuffle_seed: int | None = None
    workers: int = 4  # threads reading and verifying images ahead of the writer (PIL decodes without the GIL)
    progress: bool = True

    def recorded(self) -> dict[str, Any]:
        """What must match for a directory to be resumed."""
        return {"samples_per_shard": self.samples_per_shard, "shuffle_seed": self.shuffle_seed}


@dataclass
class Prepared:
    position: int
    sample: RawSample
    image: StoredImage | None
    bad: tuple[str, str] | None  # (kind, reason)


class ShardWriter:
    """Writes ``source`` into ``out`` as ``NNNNN.tar`` shards plus ``manifest.json``."""

    def __init__(self, source: ShardSource, out: Path, settings: ShardSettings, source_info: dict[str, Any]) -> None:
        if settings.samples_per_shard < 1:
            raise DataError("--samples-per-shard must be at least 1")
        self.source = source
        self.out = Path(out)
        self.settings = settings
        self.source_info = source_info
        self.order = self._order()

    def _order(self) -> list[int]:
        count = len(self.source)
        if self.settings.shuffle_seed is None:
            return list(range(count))
        import numpy as np

        return np.random.default_rng(self.settings.shuffle_seed).permutation(count).tolist()

    # --- resume ------------------------------------------------------------------------------------

    def _comparable(self, info: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in info.items() if k not in ("config", "overrides")}

    def resume_point(self) -> list[dict[str, Any]]:
        """The manifest entries of the shards to keep (verified), after removing everything else."""
        self.out.mkdir(parents=True, exist_ok=True)
        for tmp in self.out.glob("*.tmp"):
            tmp.unlink()
        manifest = read_manifest(self.out)
        existing = sorted(p for p in self.out.glob("*.tar") if p.stem.isdigit())
        if manifest is None:
            if existing:
                raise DataError(f"{self.out} holds shards but no manifest.json; write into an empty directory")
            return []
        if manifest.get("format") != MANIFEST_FORMAT:
            raise DataError(f"{self.out}/manifest.json is not a pgmm shard manifest ({MANIFEST_FORMAT})")
        for what, mine, theirs in (("source", self._comparable(self.source_info),
                                    self._comparable(manifest.get("source", {}))),
                                   ("settings", self.settings.recorded(), manifest.get("settings"))):
            if mine != theirs:
                raise DataError(f"{self.out} holds shards of another {what} ({theirs}); this run has {mine}. "
                                "Write into an empty directory")
        kept: list[dict[str, Any]] = []
        for index, entry in enumerate(manifest.get("shards", [])):
            path = self.out / entry["name"]
            if entry["name"] != shard_name(index) or not path.is_file() or path.stat().st_size != entry["bytes"] \
                    or file_sha256(path) != entry["sha256"]:
                log.warning("%s: missing or different from the manifest; writing again from here", path)
                break
            kept.append(entry)
        for path in existing[len(kept):]:
            path.unlink()
        return kept

    # --- writing -----------------------------------------------------------------------------------

    def _prepare(self, sample: RawSample) -> tuple[StoredImage | None, tuple[str, str] | None]:
        from pgmm_core.images import BadImage

        try:
            return self.source.load_image(sample.ref), None
        except BadImage as exc:
            return None, (exc.kind, str(exc))

    def _prepared(self, start: int) -> Iterator[Prepared]:
        """Samples from ``start`` in order, images read ``workers`` at a time ahead of the writer; an
        image shared by nearby samples is read once."""
        window = max(8, 4 * self.settings.workers)
        pending: deque[tuple[int, RawSample, Future]] = deque()
        recent: OrderedDict[int, Future] = OrderedDict()
        with ThreadPoolExecutor(max_workers=max(1, self.settings.workers)) as pool:
            for position in range(start, len(self.order)):
                sample = self.source.sample(self.order[position])
                future = recent.get(sample.ref)
                if future is None:
                    future = recent[sample.ref] = pool.submit(self._prepare, sample)
                    if len(recent) > window:
                        recent.popitem(last=False)
                pending.append((position, sample, future))
                if len(pending) >= window:
                    yield self._done(*pending.popleft())
            while pending:
                yield self._done(*pending.popleft())

    @staticmethod
    def _done(position: int, sample: RawSample, future: Future) -> Prepared:
        image, bad = future.result()
        return Prepared(position, sample, image, bad)

    def _members(self, key: str, item: Prepared) -> list[tuple[str, bytes]]:
        image = item.image
        assert image is not None
        meta = {"key": key, **item.sample.meta, "width": image.width, "height": image.height}
        if image.reencoded:
            meta["reencoded"] = "png"
        return [(image.extension, image.data), ("txt", item.sample.caption.encode("utf-8")), ("json", dump_json(meta))]

    def run(self) -> dict[str, Any]:
        """Write (or finish writing) the shards; returns the final manifest."""
        kept = self.resume_point()
        shards = list(kept)
        position = kept[-1]["source_end"] if kept else 0
        if kept:
            log.info("%s: keeping %d verified shard(s), continuing at sample %d of %d", self.out, len(kept),
                     position, len(self.order))
        bar = self._bar(position)
        tail: dict[str, Any] | None = None
        try:
            items = self._prepared(position)
            item = next(items, None)
            while item is not None:
                index = len(shards)
                writer = ShardTarWriter(self.out / shard_name(index))
                entry: dict[str, Any] = {"source_start": item.position, "skipped_samples": 0, "bad": []}
                try:
                    while item is not None and writer.samples < self.settings.samples_per_shard:
                        if item.bad is not None:
                            _record_bad(entry, self.source.image_label(item.sample.ref), *item.bad)
                        else:
                            key = sample_key(index, writer.samples, self.settings.samples_per_shard)
                            writer.add(key, self._members(key, item))
                        entry["source_end"] = item.position + 1
                        bar.update()
                        item = next(items, None)
                except BaseException:  # an error or Ctrl-C: no partial shard stays behind
                    writer.abort()
                    raise
                if writer.samples == 0:  # only unusable images after the last shard
                    writer.abort()
                    tail = {k: entry[k] for k in ("source_start", "source_end", "skipped_samples", "bad")}
                    break
                shards.append({**writer.commit(), **entry})
                bar.set_postfix(shards=len(shards), skipped=sum(s["skipped_samples"] for s in shards))
                write_manifest(self.out, self._manifest(shards, None, complete=False))
        finally:
            bar.close()
        manifest = self._manifest(shards, tail, complete=True)
        write_manifest(self.out, manifest)
        return manifest

    def _bar(self, position: int) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=len(self.order), initial=position, desc=f"shard {self.source.name}", unit="sample",
                    file=sys.stderr, dynamic_ncols=True, mininterval=0.5, disable=not self.settings.progress)

    def _manifest(self, shards: list[dict[str, Any]], tail: dict[str, Any] | None, *, complete: bool) -> dict[str, Any]:
        bad_images: dict[str, str] = {}
        for part in [*shards, *([tail] if tail else [])]:
            for record in part["bad"]:
                bad_images.setdefault(record["image"], record["kind"])
        by_kind: dict[str, int] = {}
        for kind in bad_images.values():
            by_kind[kind] = by_kind.get(kind, 0) + 1
        skipped = sum(s["skipped_samples"] for s in shards) + (tail["skipped_samples"] if tail else 0)
        totals = {"shards": len(shards), "samples": sum(s["samples"] for s in shards),
                  "bytes": sum(s["bytes"] for s in shards), "skipped_samples": skipped,
                  "bad_images": len(bad_images), "bad_by_kind": dict(sorted(by_kind.items())),
                  "source_samples": len(self.order)}
        manifest: dict[str, Any] = {"format": MANIFEST_FORMAT, "layout": "img2dataset", "complete": complete,
                                    "source": self.source_info, "settings": self.settings.recorded(),
                                    "shards": shards, "totals": totals}
        if tail is not None:
            manifest["skipped_after_last_shard"] = tail
        return manifest


def _record_bad(entry: dict[str, Any], image: str, kind: str, reason: str) -> None:
    entry["skipped_samples"] += 1
    records = entry["bad"]
    if records and records[-1]["image"] == image:
        records[-1]["samples"] += 1
    else:
        records.append({"image": image, "kind": kind, "reason": reason, "samples": 1})
