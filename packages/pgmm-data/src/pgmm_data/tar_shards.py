"""Reading WebDataset tar shards (img2dataset's layout) from any byte offset, locally or from a ``pipe:``.

A shard is a tar whose members sharing a key (the member name up to the first dot of its file
name) form one sample: ``00042.jpg``, ``00042.txt``, ``00042.json``. Python's ``tarfile`` reads it as
a stream, so the same code serves files (opened at a byte offset: resuming costs a seek) and
``pipe:`` commands (object stores: ``pipe:aws s3 cp s3://bucket/00001.tar -``; resuming mid-shard
reads and drops the bytes before the offset). Damage — a truncated tar, a broken header, a command
that fails — ends the shard with one record saying where and after how many samples.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from pgmm_core.errors import DataError
from pgmm_core.streaming import Record

PIPE = "pipe:"
_CHUNK = 1 << 20


def expand_shards(patterns: str | list[str]) -> list[str]:
    """Brace-expanded shard names (``data/{00000..00099}.tar``), in order, each once."""
    from braceexpand import braceexpand

    names: list[str] = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        for name in braceexpand(pattern):
            if name not in names:
                names.append(name)
    return names


def is_pipe(name: str) -> bool:
    return name.startswith(PIPE)


def check_local_shards(names: list[str]) -> None:
    """A local shard that is not there is an error before training starts, naming it."""
    missing = [n for n in names if not is_pipe(n) and not Path(n).expanduser().is_file()]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise DataError(f"webdataset_captions: {len(missing)} of {len(names)} shard(s) not found: "
                        + ", ".join(missing[:5]) + more)


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is the path up to the first dot of the file name; the rest, lowercased,
    is the extension."""
    folder, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


class _Opened:
    """A shard's bytes from ``offset`` on, and how reading ended (a command's exit status)."""

    def __init__(self, name: str, offset: int) -> None:
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        if is_pipe(name):
            self.process = subprocess.Popen(name[len(PIPE):], shell=True, stdout=subprocess.PIPE)
            self.stream: IO[bytes] = self.process.stdout  # type: ignore[assignment]
            left = offset
            while left > 0:  # a pipe cannot seek: read and drop what the checkpoint says was used
                chunk = self.stream.read(min(left, _CHUNK))
                if not chunk:
                    break
                left -= len(chunk)
        else:
            self.stream = open(Path(name).expanduser(), "rb")  # noqa: SIM115 (closed by close())
            self.stream.seek(offset)

    def failure(self) -> str | None:
        """Why a command failed (its exit status), or None."""
        if self.process is None:
            return None
        self.stream.close()
        status = self.process.wait()
        return f"the command exited with status {status}" if status else None

    def close(self) -> None:
        self.stream.close()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def read_records(name: str, shard: int, offset: int) -> Iterator[Record]:
    """The samples of shard ``name`` (number ``shard`` of its list) from byte ``offset``, in file order."""
    try:
        opened = _Opened(name, offset)
    except OSError as exc:
        yield Record(shard, -1, -1, "", {}, f"{name}: cannot open: {exc.strerror or exc}")
        return
    read = 0
    key, start, members = None, offset, {}
    try:
        archive = tarfile.open(fileobj=opened.stream, mode="r|")
        for member in archive:
            if not member.isfile():
                continue
            member_key, extension = split_member_name(member.name)
            if key is not None and member_key != key:
                yield Record(shard, start, offset + member.offset, key, members)
                read += 1
                members = {}
            if member_key != key:
                key, start = member_key, offset + member.offset
            handle = archive.extractfile(member)
            members[extension] = handle.read() if handle is not None else b""
            if len(members[extension]) != member.size:
                raise tarfile.ReadError("unexpected end of data")
        failure = opened.failure()
        if failure is not None:
            raise OSError(failure)
        if key is not None:
            yield Record(shard, start, offset + archive.offset, key, members)
    except (tarfile.TarError, OSError, EOFError) as exc:
        if offset and key is None and str(exc) == "empty file" and opened.failure() is None:
            return  # resumed at the very end of a tar written without end-of-archive blocks
        where = f" from byte {offset}" if offset else ""
        yield Record(shard, -1, -1, "", {}, f"{name}: damaged after {read} complete sample(s){where}: "
                                             f"{exc}; the rest of the shard is skipped")
    finally:
        opened.close()


def manifest_counts(names: list[str], manifest: str | None) -> int | None:
    """Samples in ``names`` by a manifest, or by img2dataset's ``NNNNN_stats.json`` files; None if unknown.

    A manifest is JSON with ``shards: [{"name" | "path" | "file": ..., "samples" | "count" |
    "num_samples": N}]`` (matched by file name). Without one, ``manifest.json`` beside the first
    local shard is used when present.
    """
    local = [Path(n).expanduser() for n in names if not is_pipe(n)]
    path = Path(manifest).expanduser() if manifest else (local[0].parent / "manifest.json" if local else None)
    if path is not None and path.is_file():
        counts = _counts_by_name(json.loads(path.read_text(encoding="utf-8")))
        bases = [n.rsplit("/", 1)[-1] for n in names]
        if all(b in counts for b in bases):
            return sum(counts[b] for b in bases)
        if manifest:
            raise DataError(f"webdataset_captions: {path} does not list the sample count of "
                            f"{next(b for b in bases if b not in counts)}")
    if local and len(local) == len(names):
        total = 0
        for shard in local:
            stats = shard.with_name(shard.name.removesuffix(".tar") + "_stats.json")
            if not stats.is_file():
                return None
            total += int(json.loads(stats.read_text(encoding="utf-8")).get("successes", 0))
        return total
    return None


def _counts_by_name(manifest: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in manifest.get("shards", []) if isinstance(manifest, dict) else []:
        name = next((entry[k] for k in ("name", "path", "file", "url") if k in entry), None)
        count = next((entry[k] for k in ("samples", "count", "num_samples") if k in entry), None)
        if name is not None and count is not None:
            counts[str(name).rsplit("/", 1)[-1]] = int(count)
    return counts
