"""pgmm-core: plugin host, validated configs, model assembly, the trainer and the CLI of pgmm.

The public API is small and imported lazily, so ``import pgmm_core`` stays cheap (no torch until a
model or trainer is actually used):

* :func:`load_config` — JSON file + ``key=value`` overrides -> validated config
* :func:`build_model` — config -> :class:`~pgmm_core.model.MultimodalModel`
* :func:`train` — what ``python -m pgmm_core.train`` runs
* :class:`Captioner` — ``Captioner.from_run(run_dir).caption(images)``
* :class:`Assistant` — ``Assistant.from_run(run_dir).ask(image, question, history=...)``
* :class:`PluginHost`, :data:`hookimpl` — for plugin authors and embedding applications
* :func:`read_run_weights`, :func:`is_run_directory` — a run's trainable weights, for tools such as
  pgmm-vision's ``convert``

``dir(pgmm_core)`` and ``from pgmm_core import *`` list exactly this API (``__all__``).
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
    "Assistant": ("pgmm_core.assistant", "Assistant"),
    "hookimpl": ("pgmm_core.hookspecs", "hookimpl"),
    "ComponentConfig": ("pgmm_core.config.sections", "ComponentConfig"),
    "PgmmError": ("pgmm_core.errors", "PgmmError"),
    "ConfigError": ("pgmm_core.errors", "ConfigError"),
    "read_run_weights": ("pgmm_core.run_weights", "read_run_weights"),
    "is_run_directory": ("pgmm_core.run_weights", "is_run_directory"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __dir__() -> list[str]:
    """The public API (imported only on first use) and the module's dunders; not its helpers and
    not the submodules that happen to be imported already."""
    return sorted(set(__all__) | {name for name in globals() if name.startswith("__")})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pgmm_core' has no attribute {name!r}")
