"""The plugin host: in-process plugins, installed entry points, failures, duplicates, env filters."""

from __future__ import annotations

import re
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


def test_duplicate_component_names_both_providers(caplog):
    host = PluginHost(load_entry_points=False)
    host.register(EchoPlugin(), name="first", distribution="dist-a")
    host.register(EchoPlugin(), name="second", distribution="dist-b")
    with caplog.at_level("WARNING"):
        registry = host.registry("vision")  # a clash no longer stops the host
    with pytest.raises(PluginError) as err:
        registry.get("echo")
    assert "dist-a" in str(err.value) and "dist-b" in str(err.value) and "'echo'" in str(err.value)
    warnings = [r.getMessage() for r in caplog.records if "'echo'" in r.getMessage()]
    assert len(warnings) == 1 and "dist-a" in warnings[0] and "dist-b" in warnings[0]


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


# --- pluggy's hook caller: order, wrappers, blocking, attribution -----------------------------------


def _observer(label, calls, **marks):
    class Observer:
        @hookimpl(**marks)
        def pgmm_on_step_end(self, step):
            calls.append(label)

    return Observer()


class Wrapper:
    def __init__(self, calls):
        self.calls = calls

    @hookimpl(wrapper=True)
    def pgmm_on_step_end(self, step):
        self.calls.append("wrapper:before")
        result = yield
        self.calls.append("wrapper:after")
        return result


def test_event_hooks_run_in_pluggys_documented_order_with_wrappers():
    calls: list[str] = []
    host = PluginHost(load_entry_points=False, environ={})
    host.register(_observer("first", calls, tryfirst=True), name="first")
    host.register(Wrapper(calls), name="wrapper")
    host.register(_observer("plain-a", calls), name="plain-a")
    host.register(_observer("last", calls, trylast=True), name="last")
    host.register(_observer("plain-b", calls), name="plain-b")
    host.call_event("pgmm_on_step_end", run=None, step=1, metrics={})
    # wrappers around everything; tryfirst, then plain ones last-registered first, then trylast
    assert calls == ["wrapper:before", "first", "plain-b", "plain-a", "last", "wrapper:after"]


def test_event_error_names_the_implementation_that_raised():
    class Step:
        def __init__(self, explode):
            self.explode = explode

        @hookimpl
        def pgmm_on_step_end(self, step):
            if self.explode:
                raise ValueError("bad callback")

    calls: list[str] = []
    host = PluginHost(load_entry_points=False, environ={})
    host.register(Step(False), name="calm", distribution="pgmm-calm")
    host.register(Step(True), name="boom", distribution="pgmm-boom")  # same code, another object
    host.register(Wrapper(calls), name="wrapper", distribution="pgmm-wrapper")
    with pytest.raises(PluginError) as err:
        host.call_event("pgmm_on_step_end", run=None, step=1, metrics={})
    message = str(err.value)
    assert message.startswith("pgmm_on_step_end in pgmm-boom (plugin 'boom') raised ValueError: bad callback")
    assert calls == ["wrapper:before"]  # the wrapper saw the error go through it


def test_a_failed_plugin_is_blocked_from_later_hook_calls():
    calls: list[str] = []

    class HalfBroken:
        @hookimpl
        def pgmm_register_datasets(self, registrar):
            raise RuntimeError("boom")

        @hookimpl
        def pgmm_on_step_end(self, step):
            calls.append("half-broken")

    host = PluginHost(load_entry_points=False, environ={})
    host.register(HalfBroken(), name="half", distribution="pgmm-half")
    host.register(_observer("good", calls), name="good")
    assert [p.name for p in host.failed()] == ["half"]
    host.call_event("pgmm_on_step_end", run=None, step=1, metrics={})
    assert calls == ["good"]
    with pytest.raises(PluginError, match="already registered"):
        host.register(HalfBroken(), name="half")


def test_registration_hooks_are_called_per_plugin_and_attributed_exactly():
    class Many:
        @hookimpl
        def pgmm_register_vision_encoders(self, registrar):
            registrar.add("many", lambda config: None, ManyConfig, description="one of many")

    class ManyConfig(ComponentConfig):
        type: Literal["many"] = "many"

    class Wrapping:
        def __init__(self):
            self.seen = []

        @hookimpl(wrapper=True)
        def pgmm_register_vision_encoders(self, registrar):
            self.seen.append(registrar.kind)
            return (yield)

    wrapping = Wrapping()
    host = PluginHost(load_entry_points=False, environ={})
    host.register(EchoPlugin(), name="echo-plugin", distribution="pgmm-echo")
    host.register(Many(), name="many-plugin", distribution="pgmm-many")
    host.register(wrapping, name="wrapping")
    registry = host.registry("vision")
    assert registry.get("echo").provider.distribution == "pgmm-echo"
    assert registry.get("many").provider.distribution == "pgmm-many"
    assert wrapping.seen == ["vision"]  # a plugin's own wrapper runs around its own registration


