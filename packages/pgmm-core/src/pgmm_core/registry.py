"""Component registries: what each plugin contributed, and how to build it.

A registry holds the components of one kind (vision encoders, datasets, ...). Plugins never touch it
directly: a registration hook receives a :class:`Registrar` that knows which plugin is speaking, so
that every component records its provider and a duplicate name can name both providers.
"""

from __future__ import annotations

import importlib
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from pydantic import BaseModel

from pgmm_core.errors import PgmmError, PluginError

KIND_LABELS: dict[str, str] = {
    "vision": "vision encoder",
    "connector": "connector",
    "projector": "projector",
    "llm": "LLM backend",
    "dataset": "dataset",
    "device": "device backend",
    "callback": "callback",
    "strategy": "strategy",
}

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Provider:
    """Who registered a component: the plugin's name and, when installed, its distribution."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution:
            return f"{self.distribution} (plugin '{self.plugin}')"
        return f"plugin '{self.plugin}'"


@dataclass(frozen=True)
class ComponentSpec:
    """One registered component. ``factory`` may be a ``"module:attr"`` string, imported on build."""

    kind: str
    name: str
    factory: Callable[..., Any] | str
    config_model: type[BaseModel]
    provider: Provider
    description: str = ""
    aliases: tuple[str, ...] = ()
    probe: Callable[[], str | None] | str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def resolve_factory(self) -> Callable[..., Any]:
        """Import the factory if it was registered by dotted path (this is where torch gets imported)."""
        if callable(self.factory):
            return self.factory
        module_name, _, attr = self.factory.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attr)
        except (ImportError, AttributeError) as exc:
            raise PluginError(
                f"{KIND_LABELS[self.kind]} '{self.name}' from {self.provider}: cannot import its "
                f"factory '{self.factory}': {exc}"
            ) from exc

    def availability(self) -> str | None:
        """``None`` if usable on this machine, else why not — from the component's cheap probe
        (it must not import torch). Components without a probe are assumed available."""
        if self.probe is None:
            return None
        probe = self.probe
        if isinstance(probe, str):
            module_name, _, attr = probe.partition(":")
            probe = getattr(importlib.import_module(module_name), attr)
        return probe()

    def build(self, config: BaseModel, **context: Any) -> Any:
        """Construct the component from its validated config and the kind's context arguments.

        A :class:`PgmmError` is the factory telling the user what to fix and passes unchanged; any
        other exception is a bug somewhere, so it keeps its traceback and gains a note naming the
        component and the distribution that provides it.
        """
        factory = self.resolve_factory()
        try:
            return factory(config, **context)
        except PgmmError:
            raise
        except Exception as exc:
            if hasattr(exc, "add_note"):  # Python 3.11+
                exc.add_note(f"raised while building {KIND_LABELS[self.kind]} '{self.name}' provided by "
                             f"{self.provider}")
            raise


def literal_values(config_model: type[BaseModel]) -> tuple[str, ...]:
    """The values allowed by a config model's ``type: Literal[...]`` field."""
    field_info = config_model.model_fields.get("type")
    if field_info is None or typing.get_origin(field_info.annotation) is not Literal:
        raise PluginError(
            f"config model {config_model.__qualname__} needs a field `type: Literal[\"<name>\"]`"
        )
    return tuple(typing.get_args(field_info.annotation))


@dataclass
class Registry:
    """All components of one kind, by name and alias."""

    kind: str
    _specs: dict[str, ComponentSpec] = field(default_factory=dict)
    _by_alias: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return KIND_LABELS[self.kind]

    def add(self, spec: ComponentSpec) -> None:
        for taken in spec.names:
            owner_name = self._by_alias.get(taken)
            if owner_name is not None:
                owner = self._specs[owner_name]
                raise PluginError(
                    f"{self.label} name '{taken}' is registered twice: by {owner.provider} and by "
                    f"{spec.provider}. Uninstall or disable one of them (PGMM_DISABLE_PLUGINS)."
                )
        self._specs[spec.name] = spec
        for alias in spec.names:
            self._by_alias[alias] = spec.name

    def get(self, name: str) -> ComponentSpec:
        canonical = self._by_alias.get(name)
        if canonical is None:
            known = ", ".join(sorted(self._specs)) or "none installed"
            raise PluginError(f"unknown {self.label} '{name}' (known: {known})")
        return self._specs[canonical]

    def __contains__(self, name: object) -> bool:
        return name in self._by_alias

    def __iter__(self):
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def all_names(self) -> list[str]:
        """Names and aliases: every value accepted in a config's ``type`` field."""
        return sorted(self._by_alias)


class Registrar:
    """What a registration hook receives: adds components of one kind on behalf of one plugin."""

    def __init__(self, registry: Registry, provider: Provider) -> None:
        self._registry = registry
        self._provider = provider
        self.added: list[ComponentSpec] = []

    @property
    def kind(self) -> str:
        return self._registry.kind

    def add(
        self,
        name: str,
        factory: Callable[..., Any] | str,
        config_model: type[BaseModel],
        *,
        description: str = "",
        aliases: tuple[str, ...] | list[str] = (),
        probe: Callable[[], str | None] | str | None = None,
    ) -> None:
        """Register a component.

        ``name`` is what users write in ``type``; ``config_model`` is a pydantic model with
        ``type: Literal[name, *aliases]`` and ``extra="forbid"``; ``factory`` builds the component
        and may be a ``"module:attr"`` string so that registering never imports heavy modules.
        ``probe`` (optional, also callable or dotted path) answers ``None`` when the component can
        run on this machine or a one-sentence reason when not, without importing torch; ``plugins``
        shows it (device backends use it).
        """
        label = KIND_LABELS[self.kind]
        if not _NAME_RE.match(name):
            raise PluginError(
                f"{label} name {name!r} from {self._provider} must be lower_snake_case"
            )
        if not (isinstance(config_model, type) and issubclass(config_model, BaseModel)):
            raise PluginError(
                f"{label} '{name}' from {self._provider}: config_model must be a pydantic model"
            )
        allowed = set(literal_values(config_model))
        expected = {name, *aliases}
        if allowed != expected:
            raise PluginError(
                f"{label} '{name}' from {self._provider}: {config_model.__qualname__}.type allows "
                f"{sorted(allowed)} but the registration declares {sorted(expected)}"
            )
        if config_model.model_config.get("extra") != "forbid":
            raise PluginError(
                f"{label} '{name}' from {self._provider}: {config_model.__qualname__} must set "
                "model_config = ConfigDict(extra='forbid') so that typos in configs are reported"
            )
        if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
            raise PluginError(
                f"{label} '{name}' from {self._provider}: factory must be callable or 'module:attr'"
            )
        spec = ComponentSpec(
            kind=self.kind,
            name=name,
            factory=factory,
            config_model=config_model,
            provider=self._provider,
            description=description,
            aliases=tuple(aliases),
            probe=probe,
        )
        self._registry.add(spec)
        self.added.append(spec)
