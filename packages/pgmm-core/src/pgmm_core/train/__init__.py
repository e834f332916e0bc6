"""The trainer. ``python -m pgmm_core.train --config FILE [k=v ...]`` runs :func:`train`.

``pgmm_core.train`` is both this package and the public function ``pgmm_core.train(config)``:
importing a submodule makes Python bind the package to that attribute, so the package module itself
is made callable and forwards to :func:`train`.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def train(config: Any, *, resume: str | None = None) -> dict[str, Any]:
    """Train the model a validated config describes; returns a summary (steps, losses, metrics).

    Every file the run would open is checked first (as ``validate`` does), so a missing checkpoint
    or data file is reported at once, with its config path, before minutes of model building."""
    from pgmm_core.config.files import missing_paths
    from pgmm_core.errors import ConfigError
    from pgmm_core.train.loop import Trainer

    missing = missing_paths(config)
    if missing:
        raise ConfigError(missing)
    return Trainer(config, resume=resume).run()


class _CallablePackage(types.ModuleType):
    def __call__(self, config: Any, *, resume: str | None = None) -> dict[str, Any]:
        return train(config, resume=resume)


sys.modules[__name__].__class__ = _CallablePackage
