"""``data check --shards DIR``: read WebDataset shards member by member and report what a reader would lose.

Works on any img2dataset-layout shards (``{key}.jpg|jpeg|png|webp``, ``{key}.txt``, ``{key}.json``),
with or without the ``manifest.json`` that ``data shard`` writes; it reads the tars with
:mod:`tarfile` directly. Members are grouped into samples by key as WebDataset groups them
(consecutive members sharing the name up to the first dot of the file name). Per sample:

* ``undecodable_image``: the image does not decode completely, or has more pixels than allowed;
* ``missing_image`` / ``missing_caption``: no image member / no ``.txt``; ``empty_caption``: a blank one;
  ``bad_caption``: a ``.txt`` that is not UTF-8; ``bad_json``: a ``.json`` that does not parse;
* ``truncated``: the tar ends inside a member or has no end-of-archive marker; samples before the
  damage are read and counted, the one cut off counts here.

With a manifest, every listed shard's size, sha256 and sample count is compared, and shards missing
from the directory or from the manifest are reported.
"""

from __future__ import annotations

import io
import json
import re
import sys
import tarfile
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgmm_data.shard_sources import IMAGE_EXTENSIONS
from pgmm_data.shard_tar import file_sha256, read_manifest

_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's base_plus_ext


@dataclass
class ShardReport:
    """What one tar holds and what is wrong with it."""

    name: str
    bytes: int
    samples: int = 0
    good: int = 0
    bad: list[dict[str, str]] = field(default_factory=list)  # {"key", "kind", "reason"}
    truncated: str | None = None
    images: dict[str, int] = field(default_factory=dict)
    sha256: str = ""


