"""Assemble the root config model from the components the plugins registered.

Each component slot becomes a discriminated union on ``type`` over the registered config models, so
pydantic reports errors at the exact path (``model.vision.image_size``) and an unknown ``type`` is a
``union_tag_invalid`` error that :mod:`pgmm_core.config.errors` turns into a helpful message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import BaseModel, Field, PrivateAttr, create_model, model_validator

from pgmm_core.config.sections import (
    DataSection,
    EvalSection,
    ModelSection,
    StrictModel,
    TrainSection,
)

if TYPE_CHECKING:
    from pgmm_core.plugins import PluginHost


@dataclass(frozen=True)
class Slot:
    """A place in the config that holds a component: its dotted path pattern and kind."""

    path: tuple[str, ...]  # "*" stands for a list index
    kind: str


SLOTS: tuple[Slot, ...] = (
    Slot(("model", "vision"), "vision"),
    Slot(("model", "connector"), "connector"),
    Slot(("model", "projector"), "projector"),
    Slot(("model", "llm"), "llm"),
    Slot(("data", "train", "*"), "dataset"),
    Slot(("data", "val", "*"), "dataset"),
    Slot(("data", "test", "*"), "dataset"),
    Slot(("device",), "device"),
    Slot(("train", "callbacks", "*"), "callback"),
    Slot(("strategy",), "strategy"),
)

NOTHING_INSTALLED = "no component of this kind is installed"

DEFAULT_COMPONENTS: dict[str, str] = {"projector": "mlp2x_gelu", "device": "auto", "strategy": "auto"}


def slot_for(path: tuple[Any, ...]) -> Slot | None:
    """The slot whose pattern matches ``path`` exactly (list indices match ``*``)."""
    for slot in SLOTS:
        if len(slot.path) == len(path) and all(
            p == "*" and isinstance(x, int) or p == x for p, x in zip(slot.path, path)
        ):
            return slot
    return None


class NothingInstalled(StrictModel):
    """Placeholder for a kind with no registered components; never validates."""

    type: str

    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, data: Any) -> Any:
        raise ValueError(NOTHING_INSTALLED)


def _component_union(host: PluginHost, kind: str) -> Any:
    models = [spec.config_model for spec in host.registry(kind)]
    if not models:
        return Annotated[NothingInstalled, Field(json_schema_extra={"x-pgmm-kind": kind})]
    return Annotated[Union[tuple(models)], Field(discriminator="type")]  # noqa: UP007


class ConfigRoot(StrictModel):
    """Base of the assembled root model. Keeps a reference to the host that assembled it."""

    _host: Any = PrivateAttr(default=None)

    @property
    def host(self) -> PluginHost:
        """The plugin host whose components this config refers to."""
        return self._host


def _default(host: PluginHost, kind: str) -> Any:
    name = DEFAULT_COMPONENTS.get(kind)
    if name is None or name not in host.registry(kind):
        return ...
    spec = host.registry(kind).get(name)
    return Field(default_factory=lambda: spec.config_model(type=name))


def assemble_config_model(host: PluginHost) -> type[ConfigRoot]:
    """Build ``Config`` for this host: fixed sections plus one discriminated union per slot."""
    vision = _component_union(host, "vision")
    connector = _component_union(host, "connector")
    projector = _component_union(host, "projector")
    llm = _component_union(host, "llm")
    dataset = _component_union(host, "dataset")
    device = _component_union(host, "device")
    callback = _component_union(host, "callback")
    strategy = _component_union(host, "strategy")

    model_section = create_model(
        "ModelConfig",
        __base__=ModelSection,
        vision=(vision, ...),
        connector=(connector, ...),
        projector=(projector, _default(host, "projector")),
        llm=(llm, ...),
    )
    data_section = create_model(
        "DataConfig",
        __base__=DataSection,
        train=(list[dataset], Field(..., min_length=1)),
        val=(list[dataset], Field(default_factory=list)),
        test=(list[dataset], Field(default_factory=list)),
    )
    train_section = create_model(
        "TrainConfig",
        __base__=TrainSection,
        callbacks=(list[callback], Field(default_factory=list)),
    )
    device_default = _default(host, "device")
    root = create_model(
        "Config",
        __base__=ConfigRoot,
        model=(model_section, ...),
        data=(data_section, ...),
        train=(train_section, Field(default_factory=train_section)),
        eval=(EvalSection, Field(default_factory=EvalSection)),
        device=(device, device_default),
        strategy=(strategy, _default(host, "strategy")),
    )
    return root


def section_model(root: type[BaseModel], name: str) -> type[BaseModel]:
    """The assembled model class of a top-level section (``model``, ``data``, ``train``)."""
    return root.model_fields[name].annotation  # type: ignore[return-value]
