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

Every hook is called through pluggy's hook caller, so pluggy's order holds: for one hook, the
implementations marked ``wrapper=True`` (or the older ``hookwrapper=True``) run around all the
others; then ``tryfirst`` implementations, then the plain ones, then ``trylast`` ones; within each of
those groups the plugin registered **last** is called **first**. Registration hooks are called one
plugin at a time (pgmm-core, then the other entry points by name, then in-process plugins in
registration order), so a failing plugin is isolated and every component names its provider.

Each hook that registers a component kind is named by that kind's row in :mod:`pgmm_core.kinds`; a
test checks that the rows and the specs below agree. Hook names and argument names are part of the
public API: see ``docs/plugins.md`` for the versioning promise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

from pgmm_core import kinds

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
    """Add vision towers. Factory: ``factory(config) -> VisionEncoder`` (with its ``image_spec``; the
    config model's ``image_spec()`` gives the same spec without building the tower)."""


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
    """Add datasets. Factory: ``factory(config, *, split, image_spec, image_size) -> CaptionDataset``.

    ``image_spec`` is the vision encoder's :class:`~pgmm_core.preprocessing.ImageSpec` (size, mean/std,
    interpolation, crop): prepare images by it, e.g. with ``pgmm_core.preprocessing.eval_transform``;
    augmentation is the dataset config's choice. ``image_size`` (= ``image_spec.size``) is still passed
    for factories written before specs existed."""


@hookspec
def pgmm_register_device_backends(registrar: Registrar) -> None:
    """Add device backends. Factory: ``factory(config) -> DeviceBackend``."""


@hookspec
def pgmm_register_callbacks(registrar: Registrar) -> None:
    """Add training callbacks. Factory: ``factory(config) -> object implementing pgmm_on_* hooks``."""


@hookspec
def pgmm_register_objectives(registrar: Registrar) -> None:
    """Add training objectives (what a batch holds, the loss, the model parts, the evaluation).
    Factory: ``factory(config) -> Objective`` (:class:`pgmm_core.objectives.base.Objective`)."""


@hookspec
def pgmm_register_strategies(registrar: Registrar) -> None:
    """Add training strategies (how training is spread over processes: wrapping, gradient sync,
    state for checkpoints). Factory: ``factory(config, *, device_backend) -> Strategy``
    (:class:`pgmm_core.strategies.base.Strategy`)."""


@hookspec
def pgmm_register_commands(registrar: CommandRegistrar) -> None:
    """Add subcommands to ``python -m pgmm_core`` (for example ``data check``)."""


# --- training events ------------------------------------------------------------------------------


@hookspec
def pgmm_on_train_start(run: RunView) -> None:
    """Called on every rank after the model, data and optimizer are ready, before the first step."""


@hookspec
def pgmm_on_before_optimizer_step(run: RunView, step: int) -> None:
    """Called on every rank before the optimizer takes step ``step``, with the gradients in place:
    accumulated, averaged over ranks, unscaled (fp16) and clipped (``train.grad_clip``). Read them
    from ``run.model``'s parameters; do not change them. Not called for a step skipped because its
    loss or gradient norm is not finite."""


@hookspec
def pgmm_on_step_end(run: RunView, step: int, metrics: dict[str, float]) -> None:
    """Called on every rank after each optimizer step (the gradients are cleared by then). ``metrics``
    is the logged record — filled on logging steps (every ``train.log_every`` steps and the last
    step), empty otherwise; docs/plugins.md lists its keys."""


@hookspec
def pgmm_on_eval_end(run: RunView, step: int, metrics: dict[str, float]) -> None:
    """Called on every rank after an evaluation, with the metrics already reduced across ranks."""


@hookspec
def pgmm_on_checkpoint_saved(run: RunView, step: int, path: str) -> None:
    """Called on rank 0 after a checkpoint directory is complete on disk."""


@hookspec
def pgmm_on_train_end(run: RunView, summary: dict[str, Any]) -> None:
    """Called on every rank when training finishes (also after an early stop)."""


REGISTRATION_HOOKS: dict[str, str] = kinds.registration_hooks()
"""Component kind -> the hook that registers it (from :data:`pgmm_core.kinds.KINDS`). The kind is what
``plugins`` prints (``kind:name``)."""