def decode_problem(data: bytes, max_pixels: int) -> str | None:
    """Why these image bytes cannot be used (as :func:`pgmm_core.images.open_rgb` decides), or None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            return f"{width}x{height} pixels, more than max_image_pixels {max_pixels:,}"
        image.load()
    except UnidentifiedImageError:
        return "not an image file PIL can read"
    except Exception as exc:  # noqa: BLE001 - any decoder failure makes the member unusable
        return f"cannot decode: {type(exc).__name__}: {exc}"
    return None


def _check_sample(key: str, members: dict[str, bytes], max_pixels: int, report: ShardReport) -> None:
    problems: list[tuple[str, str]] = []
    extension = next((ext for ext in IMAGE_EXTENSIONS if ext in members), None)
    if extension is None:
        problems.append(("missing_image", f"no image member (members: {', '.join(sorted(members)) or 'none'})"))
    else:
        report.images[extension] = report.images.get(extension, 0) + 1
        reason = decode_problem(members[extension], max_pixels)
        if reason is not None:
            problems.append(("undecodable_image", f"{key}.{extension}: {reason}"))
    if "txt" not in members:
        problems.append(("missing_caption", f"no {key}.txt"))
    else:
        try:
            if not members["txt"].decode("utf-8").strip():
                problems.append(("empty_caption", f"{key}.txt is blank"))
        except UnicodeDecodeError as exc:
            problems.append(("bad_caption", f"{key}.txt is not UTF-8 (byte {exc.start})"))
    if "json" in members:
        try:
            json.loads(members["json"])
        except ValueError as exc:
            problems.append(("bad_json", f"{key}.json: {exc}"))
    report.samples += 1
    if problems:
        report.bad.extend({"key": key, "kind": kind, "reason": reason} for kind, reason in problems)
    else:
        report.good += 1


def _has_end_marker(path: Path, offset: int) -> bool:
    with open(path, "rb") as handle:
        handle.seek(offset)
        end = handle.read(1024)
    return len(end) == 1024 and not any(end)


def check_shard(task: tuple[str, int]) -> ShardReport:
    """Read one tar completely (runs in worker processes)."""
    path_text, max_pixels = task
    path = Path(path_text)
    report = ShardReport(name=path.name, bytes=path.stat().st_size, sha256=file_sha256(path))
    key: str | None = None
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r|") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                match = _KEY.match(info.name)
                if match is None:
                    report.bad.append({"key": info.name, "kind": "unnamed_member",
                                       "reason": f"{info.name}: no key.extension name"})
                    continue
                member_key, extension = match.group(1), match.group(2).lower()
                if member_key != key:
                    if key is not None:
                        _check_sample(key, members, max_pixels, report)
                    key, members = member_key, {}
                members[extension] = tar.extractfile(info).read()  # type: ignore[union-attr]
            end = tar.offset
    except (tarfile.TarError, EOFError, OSError) as exc:
        whole = key is not None and "txt" in members and any(ext in members for ext in IMAGE_EXTENSIONS)
        if whole:  # the damage is after this sample's image and caption: a reader still gets it
            _check_sample(key, members, max_pixels, report)  # type: ignore[arg-type]
        lost = f"; sample {key} cut off" if key is not None and not whole else ""
        report.truncated = f"{type(exc).__name__}: {exc} after {report.samples} sample(s){lost}"
        if lost:
            report.samples += 1
            report.bad.append({"key": key, "kind": "truncated", "reason": report.truncated})
        return report
    if key is not None:
        _check_sample(key, members, max_pixels, report)
    if not _has_end_marker(path, end):
        report.truncated = f"no end-of-archive marker after {report.samples} sample(s) (file cut at a member boundary?)"
        report.bad.append({"key": path.name, "kind": "truncated", "reason": report.truncated})
    return report


@dataclass
class ShardsReport:
    """Every shard of a directory (or list of tars) and their agreement with the manifest."""

    location: str
    shards: list[ShardReport]
    manifest: str = "none"  # none | complete | incomplete
    manifest_problems: list[str] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def bad_by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(b["kind"] for s in self.shards for b in s.bad).items()))

    @property
    def ok(self) -> bool:
        return not self.manifest_problems and not any(s.bad or s.truncated for s in self.shards)

    def as_dict(self) -> dict[str, Any]:
        return {"location": self.location, "manifest": self.manifest, "manifest_problems": self.manifest_problems,
                "totals": {"shards": len(self.shards), "samples": self.samples,
                           "good": sum(s.good for s in self.shards), "bytes": sum(s.bytes for s in self.shards),
                           "bad_by_kind": self.bad_by_kind,
                           "truncated": [s.name for s in self.shards if s.truncated]},
                "shards": [asdict(s) for s in self.shards]}


def shard_paths(locations: list[str]) -> tuple[list[Path], list[Path]]:
    """The tars to read (a directory stands for its ``*.tar``) and the directories given."""
    paths: list[Path] = []
    directories: list[Path] = []
    for location in locations:
        path = Path(location)
        if path.is_dir():
            directories.append(path)
            paths.extend(sorted(path.glob("*.tar")))
        else:
            paths.append(path)
    return paths, directories


def check_shards(locations: list[str], *, max_pixels: int, workers: int = 1, progress: bool = True) -> ShardsReport:
    from pgmm_core.errors import DataError
    from tqdm.auto import tqdm

    paths, directories = shard_paths(locations)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"shard not found: {', '.join(missing)}")
    if not paths:
        raise DataError(f"no .tar shards in {', '.join(locations)}")
    tasks = [(str(p), max_pixels) for p in paths]
    bar = tqdm(total=len(tasks), desc="check shards", unit="shard", file=sys.stderr, dynamic_ncols=True,
               disable=not progress)
    try:
        if workers <= 1 or len(tasks) < 2:
            results = []
            for task in tasks:
                results.append(check_shard(task))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
                results = []
                for result in pool.map(check_shard, tasks):
                    results.append(result)
                    bar.update()
    finally:
        bar.close()
    if not (len(locations) == 1 and directories):  # one directory: its file names are enough
        for path, result in zip(paths, results):
            result.name = str(path)
    report = ShardsReport(location=", ".join(locations), shards=results)
    for directory in directories:
        _compare_manifest(directory, report, [r for p, r in zip(paths, results) if p.parent == directory])
    return report


def _compare_manifest(directory: Path, report: ShardsReport, shards: list[ShardReport]) -> None:
    manifest = read_manifest(directory)
    if manifest is None:
        return
    state = "complete" if manifest.get("complete") else "incomplete"
    report.manifest = state if report.manifest in ("none", state) else "incomplete"
    if not manifest.get("complete"):
        report.manifest_problems.append(f"{directory}/manifest.json says the writer did not finish: "
                                        "run data shard again")
    found = {Path(s.name).name: s for s in shards}
    listed = {entry["name"]: entry for entry in manifest.get("shards", [])}
    for name, entry in listed.items():
        shard = found.get(name)
        if shard is None:
            report.manifest_problems.append(f"{name}: listed in manifest.json but missing")
            continue
        if shard.bytes != entry["bytes"] or shard.sha256 != entry["sha256"]:
            report.manifest_problems.append(f"{name}: differs from manifest.json ({shard.bytes:,} bytes, "
                                            f"sha256 {shard.sha256[:12]}…; listed {entry['bytes']:,} bytes, "
                                            f"{entry['sha256'][:12]}…)")
        elif shard.samples != entry["samples"]:
            report.manifest_problems.append(f"{name}: {shard.samples} samples, manifest.json lists {entry['samples']}")
    for name in sorted(set(found) - set(listed)):
        report.manifest_problems.append(f"{name}: not listed in manifest.json")


def format_shards_report(report: ShardsReport, show: int = 20) -> str:
    total_bytes = sum(s.bytes for s in report.shards)
    lines = [(f"{report.location}: {len(report.shards)} shard(s), {report.samples:,} samples, "
              f"{total_bytes / 1e6:,.1f} MB; manifest: {report.manifest}")]
    formats: Counter[str] = Counter()
    for shard in report.shards:
        formats.update(shard.images)
    if formats:
        lines.append("  images   " + ", ".join(f"{n:,} .{ext}" for ext, n in sorted(formats.items())))
    kinds = report.bad_by_kind
    if kinds:
        lines.append("  bad      " + ", ".join(f"{n:,} {kind.replace('_', ' ')}" for kind, n in kinds.items()))
    for shard in report.shards:
        if shard.truncated:
            lines.append(f"  {shard.name}: truncated: {shard.truncated}")
    examples = [f"{s.name} {b['key']}: {b['kind'].replace('_', ' ')}: {b['reason']}" for s in report.shards
                for b in s.bad if b["kind"] != "truncated"]
    if examples:
        lines.append("  bad members:")
        lines.extend(f"    {e}" for e in examples[:show])
        if len(examples) > show:
            lines.append(f"    … and {len(examples) - show:,} more (--show N)")
    lines.extend(f"  manifest: {problem}" for problem in report.manifest_problems)
    lines.append("all shards are readable" if report.ok else "problems found")
    return "\n".join(lines)
