"""Every first-party component is tested through its contract, and listed in the first-party index.

The contract test classes live in ``packages/<distribution>/tests/test_contract_*.py``; this module
imports those files and compares the components they cover with what the installed first-party
plugins register. A new component without a contract test fails here, naming it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pgmm_core.catalog import first_party_index, providing_package
from pgmm_core.plugins import PluginHost
from pgmm_core.testing.contracts import CONTRACTS, ComponentContract

ROOT = Path(__file__).parents[3]
FIRST_PARTY = ("pgmm-core", "pgmm-vision", "pgmm-pangu", "pgmm-data", "pgmm-ascend")


def contract_classes() -> list[tuple[Path, type[ComponentContract]]]:
    found = []
    for path in sorted(ROOT.glob("packages/*/tests/test_contract_*.py")):
        name = f"_contract_coverage_{path.parents[1].name}_{path.stem}".replace("-", "_")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, ComponentContract) and obj.__name__.startswith("Test"):
                found.append((path, obj))
    return found


@pytest.fixture(scope="module")
def first_party():
    host = PluginHost(environ={})
    return {(kind, spec.name): spec.provider.distribution for kind, registry in host.registries().items()
            for spec in registry if spec.provider.distribution in FIRST_PARTY}


def test_every_first_party_component_has_a_contract_test(first_party):
    covered = {(cls.kind, cls.component) for _, cls in contract_classes()}
    missing = sorted(f"{kind}:{name} ({dist})" for (kind, name), dist in first_party.items()
                     if (kind, name) not in covered)
    assert not missing, (
        "components without a contract test; add a class like `class TestX(VisionEncoderContract)` "
        f"to packages/<distribution>/tests/test_contract_*.py: {', '.join(missing)}")
    assert set(CONTRACTS) == {kind for kind, _ in first_party} | {"connector", "projector"}


def test_contract_tests_live_in_the_providing_package():
    for path, cls in contract_classes():
        assert cls.distribution == path.parents[1].name, (
            f"{path.name}::{cls.__name__} tests {cls.distribution}'s '{cls.component}'")


def test_catalog_names_the_package_of_every_first_party_component(first_party):
    wrong = sorted(f"{kind}:{name} is provided by {dist}, catalog says {providing_package(kind, name)}"
                   for (kind, name), dist in first_party.items() if providing_package(kind, name) != dist)
    assert not wrong, "update pgmm_core/first_party.json: " + "; ".join(wrong)


def test_first_party_index_is_exactly_what_the_first_party_plugins_register():
    """Names and aliases, both ways: the install hint can neither miss a component nor name a gone one."""
    host = PluginHost(environ={})
    registered: dict[str, dict[str, set[str]]] = {}
    for kind, registry in host.registries().items():
        for spec in registry:
            if spec.provider.distribution in FIRST_PARTY:
                registered.setdefault(spec.provider.distribution, {}).setdefault(kind, set()).update(spec.names)
    index = {dist: {kind: set(names) for kind, names in kinds.items()} for dist, kinds in first_party_index().items()}
    assert set(index) == set(FIRST_PARTY)
    assert index == registered, "update pgmm_core/first_party.json to what the first-party plugins register"
