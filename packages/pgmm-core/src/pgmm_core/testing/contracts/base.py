"""What every component contract checks: registration, the config model, an import-cheap plugin.

A contract is a pytest test class. A plugin's test module subclasses the contract of its component's
kind and says which component to test and with which tiny config::

    from pgmm_core.testing.contracts import VisionEncoderContract

    class TestMyTower(VisionEncoderContract):
        component = "my_tower"                 # the name given to registrar.add
        distribution = "pgmm-my-plugin"        # the pip distribution whose entry point registers it
        config = {"depth": 1, "width": 16}     # a tiny config, without "type"

Everything is checked through a real :class:`~pgmm_core.plugins.PluginHost` that loads the installed
``pgmm`` entry points, exactly as ``python -m pgmm_core.train`` would, so the plugin must be
installed (``pip install -e .`` during development). A config that needs files (a dataset root, a
checkpoint) overrides the class-scoped ``component_fields`` fixture and creates them with
``tmp_path_factory``.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest

HEAVY_MODULES = ("torch", "torchvision", "transformers", "timm", "torch_npu")
"""Modules a plugin module and its config models must not import (``plugins``/``schema``/``validate``
run without them)."""

SLOTS: dict[str, tuple[tuple[Any, ...], ...]] = {
    "vision": (("model", "vision"),),
    "connector": (("model", "connector"),),
    "projector": (("model", "projector"),),
    "llm": (("model", "llm"),),
    "dataset": (("data", "train", 0), ("data", "val", 0)),
    "device": (("device",),),
    "callback": (("train", "callbacks", 0),),
    "strategy": (("strategy",),),
}
"""Where in a config each kind of component goes (the slot check fills every path listed)."""

_IMPORT_CHECK = textwrap.dedent(
    """
    import importlib, json, sys
    target, heavy = sys.argv[1:3]
    module_name, _, attr = target.partition(":")
    plugin = importlib.import_module(module_name)
    if attr:
        plugin = getattr(plugin, attr)
    from pgmm_core.plugins import PluginHost
    host = PluginHost(load_entry_points=False, environ={})
    info = host.register(plugin, name="plugin-under-test")
    for registry in host.registries().values():
        for spec in registry:
            spec.config_model.model_json_schema()
            spec.availability()
    imported = sorted({m.split(".")[0] for m in sys.modules} & set(heavy.split(",")))
    print(json.dumps({"status": info.status, "error": info.error, "components": info.components,
                      "heavy": imported}))
    """
)
_import_reports: dict[str, dict[str, Any]] = {}


def import_report(target: str) -> dict[str, Any]:
    """Import a plugin (entry-point target) in a fresh interpreter, register it, build its config
    schemas and run its availability probes; report which heavy modules that imported. Cached per
    target, since every component of a plugin shares the answer."""
    if target not in _import_reports:
        result = subprocess.run([sys.executable, "-c", _IMPORT_CHECK, target, ",".join(HEAVY_MODULES)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"importing the plugin {target} failed:\n{result.stderr[-3000:]}"
        _import_reports[target] = json.loads(result.stdout.strip().splitlines()[-1])
    return _import_reports[target]


def _normalise(name: str | None) -> str:
    return (name or "").strip().lower().replace("_", "-")


def set_path(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    """Put ``value`` at ``path`` in a nested dict/list config, creating lists where needed."""
    current: Any = data
    for i, element in enumerate(path[:-1]):
        following = path[i + 1]
        if isinstance(current, dict) and element not in current:
            current[element] = [] if isinstance(following, int) else {}
        current = current[element]
    last = path[-1]
    if isinstance(current, list):
        if last < len(current):
            current[last] = value
        else:
            current.append(value)
    else:
        current[last] = value


def get_path(data: Any, path: tuple[Any, ...]) -> Any:
    for element in path:
        data = getattr(data, element) if not isinstance(element, int) else data[element]
    return data


def slot_mapping(schema: dict[str, Any], path: tuple[Any, ...]) -> dict[str, str]:
    """The discriminator mapping (``type`` value -> schema ref) at a slot of the root JSON schema."""
    defs = schema.get("$defs", {})

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        if "anyOf" in node and "discriminator" not in node:  # Optional[...] or default wrappers
            refs = [n for n in node["anyOf"] if n.get("type") != "null"]
            if len(refs) == 1:
                return resolve(refs[0])
        return node

    node = resolve(schema)
    for element in path:
        node = resolve(node["items"] if isinstance(element, int) else node["properties"][element])
    return node.get("discriminator", {}).get("mapping", {})


class ComponentContract:
    """Checks shared by every kind. Subclass one of the kind-specific contracts, not this class."""

    kind: ClassVar[str] = ""
    component: ClassVar[str] = ""
    """The registered name (what users write in ``type``)."""
    distribution: ClassVar[str] = ""
    """The pip distribution expected to provide the component through its ``pgmm`` entry point."""
    config: ClassVar[dict[str, Any]] = {}
    """A tiny config for the component, without ``type`` (JSON-native values)."""

    # --- fixtures (class-scoped: build once, check many times) ----------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def host(cls) -> Any:
        """A plugin host over the installed entry points, ignoring the caller's PGMM_* filters."""
        from pgmm_core.plugins import PluginHost

        return PluginHost(environ={})

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls) -> dict[str, Any]:
        """The component's config fields; override to create files the config points at."""
        return copy.deepcopy(cls.config)

    @pytest.fixture(scope="class")
    @classmethod
    def spec(cls, host: Any) -> Any:
        cls._require_declared()
        registry = host.registry(cls.kind)
        if cls.component not in registry:
            pytest.fail(cls._not_registered_message(host))
        return registry.get(cls.component)

    @pytest.fixture(scope="class")
    @classmethod
    def component_config(cls, spec: Any, component_fields: dict[str, Any]) -> Any:
        return spec.config_model.model_validate({"type": cls.component, **component_fields})

    @pytest.fixture(scope="class")
    @classmethod
    def component_instance(cls, host: Any, component_config: Any) -> Any:
        """One instance built from the tiny config, shared by the read-only checks of the class."""
        return cls().build(host, component_config)

    # --- hooks for subclasses --------------------------------------------------------------------

    def build_context(self) -> dict[str, Any]:
        """Keyword arguments the kind's factory receives besides the config."""
        return {}

    def build(self, host: Any, config: Any) -> Any:
        """Build the component the way pgmm does (through the host's registry)."""
        return host.build(self.kind, config, **self.build_context())

    def with_fields(self, component_config: Any, **changes: Any) -> Any:
        """A copy of the config with some fields changed, validated again."""
        data = component_config.model_dump(mode="json")
        data.update(changes)
        return type(component_config).model_validate(data)

    # --- helpers ---------------------------------------------------------------------------------

    @classmethod
    def _require_declared(cls) -> None:
        missing = [attr for attr in ("kind", "component", "distribution") if not getattr(cls, attr)]
        if missing:
            pytest.fail(f"{cls.__name__} must set {', '.join(missing)} (see pgmm_core.testing.contracts)")

    @classmethod
    def _not_registered_message(cls, host: Any) -> str:
        lines = [f"{cls.kind} component '{cls.component}' is not registered "
                 f"(known: {', '.join(host.registry(cls.kind).all_names()) or 'none'})."]
        for info in host.plugins:
            if info.status == "failed":
                lines.append(f"  plugin '{info.name}' ({info.distribution}) failed: {info.error}")
        wanted = _normalise(cls.distribution)
        if not any(_normalise(info.distribution) == wanted for info in host.plugins):
            lines.append(f"  distribution {cls.distribution} is not installed, or declares no 'pgmm' entry "
                         "point: install it (pip install -e .) and check [project.entry-points.pgmm]")
        return "\n".join(lines)

    def _plugin_target(self, host: Any, spec: Any) -> str:
        info = next(i for i in host.plugins if i.name == spec.provider.plugin)
        return info.module

    # --- registration ----------------------------------------------------------------------------

    def test_registered_by_its_distribution(self, host: Any) -> None:
        self._require_declared()
        registry = host.registry(self.kind)
        assert self.component in registry, self._not_registered_message(host)
        spec = registry.get(self.component)
        assert spec.name == self.component, f"'{self.component}' is an alias of '{spec.name}'; test the name"
        assert _normalise(spec.provider.distribution) == _normalise(self.distribution), (
            f"'{self.component}' is provided by {spec.provider}, not by {self.distribution}")
        info = next(i for i in host.plugins if i.name == spec.provider.plugin)
        assert info.status == "loaded", info.error
        assert f"{self.kind}:{self.component}" in info.components
        assert spec.description, "registrar.add(..., description=...) is shown by `python -m pgmm_core plugins`"

    def test_plugin_module_imports_without_torch(self, host: Any, spec: Any) -> None:
        """The entry point's module, the config models and the availability probes stay import-cheap."""
        target = self._plugin_target(host, spec)
        report = import_report(target)
        assert report["status"] == "loaded", report["error"]
        assert f"{self.kind}:{self.component}" in report["components"]
        assert report["heavy"] == [], (
            f"importing {target}, building its config schemas and probing availability imported "
            f"{report['heavy']}; import heavy libraries inside factories, and register factories as "
            "'module:attr' strings")

    # --- the config model ------------------------------------------------------------------------

    def test_config_model_declares_its_type(self, spec: Any) -> None:
        from pgmm_core.config.sections import ComponentConfig
        from pgmm_core.registry import literal_values

        model = spec.config_model
        assert issubclass(model, ComponentConfig), f"{model.__qualname__} should subclass ComponentConfig"
        assert self.component in literal_values(model)
        assert model.model_fields["type"].default == self.component, (
            f'{model.__qualname__}: declare `type: Literal["{self.component}"] = "{self.component}"`')
        assert model.model_config.get("extra") == "forbid"

    def test_config_json_schema(self, host: Any, spec: Any) -> None:
        schema = spec.config_model.model_json_schema()
        json.dumps(schema)
        type_schema = schema["properties"]["type"]
        allowed = type_schema.get("enum") or [type_schema.get("const")]
        assert self.component in allowed, type_schema
        root = host.config_model().model_json_schema()
        for path in SLOTS[self.kind]:
            mapping = slot_mapping(root, path)
            assert self.component in mapping, (
                f"the config schema does not offer '{self.component}' at {'.'.join(map(str, path))}")

    def test_config_round_trip(self, component_config: Any) -> None:
        model = type(component_config)
        python_dump = component_config.model_dump()
        text = json.dumps(python_dump)  # JSON-native fields only: no torch.dtype, no Path, no tuples of objects
        assert model.model_validate(json.loads(text)) == component_config
        assert model.model_validate_json(component_config.model_dump_json()) == component_config

    def test_config_forbids_unknown_fields(self, spec: Any, component_fields: dict[str, Any]) -> None:
        from pydantic import ValidationError

        with pytest.raises(ValidationError, match="pgmm_contract_unknown_field"):
            spec.config_model.model_validate(
                {"type": self.component, **component_fields, "pgmm_contract_unknown_field": 1})

    def test_config_validates_in_its_slot(self, host: Any, spec: Any, component_config: Any,
                                          tmp_path: Path) -> None:
        from pgmm_core.config.loading import validate_config
        from pgmm_core.testing import tiny_config

        data = tiny_config(tmp_path / "run")
        for path in SLOTS[self.kind]:
            set_path(data, path, component_config.model_dump(mode="json"))
        config = validate_config(data, host, source="contract")
        for path in SLOTS[self.kind]:
            placed = get_path(config, path)
            assert isinstance(placed, spec.config_model) and placed == component_config


