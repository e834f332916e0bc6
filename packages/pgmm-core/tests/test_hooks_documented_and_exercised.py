"""Every hook is documented in docs/plugins.md and exercised here, through a real training run.

One in-process plugin implements every hookspec. Its registration hooks register a component of each
kind (thin wrappers around first-party ones that record how pgmm built them), the tiny config uses
all of them, and a two-step training run then calls every event hook on both the installed plugin
and the run-scoped callback it registered. A new hook without documentation or without a test here
fails this module.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any, Literal

import pytest

from pgmm_core import hookspecs
from pgmm_core.callbacks.configs import EarlyStoppingConfig
from pgmm_core.devices.configs import CpuConfig
from pgmm_core.hookspecs import hookimpl
from pgmm_core.objectives.configs import CaptionObjectiveConfig
from pgmm_core.plugins import PluginHost
from pgmm_core.preprocessing import clip_spec
from pgmm_core.strategies.configs import SingleStrategyConfig
from pgmm_core.testing import tiny_config
from pgmm_data.configs import SyntheticShapesConfig
from pgmm_pangu.configs import TinyOpenPanguConfig
from pgmm_vision.configs import EvaViTGConfig, LinearProjectorConfig, QFormerConfig

DOCS = Path(__file__).parents[3] / "docs" / "plugins.md"


def hook_specs() -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in vars(hookspecs).items()
            if callable(fn) and hasattr(fn, f"{hookspecs.PROJECT_NAME}_spec")}


def test_every_hook_is_documented_with_its_signature():
    text = DOCS.read_text(encoding="utf-8")
    specs = hook_specs()
    assert len(specs) >= 13
    for name, signature in specs.items():
        heading = f"### `{name}({', '.join(signature.parameters)})`"
        assert heading in text, f"docs/plugins.md has no section {heading}"
    documented = set(re.findall(r"^### `(pgmm_\w+)\(", text, flags=re.MULTILINE))
    assert documented == set(specs), f"documented but not hooks: {sorted(documented - set(specs))}"


# --- a plugin implementing every hook -----------------------------------------------------------


class RecordedEva(EvaViTGConfig):
    type: Literal["recorded_eva"] = "recorded_eva"


class RecordedQFormer(QFormerConfig):
    type: Literal["recorded_qformer"] = "recorded_qformer"


class RecordedLinear(LinearProjectorConfig):
    type: Literal["recorded_linear"] = "recorded_linear"


class RecordedTinyPangu(TinyOpenPanguConfig):
    type: Literal["recorded_pangu"] = "recorded_pangu"


class RecordedShapes(SyntheticShapesConfig):
    type: Literal["recorded_shapes"] = "recorded_shapes"


class RecordedCpu(CpuConfig):
    type: Literal["recorded_cpu"] = "recorded_cpu"


class RecordedCaption(CaptionObjectiveConfig):
    type: Literal["recorded_caption"] = "recorded_caption"


class RecordedSingle(SingleStrategyConfig):
    type: Literal["recorded_single"] = "recorded_single"


class RecorderConfig(EarlyStoppingConfig):
    type: Literal["recorder"] = "recorder"


def recording(kind: str, target: str, log: list[tuple[str, dict[str, Any]]]):
    """A factory that records the context pgmm passes, then builds the first-party component."""
    module, _, attr = target.partition(":")

    def factory(config: Any, **context: Any) -> Any:
        log.append((kind, context))
        return getattr(importlib.import_module(module), attr)(config, **context)

    return factory


class EventLog:
    """Implements every event hook and records (hook, arguments)."""

    def __init__(self, calls: list[tuple[str, dict[str, Any]]]) -> None:
        self.calls = calls

    @hookimpl
    def pgmm_on_train_start(self, run):
        self.calls.append(("pgmm_on_train_start", {"step": run.step}))

    @hookimpl
    def pgmm_on_before_optimizer_step(self, run, step):
        grads = [p.grad for p in run.model.parameters() if p.requires_grad]
        self.calls.append(("pgmm_on_before_optimizer_step", {
            "step": step, "run_step": run.step, "all_grads": all(g is not None for g in grads),
            "nonzero": any(bool(g.abs().sum() > 0) for g in grads if g is not None)}))

    @hookimpl
    def pgmm_on_step_end(self, run, step, metrics):
        self.calls.append(("pgmm_on_step_end", {
            "step": step, "metrics": dict(metrics),
            "grads_cleared": all(p.grad is None for p in run.model.parameters())}))

    @hookimpl
    def pgmm_on_eval_end(self, run, step, metrics):
        self.calls.append(("pgmm_on_eval_end", {"step": step, "metrics": dict(metrics)}))

    @hookimpl
    def pgmm_on_checkpoint_saved(self, run, step, path):
        self.calls.append(("pgmm_on_checkpoint_saved", {"step": step, "path": path}))

    @hookimpl
    def pgmm_on_train_end(self, run, summary):
        self.calls.append(("pgmm_on_train_end", {"summary": dict(summary)}))


class EveryHook(EventLog):
    def __init__(self) -> None:
        super().__init__([])
        self.registered: list[tuple[str, str]] = []
        self.built: list[tuple[str, dict[str, Any]]] = []
        self.callback_calls: list[tuple[str, dict[str, Any]]] = []
        self.command_runs: list[str] = []

    def _add(self, registrar, name, target, config_model):
        self.registered.append((registrar.kind, name))
        registrar.add(name, recording(registrar.kind, target, self.built), config_model, description="recorded")

    @hookimpl
    def pgmm_register_vision_encoders(self, registrar):
        self._add(registrar, "recorded_eva", "pgmm_vision.eva:build_eva_vit_g", RecordedEva)

    @hookimpl
    def pgmm_register_connectors(self, registrar):
        self._add(registrar, "recorded_qformer", "pgmm_vision.qformer:build_qformer", RecordedQFormer)

    @hookimpl
    def pgmm_register_projectors(self, registrar):
        self._add(registrar, "recorded_linear", "pgmm_vision.projectors:build_linear", RecordedLinear)

    @hookimpl
    def pgmm_register_llm_backends(self, registrar):
        self._add(registrar, "recorded_pangu", "pgmm_pangu.backend:build_tiny_openpangu", RecordedTinyPangu)

    @hookimpl
    def pgmm_register_datasets(self, registrar):
        self._add(registrar, "recorded_shapes", "pgmm_data.synthetic:build_synthetic_shapes", RecordedShapes)

    @hookimpl
    def pgmm_register_device_backends(self, registrar):
        self._add(registrar, "recorded_cpu", "pgmm_core.devices.cpu:build_cpu", RecordedCpu)

    @hookimpl
    def pgmm_register_objectives(self, registrar):
        self._add(registrar, "recorded_caption", "pgmm_core.objectives.caption:build_caption_objective",
                  RecordedCaption)

    @hookimpl
    def pgmm_register_callbacks(self, registrar):
        self.registered.append((registrar.kind, "recorder"))
        registrar.add("recorder", lambda config: EventLog(self.callback_calls), RecorderConfig,
                      description="records every event of the run")

    @hookimpl
    def pgmm_register_strategies(self, registrar):
        self._add(registrar, "recorded_single", "pgmm_core.strategies.single:build_single", RecordedSingle)

    @hookimpl
    def pgmm_register_commands(self, registrar):
        def configure(parser):
            parser.add_argument("--name", required=True)

        def run(namespace):
            self.command_runs.append(namespace.name)
            return 0

        registrar.add("recorded-hello", help="records that it ran", configure=configure, run=run)


def test_every_hook_is_implemented_by_the_recorder():
    implemented = {name for name in dir(EveryHook) if name.startswith("pgmm_")}
    assert implemented == set(hook_specs())


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    """Two optimizer steps of the tiny model built entirely from the recorder's components."""
    from pgmm_core.config.loading import validate_config
    from pgmm_core.train import train

    plugin = EveryHook()
    host = PluginHost(environ={})
    host.register(plugin, name="every-hook", distribution="pgmm-test-hooks", version="1.0")
    out = tmp_path_factory.mktemp("hooks") / "run"
    data = tiny_config(out, train={"max_steps": 2, "log_every": 1, "callbacks": [{"type": "recorder"}]},
                       eval={"generation": {"num_beams": 1, "max_new_tokens": 3, "min_new_tokens": 1}})
    model = data["model"]
    for slot, name in (("vision", "recorded_eva"), ("connector", "recorded_qformer"),
                       ("projector", "recorded_linear"), ("llm", "recorded_pangu")):
        model[slot]["type"] = name
    data["data"]["train"] = [{"type": "recorded_shapes", "num_samples": 16}]
    data["data"]["val"] = [{"type": "recorded_shapes", "num_samples": 2}]
    data["device"] = {"type": "recorded_cpu"}
    data["objective"] = {"type": "recorded_caption"}
    data["strategy"] = {"type": "recorded_single"}
    config = validate_config(data, host, source="hooks test")
    summary = train(config)
    return plugin, host, summary, out


