"""Every component kind, declared once.

A kind is one row of :data:`KINDS`: its name, the label messages use, the registration hook that
adds its components, the config slots that hold them, the context its factories receive, its
protocol and its contract suite. The registry labels, the hook each kind is registered through,
the assembled config model (slots, unions, defaults), the ``plugins`` listing, the JSON-schema
export and the contract-suite selection are all derived from this table, so adding a kind is one
row here, its hookspec function in :mod:`pgmm_core.hookspecs` (a test checks that the two agree)
and the kind's own modules.

Protocols and contracts are ``"module:attr"`` strings: importing this table must stay as cheap as
``python -m pgmm_core plugins`` needs (no torch).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Slot:
    """A place in the config that holds components of one kind.

    ``path`` is dotted, with ``[*]`` for a list: ``model.vision``, ``data.train[*]``, ``device``.
    A one-element path is a top-level section of its own (``device``). ``required``: a single
    slot without a default component must be given; a list slot must hold at least one item.
    """

    path: str
    required: bool = True

    @property
    def parts(self) -> tuple[str, ...]:
        """The path as a pattern: ``("data", "train", "*")``."""
        out: list[str] = []
        for element in self.path.split("."):
            if element.endswith("[*]"):
                out += [element[:-3], "*"]
            else:
                out.append(element)
        return tuple(out)

    @property
    def is_list(self) -> bool:
        return self.path.endswith("[*]")

    @property
    def section(self) -> str:
        """The top-level config key the slot lives in."""
        return self.parts[0]

    @property
    def field(self) -> str:
        """The field name inside its section (the section itself for a top-level slot)."""
        return self.parts[1] if len(self.parts) > 1 else self.parts[0]

    def example_path(self) -> tuple[str | int, ...]:
        """A concrete path into a config: list slots at index 0 (what contract checks fill)."""
        return tuple(0 if p == "*" else p for p in self.parts)


@dataclass(frozen=True)
class Kind:
    """One component kind. Every field is plain data: nothing here imports the kind's code."""

    name: str
    label: str
    hook: str
    slots: tuple[Slot, ...]
    context: tuple[str, ...]
    """Keyword arguments (besides the config) that pgmm may pass to the kind's factories. A factory
    receives those its signature accepts (all of them if it takes ``**kwargs``)."""
    protocol: str | None
    """``"module:attr"`` of what a built component must satisfy (``None``: checked by its contract)."""
    contract: str
    """``"module:attr"`` of the kind's contract test suite (:mod:`pgmm_core.testing.contracts`)."""
    description: str

    def load_protocol(self) -> Any:
        return _load(self.protocol) if self.protocol else None

    def load_contract(self) -> Any:
        return _load(self.contract)


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


_CONTRACTS = "pgmm_core.testing.contracts"

KINDS: tuple[Kind, ...] = (
    Kind(
        name="vision",
        label="vision encoder",
        hook="pgmm_register_vision_encoders",
        slots=(Slot("model.vision"),),
        context=(),
        protocol="pgmm_core.components:VisionEncoder",
        contract=f"{_CONTRACTS}.vision:VisionEncoderContract",
        description="image tower: pixels to vision tokens",
    ),
    Kind(
        name="connector",
        label="connector",
        hook="pgmm_register_connectors",
        slots=(Slot("model.connector"),),
        context=("encoder_width",),
        protocol="pgmm_core.components:Connector",
        contract=f"{_CONTRACTS}.connector:ConnectorContract",
        description="vision tokens to a fixed number of query tokens",
    ),
    Kind(
        name="projector",
        label="projector",
        hook="pgmm_register_projectors",
        slots=(Slot("model.projector"),),
        context=("in_features", "out_features"),
        protocol=None,
        contract=f"{_CONTRACTS}.projector:ProjectorContract",
        description="query tokens to the LLM's embedding width",
    ),
    Kind(
        name="llm",
        label="LLM backend",
        hook="pgmm_register_llm_backends",
        slots=(Slot("model.llm", required=False),),  # required by the objectives that use it
        context=(),
        protocol="pgmm_core.components:LLMBackend",
        contract=f"{_CONTRACTS}.llm:LLMBackendContract",
        description="causal language model driven by inputs_embeds, with its tokenizer",
    ),
    Kind(
        name="dataset",
        label="dataset",
        hook="pgmm_register_datasets",
        slots=(Slot("data.train[*]"), Slot("data.val[*]", required=False), Slot("data.test[*]", required=False)),
        context=("split", "image_size", "image_spec"),
        protocol=None,
        contract=f"{_CONTRACTS}.dataset:DatasetContract",
        description="image-caption pairs for training and evaluation",
    ),
    Kind(
        name="device",
        label="device backend",
        hook="pgmm_register_device_backends",
        slots=(Slot("device"),),
        context=(),
        protocol="pgmm_core.devices.base:DeviceBackend",
        contract=f"{_CONTRACTS}.device:DeviceBackendContract",
        description="where tensors live and how ranks talk",
    ),
    Kind(
        name="callback",
        label="callback",
        hook="pgmm_register_callbacks",
        slots=(Slot("train.callbacks[*]", required=False),),
        context=(),
        protocol=None,
        contract=f"{_CONTRACTS}.callback:CallbackContract",
        description="run-scoped plugin receiving the trainer's pgmm_on_* events",
    ),
    Kind(
        name="objective",
        label="objective",
        hook="pgmm_register_objectives",
        slots=(Slot("objective"),),
        context=(),
        protocol="pgmm_core.objectives.base:Objective",
        contract=f"{_CONTRACTS}.objective:ObjectiveContract",
        description="what a batch holds, the loss, the model parts it needs, and its evaluation",
    ),
    Kind(
        name="strategy",
        label="strategy",
        hook="pgmm_register_strategies",
        slots=(Slot("strategy"),),
        context=("device_backend",),
        protocol="pgmm_core.strategies.base:Strategy",
        contract=f"{_CONTRACTS}.strategy:StrategyContract",
        description="how the model is spread over processes: wrapping, gradient sync, state for checkpoints",
    ),
)
"""The component kinds, in the order ``plugins`` lists them."""

BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KINDS}


def kind(name: str) -> Kind:
    """The row of a kind; a ``KeyError`` names the known kinds."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown component kind '{name}' (known: {', '.join(BY_NAME)})") from None


def label(name: str) -> str:
    return BY_NAME[name].label if name in BY_NAME else name


def registration_hooks() -> dict[str, str]:
    """Kind -> the hook that registers its components."""
    return {k.name: k.hook for k in KINDS}


def slot_for(path: tuple[Any, ...]) -> tuple[Kind, Slot] | None:
    """The kind and slot whose pattern matches a concrete config path (list indices match ``*``)."""
    for row in KINDS:
        for slot in row.slots:
            pattern = slot.parts
            if len(pattern) == len(path) and all(
                (p == "*" and isinstance(x, int)) or p == x for p, x in zip(pattern, path)
            ):
                return row, slot
    return None