def tiny_model_config(host: Any, tmp_path: Path, **model_changes: Any) -> Any:
    """The validated tiny stage-2 config with some ``model`` slots replaced (for in-model checks)."""
    from pgmm_core.config.loading import validate_config
    from pgmm_core.testing import tiny_config

    data = tiny_config(tmp_path / "run")
    for key, value in model_changes.items():
        data["model"][key] = value
    return validate_config(data, host, source="contract")


def assert_trains_in_tiny_model(host: Any, tmp_path: Path, **model_changes: Any) -> Any:
    """Build the tiny model with the component in its slot; one loss, backward and generation."""
    import torch

    from pgmm_core.model import build_model

    config = tiny_model_config(host, tmp_path, **model_changes)
    torch.manual_seed(0)
    model = build_model(config)
    size = model.vision.image_size
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    model.train()
    output = model(pixels, ["a red circle in the top left", "a blue square"])
    assert output.loss.ndim == 0 and torch.isfinite(output.loss), output.loss
    output.loss.backward()
    assert model.ln_vision.weight.grad is not None, "no gradient reached ln_vision through the connector"
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    for part in (model.vision, model.llm):
        if getattr(part, "frozen", False):
            assert all(p.grad is None for p in part.parameters()), f"frozen {type(part).__name__} got gradients"
    model.eval()
    captions = model.generate(pixels, num_beams=1, max_new_tokens=4, min_new_tokens=1)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    return model