def test_hook_implementation_without_a_spec_fails_its_plugin():
    class Unprefixed:
        @hookimpl
        def on_step_end(self, step):  # not a pgmm hook at all: pluggy's check_pending catches it
            pass

    host = PluginHost(load_entry_points=False, environ={})
    info = host.register(Unprefixed(), name="unprefixed")
    host.register(EchoPlugin(), name="echo-plugin")
    assert info.status == "failed" and "on_step_end" in info.error
    assert "echo" in host.registry("vision")


def test_trace_shows_each_calls_outcome_and_time(capsys):
    class Raises:
        @hookimpl
        def pgmm_on_step_end(self, step):
            raise KeyError("metric")

    host = PluginHost(load_entry_points=False, environ={"PGMM_TRACE_PLUGINS": "1"})
    host.register(EchoPlugin(), name="echo-plugin", distribution="pgmm-echo", version="0.2")
    host.registries()
    host.register(Raises(), name="raises")
    with pytest.raises(PluginError):
        host.call_event("pgmm_on_step_end", run=None, step=1, metrics={})
    err = capsys.readouterr().err
    assert re.search(r"\[pgmm trace\] pgmm_register_vision_encoders -> echo-plugin \(pgmm-echo 0\.2\) "
                     r"\d+\.\d\d ms returned", err), err
    assert re.search(r"\[pgmm trace\] pgmm_on_step_end -> raises \d+\.\d\d ms raised KeyError: 'metric'", err), err


# --- name clashes and defaults -----------------------------------------------------------------------


class EchoAndMore:
    @hookimpl
    def pgmm_register_vision_encoders(self, registrar):
        registrar.add("echo", lambda config: "mine", EchoConfig, description="clashes")
        registrar.add("echo_two", lambda config: "two", EchoTwoConfig, description="does not clash")


class EchoTwoConfig(ComponentConfig):
    type: Literal["echo_two"] = "echo_two"


def test_a_name_clash_disables_only_that_name():
    host = PluginHost(load_entry_points=False, environ={})
    host.register(EchoPlugin(), name="first", distribution="dist-a")
    host.register(EchoAndMore(), name="second", distribution="dist-b")
    registry = host.registry("vision")
    assert "echo" not in registry and registry.get("echo_two").build(EchoTwoConfig()) == "two"
    [clash] = host.clashes()
    assert (clash.kind, clash.name) == ("vision", "echo")
    assert [p.distribution for p in clash.providers] == ["dist-a", "dist-b"]
    infos = {p.name: p for p in host.plugins}
    assert infos["first"].status == infos["second"].status == "loaded"
    assert infos["first"].clashes == infos["second"].clashes == ["vision:echo"]
    assert infos["second"].components == ["vision:echo_two"]


class DefaultProjectorConfig(ComponentConfig):
    type: Literal["plain"] = "plain"


class OtherDefaultConfig(ComponentConfig):
    type: Literal["fancy"] = "fancy"


def _default_projector(name, config_model):
    class Plugin:
        @hookimpl
        def pgmm_register_projectors(self, registrar):
            registrar.add(name, lambda config, **kw: name, config_model, default=True, description="d")

    return Plugin()


def test_the_default_comes_from_the_plugin_that_declares_it(caplog):
    host = PluginHost(load_entry_points=False, environ={})
    host.register(_default_projector("plain", DefaultProjectorConfig), name="plain-plugin", distribution="pgmm-plain")
    assert host.registry("projector").default == "plain"
    model_section = host.config_model().model_fields["model"].annotation
    assert model_section.model_fields["projector"].default_factory() == DefaultProjectorConfig()

    host.register(_default_projector("fancy", OtherDefaultConfig), name="fancy-plugin", distribution="pgmm-fancy")
    with caplog.at_level("WARNING"):
        assert host.registry("projector").default is None
    [warning] = [r.getMessage() for r in caplog.records if "default projector" in r.getMessage()]
    assert "pgmm-plain" in warning and "pgmm-fancy" in warning
    model_section = host.config_model().model_fields["model"].annotation
    assert model_section.model_fields["projector"].is_required()


# --- factory context ---------------------------------------------------------------------------------


class ShapesConfig(ComponentConfig):
    type: Literal["shapes"] = "shapes"


def test_factories_receive_only_the_context_they_accept():
    received = {}

    def old_factory(config, *, split, image_size):  # written before datasets got image_spec
        received["old"] = (split, image_size)
        return "old"

    def open_factory(config, **context):
        received["open"] = context
        return "open"

    from pgmm_core.registry import ComponentSpec, Provider

    for name, factory in (("old", old_factory), ("open", open_factory)):
        spec = ComponentSpec("dataset", name, factory, ShapesConfig, Provider("p"))
        assert spec.build(ShapesConfig(), split="train", image_size=32, image_spec="spec") == name
    assert received == {"old": ("train", 32), "open": {"split": "train", "image_size": 32, "image_spec": "spec"}}


def test_a_factory_requiring_context_pgmm_never_passes_is_refused():
    class Plugin:
        @hookimpl
        def pgmm_register_datasets(self, registrar):
            registrar.add("shapes", lambda config, *, split, colour_map: None, ShapesConfig)

    host = PluginHost(load_entry_points=False, environ={})
    info = host.register(Plugin(), name="needy")
    assert host.plugins[0].status == "failed"
    assert "colour_map" in info.error and "split" in info.error.split("passes:")[1]
