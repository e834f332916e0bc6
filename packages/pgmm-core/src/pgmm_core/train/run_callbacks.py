"""The callbacks a config lists (``train.callbacks``): built, registered for the run, and checkpointed.

Each is registered as a plugin for the duration of the run, so it receives the event hooks. A
callback that keeps state across events (early stopping's best value and patience count) defines
``state_dict()`` and ``load_state_dict(state)``; that state is saved with every checkpoint — after
the step's ``pgmm_on_eval_end`` has run — and restored when the run resumes.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


class RunCallbacks:
    def __init__(self, host: Any, configs: list[Any]) -> None:
        self.host = host
        self.callbacks: dict[str, Any] = {
            f"run-callback-{i}-{config.type}": host.build("callback", config) for i, config in enumerate(configs)
        }
        self.registered: list[str] = []

    def register(self) -> None:
        """Register every callback; one the host refuses (a misspelt hook name, a wrong signature)
        stops the run with the host's reason instead of silently never being called."""
        from pgmm_core.errors import PluginError

        for name, callback in self.callbacks.items():
            info = self.host.register(callback, name=name)
            self.registered.append(name)
            if info.status == "failed":
                self.unregister()
                raise PluginError(f"train.callbacks: {type(callback).__name__} ({name}) cannot be used: {info.error}")

    def unregister(self) -> None:
        while self.registered:
            self.host.unregister(self.registered.pop())

    # --- checkpoint state ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """``{callback name: its state}`` for the callbacks that have state."""
        return {name: callback.state_dict() for name, callback in self.callbacks.items()
                if callable(getattr(callback, "state_dict", None))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, saved in state.items():
            callback = self.callbacks.get(name)
            if callback is None or not callable(getattr(callback, "load_state_dict", None)):
                logger.warning("pgmm: the checkpoint holds state of callback %s, which this run does not have; "
                               "ignored", name)
                continue
            callback.load_state_dict(saved)
