"""Files the way every part of pgmm handles them: written atomically with the user's usual
permissions, and read as UTF-8 text with a one-line error naming the file and byte when they are not.

Public API for plugins (a converter writing a checkpoint, a dataset reading its annotations): a file
appears complete or not at all, a run can be read by others on a shared cluster, and a file saved in
another encoding is reported, not a traceback. No torch here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgmm_core.errors import NotUtf8Error

__all__ = ["atomic_write_bytes", "atomic_write_text", "cache_dir", "decode_utf8", "make_directory_once",
           "read_utf8_text", "usual_permissions"]


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def usual_permissions(path: str | Path, *, directory: bool = False) -> None:
    """``mkstemp``/``mkdtemp`` (and safetensors' writer) create private (0600/0700) entries; give
    them the permissions the user's umask gives any other file, so a run can be read on a shared
    cluster."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file atomically: a temporary file in the same directory, fsynced, then renamed over
    ``path``. A process killed at any moment leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        usual_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8 (newlines written as given)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def decode_utf8(data: bytes, path: str | Path, *, offset: int = 0) -> str:
    """``data`` (read from ``path``, starting at byte ``offset`` of it) as text; a byte that is not
    UTF-8 raises :class:`~pgmm_core.errors.NotUtf8Error` with its offset in the file. A leading
    UTF-8 byte-order mark is kept (callers that allow one strip it)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotUtf8Error(str(path), offset + exc.start, data[exc.start]) from None


def read_utf8_text(path: str | Path) -> str:
    """The text of ``path``; :class:`~pgmm_core.errors.NotUtf8Error` when it is not UTF-8 (OS errors
    such as a missing file propagate unchanged)."""
    return decode_utf8(Path(path).read_bytes(), path)


def cache_dir() -> Path:
    """Where pgmm keeps what it makes once and reuses (the tiny demo's LLM and BERT):
    ``PGMM_CACHE_DIR``, else ``$XDG_CACHE_HOME/pgmm``, else ``~/.cache/pgmm``."""
    base = os.environ.get("PGMM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "pgmm")
    return Path(base)


def make_directory_once(target: str | Path, write: Callable[[Path], Any], *, marker: str) -> bool:
    """Make the directory ``target`` with ``write(scratch)`` unless ``target/marker`` exists; returns
    whether it was made here.

    ``write`` fills a scratch directory beside ``target`` (``marker`` last), which is then renamed into
    place, so ``target`` is complete or absent. Concurrent makers (the ranks of one job) each write
    their own; the first rename wins and the others use its result. The entries get the user's usual
    permissions, so a shared cache stays readable."""
    target = Path(target)
    if (target / marker).is_file():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(scratch)
        usual_permissions(scratch, directory=True)
        for entry in scratch.rglob("*"):
            usual_permissions(entry, directory=entry.is_dir())
        try:
            os.rename(scratch, target)
        except OSError:
            if not (target / marker).is_file():
                raise
            return False
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return True
