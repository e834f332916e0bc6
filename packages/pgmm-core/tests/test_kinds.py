"""The kinds table: every component kind declared once, and everything else derived from it."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from pgmm_core import hookspecs, kinds
from pgmm_core.config import assemble
from pgmm_core.config.sections import ComponentConfig
from pgmm_core.kinds import KINDS, Kind, Slot
from pgmm_core.registry import KIND_LABELS, ComponentSpec, Provider, Registry

SRC = Path(__file__).parents[1] / "src" / "pgmm_core"


def test_each_row_has_its_hand_written_hookspec_and_each_registration_spec_a_row():
    specs = {name: fn for name, fn in vars(hookspecs).items()
             if callable(fn) and hasattr(fn, f"{hookspecs.PROJECT_NAME}_spec")}
    registering = {name for name in specs if name.startswith("pgmm_register_")} - {"pgmm_register_commands"}
    assert registering == {row.hook for row in KINDS}
    for row in KINDS:
        assert list(inspect.signature(specs[row.hook]).parameters) == ["registrar"], row.hook
        assert specs[row.hook].__doc__, f"{row.hook} needs a docstring (docs and IDEs show it)"
    assert hookspecs.REGISTRATION_HOOKS == {row.name: row.hook for row in KINDS}
    assert KIND_LABELS == {row.name: row.label for row in KINDS}


def test_rows_name_importable_protocols_and_contracts():
    from pgmm_core.testing.contracts import CONTRACTS

    for row in KINDS:
        contract = row.load_contract()
        assert contract.kind == row.name and CONTRACTS[row.name] is contract
        if row.protocol is not None:
            assert isinstance(row.load_protocol(), type)
        assert row.description and row.slots and row.label


def test_importing_the_table_imports_neither_torch_nor_pydantic():
    code = "import sys, pgmm_core.kinds; print(sorted({'torch', 'pydantic'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_slot_paths_parse():
    assert Slot("data.train[*]").parts == ("data", "train", "*")
    assert Slot("data.train[*]").example_path() == ("data", "train", 0)
    assert Slot("device").parts == ("device",) and not Slot("device").is_list
    assert kinds.slot_for(("data", "val", 3))[0].name == "dataset"
    assert kinds.slot_for(("model", "vision"))[0].name == "vision"
    assert kinds.slot_for(("model", "prompt")) is None


class WidgetConfig(ComponentConfig):
    type: Literal["plain_widget"] = "plain_widget"
    size: int = 1


def _registry(kind, *specs, default=None):
    registry = Registry(kind)
    for name, model in specs:
        registry.add(ComponentSpec(kind, name, "x:y", model, Provider("p")))
    registry.default = default
    return registry


def test_a_new_row_with_a_top_level_default_section_needs_no_other_core_change(monkeypatch):
    widget = Kind(name="widget", label="widget", hook="pgmm_register_widgets", slots=(Slot("widget"),),
                  context=(), protocol=None, contract="x:y", description="a kind added by one row")
    gadgets = Kind(name="gadget", label="gadget", hook="pgmm_register_gadgets",
                   slots=(Slot("train.gadgets[*]", required=False),), context=(), protocol=None,
                   contract="x:y", description="a list slot inside a fixed section")
    monkeypatch.setattr(assemble, "KINDS", (*KINDS, widget, gadgets))
    registries = {"widget": _registry("widget", ("plain_widget", WidgetConfig), default="plain_widget"),
                  "gadget": _registry("gadget", ("plain_widget", WidgetConfig))}
    root = assemble.assemble_config_model(registries)
    assert list(root.model_fields)[-1] == "widget"
    assert root.model_fields["widget"].default_factory() == WidgetConfig()
    train = root.model_fields["train"].annotation
    assert train.model_fields["gadgets"].default_factory() == []
    schema = root.model_json_schema()
    assert "widget" in schema["properties"] and "WidgetConfig" in schema["$defs"]


def test_kinds_without_components_stay_in_the_schema():
    root = assemble.assemble_config_model({})
    assert set(root.model_fields) == {"model", "data", "train", "eval", "device", "objective", "strategy"}
    assert root.model_fields["device"].is_required()  # no default component registered
    assert root.model_fields["objective"].is_required() and root.model_fields["strategy"].is_required()


def test_config_assembly_reads_registries_not_the_host():
    """config/assemble.py and plugins.py used to import each other; only plugins -> assemble remains."""
    tree = ast.parse((SRC / "config" / "assemble.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "pgmm_core.plugins" not in imported, imported


def test_plugins_lists_every_kind_of_the_table(capsys):
    from pgmm_core.cli import main

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    listing = out.split("\nkinds:\n", 1)[1]
    for row in KINDS:
        assert f"    {row.name} ({row.label}): {row.description}\n" in listing
    assert "in device; default auto; installed: auto, cpu, cuda" in listing
    assert "in model.projector; default mlp2x_gelu" in listing


def test_the_core_source_names_no_first_party_plugin_component():
    """Install hints come from first_party.json, defaults from the registrations."""
    from pgmm_core.catalog import first_party_index

    plugin_names = {name for dist, by_kind in first_party_index().items() if dist != "pgmm-core"
                    for names in by_kind.values() for name in names}
    for module in ("catalog.py", "kinds.py", "config/assemble.py", "config/messages.py", "plugins.py",
                   "registry.py"):
        text = (SRC / module).read_text(encoding="utf-8")
        named = sorted(name for name in plugin_names if f'"{name}"' in text or f"'{name}'" in text)
        assert not named, f"{module} names {named}"


@pytest.mark.parametrize("protocol_name", ["VisionEncoder", "Connector", "LLMBackend"])
def test_a_protocol_failure_names_the_missing_members(protocol_name):
    from pgmm_core import components
    from pgmm_core.testing.contracts.base import assert_satisfies, protocol_members

    protocol = getattr(components, protocol_name)
    members = protocol_members(protocol)
    assert "out_features" in members or "hidden_size" in members

    class Partial:
        pass

    partial = Partial()
    kept = members[-1]
    setattr(partial, kept, 1)
    with pytest.raises(AssertionError) as err:
        assert_satisfies(partial, protocol)
    message = str(err.value)
    missing = [m for m in members if m != kept]
    assert f"missing {', '.join(missing)}" in message and protocol_name in message
