"""``dir(pgmm_core)`` shows the public API although it is imported lazily; ``__all__`` names it."""

from __future__ import annotations

import subprocess
import sys

import pgmm_core

PUBLIC = {"Assistant", "Captioner", "ComponentConfig", "ConfigError", "MultimodalModel", "PgmmError", "PluginHost",
          "build_model", "hookimpl", "is_run_directory", "load_config", "read_run_weights", "train", "__version__"}


def test_dir_lists_the_public_api_and_not_the_helpers():
    listed = set(dir(pgmm_core))
    assert PUBLIC <= listed
    assert set(pgmm_core.__all__) == PUBLIC
    assert not {name for name in listed - PUBLIC if not name.startswith("__")}, "helpers or submodules listed"


def test_every_listed_name_resolves_and_star_import_gives_them():
    for name in pgmm_core.__all__:
        assert getattr(pgmm_core, name) is not None, name
    namespace: dict = {}
    exec("from pgmm_core import *", namespace)
    assert set(namespace) - {"__builtins__"} == PUBLIC


def test_dir_imports_nothing_heavy():
    code = ("import sys, pgmm_core; names = dir(pgmm_core); "
            "print('torch' in sys.modules, 'load_config' in names, 'train' in names)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "True", "True"], result.stderr
