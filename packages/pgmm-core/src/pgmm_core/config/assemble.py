"""Assemble the root config model from the components the plugins registered.

The fixed sections (``model``, ``data``, ``train``, ``eval``) come from :mod:`pgmm_core.config.sections`;
every component slot comes from the kinds table (:data:`pgmm_core.kinds.KINDS`). Each slot becomes
a discriminated union on ``type`` over the registered config models of its kind, so pydantic reports
errors at the exact path (``model.vision.image_size``) and an unknown ``type`` is a
``union_tag_invalid`` error that :mod:`pgmm_core.config.messages` turns into a helpful message. A slot
left out of a config takes its kind's default component, the one its provider registered with
``default=True``.

This module reads registries, never the plugin host, so the host can import it without a circle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Optional, Union

from pydantic import BaseModel, Field, PrivateAttr, create_model, model_validator

from pgmm_core.config.sections import (
    DataSection,
    EvalSection,
    ModelSection,
    StrictModel,
    TrainSection,
)
from pgmm_core.kinds import KINDS, Slot

if TYPE_CHECKING:
    from pgmm_core.registry import Registry

SECTIONS: dict[str, tuple[type[StrictModel], bool]] = {
    "model": (ModelSection, True),
    "data": (DataSection, True),
    "train": (TrainSection, False),
    "eval": (EvalSection, False),
}
"""The fixed top-level sections, in config order: base model and whether a config must give it.
Slots whose path starts with one of these are added to it; any other slot is a top-level section of
its own (``device``), placed after these."""

NOTHING_INSTALLED = "no component of this kind is installed"


class NothingInstalled(StrictModel):
    """Placeholder for a kind with no registered components; never validates."""

    type: str

    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, data: Any) -> Any:
        raise ValueError(NOTHING_INSTALLED)


class ConfigRoot(StrictModel):
    """Base of the assembled root model. Keeps a reference to the host that assembled it."""

    _host: Any = PrivateAttr(default=None)

    @property
    def host(self) -> Any:
        """The plugin host (:class:`pgmm_core.plugins.PluginHost`) whose components this config uses."""
        return self._host


def _component_union(registry: Registry | None, kind: str) -> Any:
    models = [spec.config_model for spec in registry] if registry is not None else []
    if not models:
        return Annotated[NothingInstalled, Field(json_schema_extra={"x-pgmm-kind": kind})]
    return Annotated[Union[tuple(models)], Field(discriminator="type")]  # noqa: UP007


def _default_component(registry: Registry | None) -> Any:
    """A default factory for the kind's default component, or ``None`` when it has none."""
    if registry is None or registry.default is None:
        return None
    spec = registry.get(registry.default)
    name = registry.default
    return lambda: spec.config_model(type=name)


def _slot_field(union: Any, slot: Slot, registry: Registry | None) -> tuple[Any, Any]:
    if slot.is_list:
        return (list[union], Field(..., min_length=1) if slot.required else Field(default_factory=list))
    default = _default_component(registry)
    if default is not None:
        return (union, Field(default_factory=default))
    if slot.required:
        return (union, ...)
    return (Optional[union], None)  # noqa: UP007


def _is_nested(slot: Slot) -> bool:
    return len(slot.parts) > 1 and slot.parts[1] != "*"


def assemble_config_model(registries: Mapping[str, Registry]) -> type[ConfigRoot]:
    """Build ``Config`` from registries by kind: fixed sections plus one union per slot."""
    section_fields: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    top_fields: dict[str, Any] = {}
    for kind in KINDS:
        registry = registries.get(kind.name)
        union = _component_union(registry, kind.name)
        for slot in kind.slots:
            field = _slot_field(union, slot, registry)
            if _is_nested(slot):
                if slot.section not in SECTIONS:
                    raise ValueError(f"kind '{kind.name}': slot {slot.path} is inside no known section "
                                     f"({', '.join(SECTIONS)})")
                section_fields[slot.section][slot.field] = field
            else:
                top_fields[slot.section] = field
    root_fields: dict[str, Any] = {}
    for name, (base, required) in SECTIONS.items():
        fields = section_fields[name]
        model = create_model(f"{name.capitalize()}Config", __base__=base, **fields) if fields else base
        root_fields[name] = (model, ... if required else Field(default_factory=model))
    root_fields.update(top_fields)
    return create_model("Config", __base__=ConfigRoot, **root_fields)


def section_model(root: type[BaseModel], name: str) -> type[BaseModel]:
    """The assembled model class of a top-level section (``model``, ``data``, ``train``)."""
    return root.model_fields[name].annotation  # type: ignore[return-value]