def test_registration_hooks_register_components_that_pgmm_builds(recorded_run):
    plugin, host, summary, _ = recorded_run
    assert {kind for kind, _ in plugin.registered} == set(hookspecs.REGISTRATION_HOOKS)
    built = {kind: context for kind, context in plugin.built}
    assert set(built) == {"vision", "connector", "projector", "llm", "dataset", "device", "objective", "strategy"}
    assert built["objective"] == {}
    assert set(built["strategy"]) == {"device_backend"}
    assert built["connector"] == {"encoder_width": 32}
    assert built["projector"] == {"in_features": 32, "out_features": 32}
    splits = sorted(context["split"] for kind, context in plugin.built if kind == "dataset")
    assert splits == ["train", "val"]
    assert all(context.get("image_size") == 32 for kind, context in plugin.built if kind == "dataset")
    specs = {context.get("image_spec") for kind, context in plugin.built if kind == "dataset"}
    assert specs == {clip_spec(32)}  # the (EVA) vision encoder's preprocessing


def test_event_hooks_reach_installed_plugins_and_run_callbacks(recorded_run):
    plugin, _, summary, out = recorded_run
    for calls in (plugin.calls, plugin.callback_calls):
        names = [name for name, _ in calls]
        assert names[0] == "pgmm_on_train_start" and names[-1] == "pgmm_on_train_end"
        steps = [args["step"] for name, args in calls if name == "pgmm_on_step_end"]
        assert steps == [1, 2]
        before = [args for name, args in calls if name == "pgmm_on_before_optimizer_step"]
        assert [(b["step"], b["run_step"]) for b in before] == [(1, 0), (2, 1)]
        assert all(b["all_grads"] and b["nonzero"] for b in before)  # gradients present before the step
        assert all(args["grads_cleared"] for name, args in calls if name == "pgmm_on_step_end")
        order = [name for name, _ in calls if name in ("pgmm_on_before_optimizer_step", "pgmm_on_step_end")]
        assert order == ["pgmm_on_before_optimizer_step", "pgmm_on_step_end"] * 2
        assert all("loss" in args["metrics"] for name, args in calls if name == "pgmm_on_step_end")
        evals = [args for name, args in calls if name == "pgmm_on_eval_end"]
        assert len(evals) == 1 and evals[0]["step"] == 2 and "Bleu_4" in evals[0]["metrics"]
        saved = [args for name, args in calls if name == "pgmm_on_checkpoint_saved"]
        assert [s["step"] for s in saved] == [2]
        assert (Path(saved[0]["path"]) / "model.safetensors").is_file()
        assert calls[-1][1]["summary"]["steps"] == summary["steps"] == 2
    assert str(out) == summary["output_dir"]


def test_command_hook_adds_a_working_subcommand(recorded_run):
    from pgmm_core.cli import build_parser

    plugin, host, _, _ = recorded_run
    args = build_parser(host).parse_args(["recorded-hello", "--name", "pgmm"])
    assert args._run(args) == 0
    assert plugin.command_runs == ["pgmm"]


def test_every_hook_was_called(recorded_run):
    plugin, host, _, _ = recorded_run
    from pgmm_core.cli import build_parser

    build_parser(host)  # commands are collected on demand
    called = {name for name, _ in plugin.calls}
    called |= {hook for kind, hook in hookspecs.REGISTRATION_HOOKS.items()
               if kind in {k for k, _ in plugin.registered}}
    called |= {"pgmm_register_commands"} if "recorded-hello" in host.commands().commands else set()
    assert called == set(hook_specs())
