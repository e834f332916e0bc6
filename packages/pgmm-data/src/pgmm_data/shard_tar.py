"""Byte-reproducible tar shards and the manifest that lists them.

Members carry fixed metadata (mtime, owner, mode) and are written in the USTAR format, so the same
samples always give the same bytes — and hence the same sha256 in ``manifest.json``. Every file
is written under a temporary name, fsynced and renamed: a killed writer leaves either a complete
shard that the manifest vouches for or a ``.tmp`` file that the next run discards.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

MTIME = 946_684_800  # 2000-01-01T00:00:00Z: fixed so that output depends on the samples only
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "pgmm-shards/1"


def shard_name(index: int) -> str:
    """img2dataset's shard names: ``00000.tar``, ``00001.tar``, …"""
    return f"{index:05d}.tar"


def sample_key(shard: int, offset: int, samples_per_shard: int) -> str:
    """img2dataset's keys: the shard number (5 digits) then the offset in the shard, zero-padded to
    the digits of ``samples_per_shard - 1`` (keys sort in write order and contain no dot)."""
    digits = len(str(max(samples_per_shard - 1, 1)))
    return f"{shard:05d}{offset:0{digits}d}"


class ShardTarWriter:
    """Writes one shard to ``path + '.tmp'``; :meth:`commit` makes it ``path`` atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.samples = 0
        # kept open across add() calls; commit() or abort() closes them
        self._handle = open(self.tmp, "wb")  # noqa: SIM115
        self._tar = tarfile.open(fileobj=self._handle, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115

    def add(self, key: str, members: list[tuple[str, bytes]]) -> None:
        """One sample: ``(extension, bytes)`` members, all named ``{key}.{extension}``."""
        for extension, data in members:
            info = tarfile.TarInfo(f"{key}.{extension}")
            info.size = len(data)
            info.mtime = MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self.samples += 1

    def commit(self) -> dict[str, Any]:
        """Close, fsync and rename; the shard's manifest entry (name, samples, bytes, sha256)."""
        self._tar.close()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self.tmp, self.path)
        return {"name": self.path.name, "samples": self.samples, "bytes": self.path.stat().st_size,
                "sha256": file_sha256(self.path)}

    def abort(self) -> None:
        """Drop the partial shard (an error, not a kill: a kill leaves the ``.tmp`` behind)."""
        try:
            self._tar.close()
        finally:
            self._handle.close()
            self.tmp.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dump_json(data: Any) -> bytes:
    """Canonical JSON (sorted keys, UTF-8): equal data, equal bytes."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Atomically replace ``directory/manifest.json``."""
    path = directory / MANIFEST
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
