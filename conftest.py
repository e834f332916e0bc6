"""Session-wide test settings: a private pgmm cache so tests never touch the user's ~/.cache."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _pgmm_cache(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("pgmm-cache")
    previous = os.environ.get("PGMM_CACHE_DIR")
    os.environ["PGMM_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("PGMM_CACHE_DIR", None)
    else:
        os.environ["PGMM_CACHE_DIR"] = previous
