"""The callback contract: a run-scoped plugin that receives the trainer's events."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pgmm_core.testing.contracts.base import ComponentContract

SAMPLE_METRICS = {"Bleu_1": 0.5, "Bleu_4": 0.2, "METEOR": 0.2, "ROUGE_L": 0.4, "CIDEr": 0.6}


class CallbackContract(ComponentContract):
    """The factory returns an object whose ``@hookimpl`` methods are ``pgmm_on_*`` event hooks.

    The trainer registers it as a plugin for the duration of a run, so it must register cleanly
    (known hook names, argument names from the specs) and take every event it implements.
    """

    kind: ClassVar[str] = "callback"

    def implemented_events(self, callback: Any) -> list[str]:
        from pgmm_core import hookspecs

        events = [name for name in dir(hookspecs) if name.startswith("pgmm_on_")]
        return [name for name in events if hasattr(getattr(callback, name, None), "pgmm_impl")]

    def test_registers_as_a_plugin(self, component_instance: Any) -> None:
        from pgmm_core.plugins import PluginHost

        host = PluginHost(load_entry_points=False, environ={})
        info = host.register(component_instance, name="callback-under-test")
        assert info.status == "loaded", info.error
        assert self.implemented_events(component_instance), "a callback implements at least one pgmm_on_* hook"

    def test_takes_every_event_it_implements(self, host: Any, component_config: Any, tmp_path: Path) -> None:
        from pgmm_core.plugins import PluginHost
        from pgmm_core.run_state import RunView

        callback = self.build(host, component_config)
        events = PluginHost(load_entry_points=False, environ={})
        events.register(callback, name="callback-under-test")
        run = RunView(config=None, output_dir=tmp_path, rank=0, world_size=1, model=None, step=1)
        arguments = {
            "pgmm_on_train_start": {"run": run},
            "pgmm_on_before_optimizer_step": {"run": self._run_with_gradients(tmp_path), "step": 1},
            "pgmm_on_step_end": {"run": run, "step": 1, "metrics": {"loss": 1.0, "lr": 1e-4}},
            "pgmm_on_eval_end": {"run": run, "step": 1, "metrics": dict(SAMPLE_METRICS)},
            "pgmm_on_checkpoint_saved": {"run": run, "step": 1, "path": str(tmp_path / "step-000001")},
            "pgmm_on_train_end": {"run": run, "summary": {"steps": 1, "metrics": dict(SAMPLE_METRICS)}},
        }
        for event in self.implemented_events(callback):
            events.call_event(event, **arguments[event])

    @staticmethod
    def _run_with_gradients(output_dir: Path) -> Any:
        """A run whose model holds gradients, as before a real optimizer step: a frozen part (no
        gradients) and a trainable one (after a backward)."""
        import torch

        from pgmm_core.run_state import RunView

        model = torch.nn.ModuleDict({"vision": torch.nn.Linear(4, 4), "projector": torch.nn.Linear(4, 2)})
        model["vision"].requires_grad_(False)
        model["projector"](model["vision"](torch.randn(3, 4))).square().mean().backward()
        return RunView(config=None, output_dir=output_dir, rank=0, world_size=1, model=model, step=0)

    def test_checkpoint_state_round_trips(self, host: Any, component_config: Any, tmp_path: Path) -> None:
        """A callback with ``state_dict()`` has JSON-native state that a fresh instance takes back
        (it is saved in checkpoints after the evaluation events and restored on resume)."""
        import json

        from pgmm_core.plugins import PluginHost
        from pgmm_core.run_state import RunView

        callback = self.build(host, component_config)
        if not callable(getattr(callback, "state_dict", None)):
            assert not callable(getattr(callback, "load_state_dict", None)), (
                "a callback defines state_dict() and load_state_dict() together")
            return
        assert callable(getattr(callback, "load_state_dict", None)), "state_dict() needs load_state_dict()"
        events = PluginHost(load_entry_points=False, environ={})
        events.register(callback, name="callback-under-test")
        run = RunView(config=None, output_dir=tmp_path, rank=0, world_size=1, model=None, step=1)
        if "pgmm_on_eval_end" in self.implemented_events(callback):
            events.call_event("pgmm_on_eval_end", run=run, step=1, metrics=dict(SAMPLE_METRICS))
        state = json.loads(json.dumps(callback.state_dict()))
        fresh = self.build(host, component_config)
        fresh.load_state_dict(state)
        assert fresh.state_dict() == state
