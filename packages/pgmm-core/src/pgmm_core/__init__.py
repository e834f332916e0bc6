"""pgmm-core: plugin host, validated configs, model assembly, the trainer and the CLI of pgmm.

The public API is small and imported lazily, so ``import pgmm_core`` stays cheap (no torch until a
model or trainer is actually used):

* :func:`load_config` — JSON file + ``key=value`` overrides -> validated config
* :func:`build_model` — config -> :class:`~pgmm_core.model.MultimodalModel`
* :func:`train` — what ``python -m pgmm_core.train`` runs
* :class:`Captioner` — ``Captioner.from_run(run_dir).caption(images)``
* :class:`PluginHost`, :data:`hookimpl` — for plugin authors and embedding applications
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_config": ("pgmm_core.config.loading", "load_config"),
    "build_model": ("pgmm_core.model", "build_model"),
    "MultimodalModel": ("pgmm_core.model", "MultimodalModel"),
    "train": ("pgmm_core.train", None),  # the package is callable: pgmm_core.train(config)
    "PluginHost": ("pgmm_core.plugins", "PluginHost"),
    "Captioner": ("pgmm_core.captioner", "Captioner"),
    "hookimpl": ("pgmm_core.hookspecs", "hookimpl"),
    "ComponentConfig": ("pgmm_core.config.sections", "ComponentConfig"),
    "PgmmError": ("pgmm_core.errors", "PgmmError"),
    "ConfigError": ("pgmm_core.errors", "ConfigError"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pgmm_core' has no attribute {name!r}")
