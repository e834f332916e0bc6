"""Every hook pgmm calls, in one place.

A plugin is any module or object with functions decorated by :data:`hookimpl` and named after the
specs below. Installed plugins are found through the ``pgmm`` entry-point group; tests and
applications can also register plugin objects in-process with :meth:`PluginHost.register`.

Two families of hooks exist:

* **Registration hooks** (``pgmm_register_*``) receive a :class:`~pgmm_core.registry.Registrar`
  bound to one component kind. They run once per host, lazily, the first time components are
  needed. They must stay cheap: register names, pydantic config models and factories (a callable or
  a ``"module:attr"`` string imported only when the component is built) — never import torch here.
* **Event hooks** (``pgmm_on_*``) are called by the trainer. Callback components configured in
  ``train.callbacks`` are registered as plugins for the duration of a run, so they receive exactly
  these calls; an installed plugin may implement them too (a logger that always runs, say).

Hook names and argument names are part of the public API: see ``docs/plugins.md`` for the
versioning promise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pgmm_core.commands import CommandRegistrar
    from pgmm_core.registry import Registrar
    from pgmm_core.run_state import RunView

PROJECT_NAME = "pgmm"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --- registration hooks -------------------------------------------------------------------------


@hookspec
def pgmm_register_vision_encoders(registrar: Registrar) -> None:
    """Add vision towers. Factory: ``factory(config) -> VisionEncoder``."""


@hookspec
def pgmm_register_connectors(registrar: Registrar) -> None:
    """Add connectors (the Q-Former, resamplers). Factory: ``factory(config, *, encoder_width)``."""


@hookspec
def pgmm_register_projectors(registrar: Registrar) -> None:
    """Add projectors. Factory: ``factory(config, *, in_features, out_features) -> nn.Module``."""


@hookspec
def pgmm_register_llm_backends(registrar: Registrar) -> None:
    """Add language-model backends. Factory: ``factory(config) -> LLMBackend``."""


@hookspec
def pgmm_register_datasets(registrar: Registrar) -> None:
    """Add datasets. Factory: ``factory(config, *, split, image_size) -> CaptionDataset``."""


@hookspec
def pgmm_register_device_backends(registrar: Registrar) -> None:
    """Add device backends. Factory: ``factory(config) -> DeviceBackend``."""


@hookspec
def pgmm_register_callbacks(registrar: Registrar) -> None:
    """Add training callbacks. Factory: ``factory(config) -> object implementing pgmm_on_* hooks``."""


@hookspec
def pgmm_register_strategies(registrar: Registrar) -> None:
    """Add training strategies (how training is spread over processes).
    Factory: ``factory(config, *, device_backend) -> pgmm_core.strategies.base.Strategy``."""


@hookspec
def pgmm_register_commands(registrar: CommandRegistrar) -> None:
    """Add subcommands to ``python -m pgmm_core`` (for example ``data check``)."""


# --- training events ------------------------------------------------------------------------------


@hookspec
def pgmm_on_train_start(run: RunView) -> None:
    """Called on every rank after the model, data and optimizer are ready, before the first step."""


@hookspec
def pgmm_on_step_end(run: RunView, step: int, metrics: dict[str, float]) -> None:
    """Called on every rank after each optimizer step with the step's logged metrics."""


@hookspec
def pgmm_on_eval_end(run: RunView, step: int, metrics: dict[str, float]) -> None:
    """Called on every rank after an evaluation, with the metrics already reduced across ranks."""


@hookspec
def pgmm_on_checkpoint_saved(run: RunView, step: int, path: str) -> None:
    """Called on rank 0 after a checkpoint directory is complete on disk."""


@hookspec
def pgmm_on_train_end(run: RunView, summary: dict[str, Any]) -> None:
    """Called on every rank when training finishes (also after an early stop)."""


REGISTRATION_HOOKS: dict[str, str] = {
    "vision": "pgmm_register_vision_encoders",
    "connector": "pgmm_register_connectors",
    "projector": "pgmm_register_projectors",
    "llm": "pgmm_register_llm_backends",
    "dataset": "pgmm_register_datasets",
    "device": "pgmm_register_device_backends",
    "callback": "pgmm_register_callbacks",
    "strategy": "pgmm_register_strategies",
}
"""Component kind -> the hook that registers it. The kind is what ``plugins`` prints (``kind:name``)."""
