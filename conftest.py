"""Session-wide test settings: tests write only inside their own temporary directories.

``HOME`` points at an empty directory for the whole session (subprocesses inherit it), beside a
private ``PGMM_CACHE_DIR``; when the session ends that home must still be empty, so a test, a
subprocess or a library that writes into the user's home (``~/.cache/pgmm`` among others) fails the
run instead of littering the machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_ISOLATED = ("HOME", "PGMM_CACHE_DIR", "MPLCONFIGDIR")


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


@pytest.fixture(scope="session", autouse=True)
def _private_home_and_cache(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("home")
    cache = tmp_path_factory.mktemp("pgmm-cache")
    matplotlib_dir = tmp_path_factory.mktemp("matplotlib")  # its font cache is not the tests' doing
    previous = {name: os.environ.get(name) for name in _ISOLATED}
    os.environ.update({"HOME": str(home), "PGMM_CACHE_DIR": str(cache), "MPLCONFIGDIR": str(matplotlib_dir)})
    yield cache
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    written = _files_under(home)
    assert not written, f"tests wrote into the home directory: {written[:10]}"


@pytest.fixture(autouse=True)
def _logging_left_as_found():
    """A test that runs a command in-process (``cli.main([...])``) installs the console handler and
    a level on the root logger, as a command should; they must not leak into the next test."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
