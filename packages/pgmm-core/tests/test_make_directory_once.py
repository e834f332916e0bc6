"""A directory made once for the cache: complete or absent, made by one of several makers, readable."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from pgmm_core.files import cache_dir, make_directory_once


def _write(scratch, calls):
    calls.append(scratch)
    (scratch / "vocab.txt").write_text("a\nb\n")
    (scratch / "weights.bin").write_bytes(b"\0" * 8)  # the marker, written last


def test_made_once_then_reused(tmp_path):
    calls = []
    target = tmp_path / "cache" / "thing"
    assert make_directory_once(target, lambda d: _write(d, calls), marker="weights.bin") is True
    assert make_directory_once(target, lambda d: _write(d, calls), marker="weights.bin") is False
    assert len(calls) == 1 and sorted(p.name for p in target.iterdir()) == ["vocab.txt", "weights.bin"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~_umask()  # not mkdtemp's private 0700
    assert [p.name for p in target.parent.iterdir()] == ["thing"]  # no scratch left behind


def test_a_failed_maker_leaves_nothing(tmp_path):
    def fail(scratch):
        (scratch / "vocab.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        make_directory_once(tmp_path / "thing", fail, marker="weights.bin")
    assert list(tmp_path.iterdir()) == []


def test_concurrent_makers_agree(tmp_path):
    target = tmp_path / "thing"
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda i: make_directory_once(target, lambda d: _write(d, []), marker="weights.bin"),
                             range(4)))
    assert sum(made) >= 1 and (target / "weights.bin").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["thing"]


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PGMM_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PGMM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "pgmm"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
