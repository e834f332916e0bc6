"""Tiny WebDataset shards in img2dataset's layout, from real photographs (for tests and benchmarks).

Each shard ``NNNNN.tar`` holds, per sample, ``{key}.jpg``, ``{key}.txt`` and ``{key}.json`` with the
key img2dataset gives (shard number, then the sample's number in it: ``000010003``), and beside it
``NNNNN_stats.json`` with its ``successes`` count. Damage can be planted: ``broken={key_index: kind}``
with ``corrupt`` (JPEG bytes cut short), ``no_caption`` (no ``.txt``, a ``.json`` without caption),
``no_image``, ``json_caption`` (no ``.txt``: the caption only in the ``.json``); ``truncate={shard: n_bytes}`` cuts a shard's file to its first ``n_bytes``.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pgmm_data.testing import captions_for, photo


@dataclass
class Shards:
    paths: list[Path]
    keys: list[list[str]]  # per shard, in file order
    pattern: str  # brace pattern naming every shard

    @property
    def all_keys(self) -> list[str]:
        return [k for shard in self.keys for k in shard]


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_caption_shards(root: str | Path, *, shards: int = 4, per_shard: int = 5, size: tuple[int, int] = (40, 32),
                         broken: Mapping[int, str] | None = None, truncate: Mapping[int, int] | None = None,
                         stats: bool = True) -> Shards:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    broken = dict(broken or {})
    paths, keys = [], []
    index = 0
    for number in range(shards):
        path = root / f"{number:05d}.tar"
        shard_keys = []
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
            for i in range(per_shard):
                key = f"{number:05d}{i:04d}"
                kind = broken.get(index)
                buffer = io.BytesIO()
                photo(index, size).save(buffer, "JPEG", quality=90)
                image = buffer.getvalue()
                caption = captions_for(index, 1)[0]
                if kind == "corrupt":
                    image = image[: len(image) // 3]
                if kind != "no_image":
                    _add(archive, f"{key}.jpg", image)
                if kind not in ("no_caption", "json_caption"):
                    _add(archive, f"{key}.txt", caption.encode())
                meta = {"key": key, "url": f"https://example.org/{key}.jpg"}
                if kind != "no_caption":
                    meta["caption"] = caption
                _add(archive, f"{key}.json", json.dumps(meta).encode())
                shard_keys.append(key)
                index += 1
        if truncate and number in truncate:
            data = path.read_bytes()
            path.write_bytes(data[: truncate[number]])
        if stats:
            (root / f"{number:05d}_stats.json").write_text(json.dumps({"successes": per_shard, "failed": 0}))
        paths.append(path)
        keys.append(shard_keys)
    pattern = str(root / f"{{00000..{shards - 1:05d}}}.tar")
    return Shards(paths, keys, pattern)
