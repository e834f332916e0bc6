"""The plugin host: in-process plugins, installed entry points, failures, duplicates, env filters."""

from __future__ import annotations

import sys
from typing import Literal

import pytest
from pydantic import ConfigDict

from pgmm_core.config.sections import ComponentConfig
from pgmm_core.errors import PluginError
from pgmm_core.hookspecs import hookimpl
from pgmm_core.plugins import PluginHost
from pgmm_core.testing import add_to_path, install_fake_distribution


class EchoConfig(ComponentConfig):
    type: Literal["echo"] = "echo"
    width: int = 3


class EchoPlugin:
    @hookimpl
    def pgmm_register_vision_encoders(self, registrar):
        registrar.add("echo", lambda config: ("built", config.width), EchoConfig, description="test tower")


def test_in_process_registration_builds_component():
    host = PluginHost(load_entry_points=False)
    host.register(EchoPlugin(), name="echo-plugin")
    spec = host.registry("vision").get("echo")
    assert spec.provider.plugin == "echo-plugin"
    assert spec.build(EchoConfig(width=5)) == ("built", 5)
    assert host.plugins[0].components == ["vision:echo"]


def test_hosts_are_independent():
    first = PluginHost(load_entry_points=False)
    first.register(EchoPlugin(), name="echo-plugin")
    second = PluginHost(load_entry_points=False)
    assert "echo" in first.registry("vision")
    assert "echo" not in second.registry("vision")


def test_duplicate_component_names_both_providers():
    host = PluginHost(load_entry_points=False)
    host.register(EchoPlugin(), name="first", distribution="dist-a")
    host.register(EchoPlugin(), name="second", distribution="dist-b")
    with pytest.raises(PluginError) as err:
        host.registries()
    assert "dist-a" in str(err.value) and "dist-b" in str(err.value) and "'echo'" in str(err.value)


def test_plugin_raising_in_hook_is_failed_not_fatal():
    class Broken:
        @hookimpl
        def pgmm_register_datasets(self, registrar):
            raise RuntimeError("boom")

    host = PluginHost(load_entry_points=False)
    host.register(EchoPlugin(), name="good")
    host.register(Broken(), name="broken", distribution="broken-dist")
    infos = {p.name: p for p in host.plugins}
    assert infos["broken"].status == "failed"
    assert "boom" in infos["broken"].error and "pgmm_register_datasets" in infos["broken"].error
    assert infos["good"].status == "loaded"
    assert "echo" in host.registry("vision")


def test_misspelt_hook_is_reported():
    class Typo:
        @hookimpl
        def pgmm_register_dataset(self, registrar):  # missing "s"
            pass

    host = PluginHost(load_entry_points=False)
    info = host.register(Typo(), name="typo")
    assert info.status == "failed"
    assert "pgmm_register_datasets" in info.error


def test_registration_checks_config_model():
    class Loose(ComponentConfig):
        model_config = ConfigDict(extra="allow")
        type: Literal["loose"] = "loose"

    class Mismatch(ComponentConfig):
        type: Literal["other"] = "other"

    class Plugin:
        @hookimpl
        def pgmm_register_projectors(self, registrar):
            registrar.add("loose", "x:y", Loose)

    class Plugin2:
        @hookimpl
        def pgmm_register_projectors(self, registrar):
            registrar.add("named", "x:y", Mismatch)

    for plugin, fragment in ((Plugin(), "extra='forbid'"), (Plugin2(), "allows ['other']")):
        host = PluginHost(load_entry_points=False)
        host.register(plugin, name="p")
        assert fragment in host.plugins[0].error


GOOD_PLUGIN = '''
from typing import Literal
from pgmm_core.config.sections import ComponentConfig
from pgmm_core.hookspecs import hookimpl

class ToyConfig(ComponentConfig):
    type: Literal["toy_projector"] = "toy_projector"

@hookimpl
def pgmm_register_projectors(registrar):
    registrar.add("toy_projector", "pgmm_toy_impl:build", ToyConfig)
'''

BROKEN_PLUGIN = "raise ImportError('this plugin needs a library that is not installed')\n"


@pytest.fixture()
def fake_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    install_fake_distribution(site, "pgmm-toy", "1.2.3", {"pgmm_toy": GOOD_PLUGIN}, {"toy": "pgmm_toy"})
    install_fake_distribution(site, "pgmm-broken", "0.0.1", {"pgmm_broken": BROKEN_PLUGIN},
                              {"broken": "pgmm_broken"})
    monkeypatch.setattr(sys, "path", list(sys.path))
    add_to_path(site)
    yield site
    for name in ("pgmm_toy", "pgmm_broken"):
        sys.modules.pop(name, None)


def test_entry_point_discovery_and_broken_plugin(fake_site):
    host = PluginHost(environ={})
    infos = {p.name: p for p in host.plugins}
    assert infos["toy"].status == "loaded"
    assert infos["toy"].distribution == "pgmm-toy" and infos["toy"].version == "1.2.3"
    assert infos["toy"].components == ["projector:toy_projector"]
    assert infos["broken"].status == "failed"
    assert "not installed" in infos["broken"].error
    # first-party plugins are discovered through the same entry-point group
    for name in ("core", "vision", "pangu", "data", "ascend"):
        assert infos[name].status == "loaded", infos[name]


def test_disable_and_allow_lists(fake_site):
    host = PluginHost(environ={"PGMM_DISABLE_PLUGINS": "pgmm-toy, broken"})
    infos = {p.name: p for p in host.plugins}
    assert infos["toy"].status == "disabled" and infos["broken"].status == "disabled"
    assert "toy_projector" not in host.registry("projector")

    host = PluginHost(environ={"PGMM_LOAD_PLUGINS": "toy"})
    infos = {p.name: p for p in host.plugins}
    assert infos["toy"].status == "loaded"
    assert infos["vision"].status == "disabled"
    assert infos["core"].status == "loaded"  # pgmm-core's built-ins always load


def test_trace_prints_hook_calls(fake_site, capsys):
    host = PluginHost(environ={"PGMM_TRACE_PLUGINS": "1"})
    host.registries()
    err = capsys.readouterr().err
    assert "[pgmm trace] pgmm_register_projectors -> toy (pgmm-toy 1.2.3)" in err


def test_event_hook_error_names_distribution():
    class Exploding:
        @hookimpl
        def pgmm_on_step_end(self, run, step, metrics):
            raise ValueError("bad callback")

    host = PluginHost(load_entry_points=False)
    host.register(Exploding(), name="exploding", distribution="pgmm-exploding")
    with pytest.raises(PluginError, match="pgmm-exploding.*bad callback"):
        host.call_event("pgmm_on_step_end", run=None, step=1, metrics={})


def test_an_env_list_naming_no_installed_plugin_is_warned_about(caplog):
    host = PluginHost(environ={"PGMM_LOAD_PLUGINS": "bogus", "PGMM_DISABLE_PLUGINS": "pgmm-data,visoin"})
    with caplog.at_level("WARNING"):
        host.registries()
    text = caplog.text
    assert "PGMM_LOAD_PLUGINS names no installed plugin: bogus" in text
    assert "PGMM_DISABLE_PLUGINS names no installed plugin: visoin" in text and "pgmm-data" not in text.split("visoin")[0]
