"""An opt-in pytest plugin for testing pgmm plugins.

Enable it in the ``conftest.py`` at the root of your tests::

    pytest_plugins = ["pgmm_core.testing.pytest_plugin"]

or on the command line with ``pytest -p pgmm_core.testing.pytest_plugin``. It is not registered
through ``pytest11``, so installing pgmm never changes anyone else's test runs.

What it adds:

* a session-wide private ``PGMM_CACHE_DIR`` (unless one is set), so the tiny checkpoints that
  components such as ``tiny_openpangu`` create on first use never land in ``~/.cache``;
* a report header listing the installed pgmm plugins, with the error of any that failed to load —
  the first thing to read when a contract says a component is not registered;
* fixtures: ``pgmm_host`` (a fresh :class:`~pgmm_core.plugins.PluginHost` over the installed entry
  points; of the caller's ``PGMM_*`` filters only ``PGMM_DISABLE_PLUGINS`` is honoured) and
  ``pgmm_tiny_config`` (the fast complete config of :func:`pgmm_core.testing.tiny_config`, with its
  run directory in ``tmp_path``).

The contract classes themselves (:mod:`pgmm_core.testing.contracts`) need nothing from here; they are
re-exported for convenience.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from pgmm_core.testing.contracts import CONTRACTS

globals().update({contract.__name__: contract for contract in CONTRACTS.values()})  # re-exported


def _environ() -> dict[str, str]:
    """Only ``PGMM_DISABLE_PLUGINS`` of the caller's shell applies (to keep a broken plugin out)."""
    disabled = os.environ.get("PGMM_DISABLE_PLUGINS")
    return {"PGMM_DISABLE_PLUGINS": disabled} if disabled else {}


def pytest_report_header(config: pytest.Config) -> list[str]:
    from pgmm_core.plugins import PluginHost

    try:
        plugins = PluginHost(environ=_environ(), warn_failures=False).plugins
    except Exception as exc:  # a plugin host bug: show it, let the tests tell the rest
        return [f"pgmm plugins: could not be listed: {type(exc).__name__}: {exc}"]
    lines = ["pgmm plugins: " + ", ".join(
        f"{p.name} ({p.distribution or 'in-process'} {p.version or ''}".rstrip() + f") {p.status}"
        for p in plugins)]
    lines += [f"  failed: {p.name} ({p.distribution}): {p.error}" for p in plugins if p.status == "failed"]
    return lines


@pytest.fixture(scope="session", autouse=True)
def pgmm_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Where components create cached files during the session (``PGMM_CACHE_DIR``)."""
    existing = os.environ.get("PGMM_CACHE_DIR")
    if existing:
        yield existing
        return
    cache = str(tmp_path_factory.mktemp("pgmm-cache"))
    os.environ["PGMM_CACHE_DIR"] = cache
    try:
        yield cache
    finally:
        os.environ.pop("PGMM_CACHE_DIR", None)


@pytest.fixture()
def pgmm_host() -> Any:
    """A fresh plugin host over the installed entry points (honouring ``PGMM_DISABLE_PLUGINS``)."""
    from pgmm_core.plugins import PluginHost

    return PluginHost(environ=_environ())


@pytest.fixture()
def pgmm_tiny_config(tmp_path: Any) -> Callable[..., dict[str, Any]]:
    """``pgmm_tiny_config(**sections)``: a complete tiny config dict whose run directory is in tmp_path."""
    from pgmm_core.testing import tiny_config

    def make(**sections: Any) -> dict[str, Any]:
        return tiny_config(tmp_path / "run", **sections)

    return make
