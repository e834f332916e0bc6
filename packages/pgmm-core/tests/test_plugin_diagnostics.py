"""Plugin safety and diagnostics: broken plugins are skipped, named with their distribution, listed
with their error by ``plugins``, and every load and hook call can be traced."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Literal

import pytest

from pgmm_core.config.sections import ComponentConfig
from pgmm_core.hookspecs import hookimpl
from pgmm_core.plugins import PluginHost
from pgmm_core.testing import install_fake_distribution, tiny_config, write_config

TOY = '''
from typing import Literal
from pgmm_core.config.sections import ComponentConfig
from pgmm_core.hookspecs import hookimpl

class ToyConfig(ComponentConfig):
    type: Literal["toy_projector"] = "toy_projector"

@hookimpl
def pgmm_register_projectors(registrar):
    registrar.add("toy_projector", "pgmm_toy_impl:build", ToyConfig, description="toy")
'''
IMPORT_FAILS = "raise ImportError('pgmm-broken needs libfoo, which is not installed')\n"
HOOK_RAISES = '''
from pgmm_core.hookspecs import hookimpl

@hookimpl
def pgmm_register_datasets(registrar):
    raise RuntimeError("the dataset index is corrupt")
'''


@pytest.fixture()
def site(tmp_path):
    site = tmp_path / "site"
    install_fake_distribution(site, "pgmm-toy", "1.2.3", {"pgmm_toy": TOY}, {"toy": "pgmm_toy"})
    install_fake_distribution(site, "pgmm-broken", "0.0.1", {"pgmm_broken": IMPORT_FAILS}, {"broken": "pgmm_broken"})
    install_fake_distribution(site, "pgmm-raising", "0.1.0", {"pgmm_raising": HOOK_RAISES},
                              {"raising": "pgmm_raising"})
    return site


def run(site, *args, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PGMM_")}
    environ["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "pgmm_core", *args], capture_output=True, text=True,
                          env=environ, timeout=120)


def test_plugins_lists_failed_plugins_with_distribution_and_error(site):
    result = run(site, "plugins")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "broken: pgmm-broken 0.0.1 [failed]" in out
    assert "error: import failed: ImportError: pgmm-broken needs libfoo, which is not installed" in out
    assert "raising: pgmm-raising 0.1.0 [failed]" in out
    assert "error: pgmm_register_datasets raised RuntimeError: the dataset index is corrupt" in out
    assert "toy: pgmm-toy 1.2.3 [loaded]" in out and "projector:toy_projector" in out
    assert "vision: pgmm-vision" in out  # everyone else still loads
    assert "warning" not in result.stderr  # the listing already says it


def test_plugins_json_reports_failures(site):
    result = run(site, "plugins", "--json")
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["broken"]["status"] == "failed" and plugins["broken"]["distribution"] == "pgmm-broken"
    assert "libfoo" in plugins["broken"]["error"]
    assert plugins["raising"]["components"] == []


def test_other_commands_warn_about_failed_plugins(site, tmp_path):
    config = write_config(tmp_path / "ok.json", tiny_config(tmp_path / "run"))
    result = run(site, "validate", str(config))
    assert result.returncode == 0, result.stderr
    assert ("pgmm: warning: plugin 'broken' from pgmm-broken 0.0.1 failed and is skipped: import failed: "
            "ImportError: pgmm-broken needs libfoo") in result.stderr
    assert "plugin 'raising' from pgmm-raising 0.1.0 failed" in result.stderr
    assert "Traceback" not in result.stderr

    silenced = run(site, "validate", str(config), PGMM_DISABLE_PLUGINS="broken,pgmm-raising")
    assert silenced.returncode == 0 and "warning" not in silenced.stderr


def test_trace_shows_loads_and_hook_calls_with_distributions(site):
    result = run(site, "plugins", PGMM_TRACE_PLUGINS="1", PGMM_DISABLE_PLUGINS="ascend")
    err = result.stderr
    assert "[pgmm trace] load toy = pgmm_toy (pgmm-toy 1.2.3)" in err
    assert "[pgmm trace] load broken = pgmm_broken (pgmm-broken 0.0.1)" in err
    assert "[pgmm trace] skip ascend (pgmm-ascend" in err
    assert "[pgmm trace] pgmm_register_projectors -> toy (pgmm-toy 1.2.3)" in err
    assert "[pgmm trace] pgmm_register_datasets -> raising (pgmm-raising 0.1.0)" in err
    assert "raised RuntimeError" in err
    assert "pgmm_register_vision_encoders -> vision (pgmm-vision" in err


class CommandsThenBoom:
    @hookimpl
    def pgmm_register_commands(self, registrar):
        registrar.add("half", help="registered before the error", configure=lambda p: None, run=lambda ns: 0)
        raise ValueError("no more commands")


class GoodCommands:
    @hookimpl
    def pgmm_register_commands(self, registrar):
        registrar.add("hello", help="says hello", configure=lambda p: None, run=lambda ns: 0)


def test_command_hook_raising_fails_only_its_plugin(caplog):
    host = PluginHost(load_entry_points=False, environ={})
    host.register(CommandsThenBoom(), name="boom", distribution="pgmm-boom", version="2.0")
    host.register(GoodCommands(), name="good")
    with caplog.at_level(logging.WARNING, logger="pgmm_core.plugins"):
        commands = host.commands().commands
    assert set(commands) == {"hello"}
    info = {p.name: p for p in host.plugins}["boom"]
    assert info.status == "failed" and "pgmm_register_commands raised ValueError: no more commands" in info.error
    assert "plugin 'boom' from pgmm-boom 2.0 failed" in caplog.text


class ExplodingConfig(ComponentConfig):
    type: Literal["exploding"] = "exploding"


def _explode(config):
    raise ZeroDivisionError("bug in the factory")


class ExplodingFactory:
    @hookimpl
    def pgmm_register_vision_encoders(self, registrar):
        registrar.add("exploding", _explode, ExplodingConfig, description="always fails")


def test_factory_bug_names_the_providing_distribution():
    host = PluginHost(load_entry_points=False, environ={})
    host.register(ExplodingFactory(), name="exploder", distribution="pgmm-exploder", version="0.3")
    with pytest.raises(ZeroDivisionError) as err:
        host.build("vision", ExplodingConfig())
    notes = getattr(err.value, "__notes__", [])
    if sys.version_info >= (3, 11):
        assert notes == ["raised while building vision encoder 'exploding' provided by pgmm-exploder "
                         "(plugin 'exploder')"]


def test_failures_are_listed_and_warned_once(caplog):
    class Raising:
        @hookimpl
        def pgmm_register_connectors(self, registrar):
            raise KeyError("missing")

    host = PluginHost(load_entry_points=False, environ={})
    host.register(Raising(), name="raising", distribution="pgmm-raising")
    with caplog.at_level(logging.WARNING, logger="pgmm_core.plugins"):
        assert [p.name for p in host.failed()] == ["raising"]
        host.registries()
        host.config_model()
    assert caplog.text.count("plugin 'raising' from pgmm-raising failed") == 1

    quiet = PluginHost(load_entry_points=False, environ={}, warn_failures=False)
    quiet.register(Raising(), name="raising")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pgmm_core.plugins"):
        quiet.registries()
    assert caplog.text == ""


CLASHING = '''
from typing import Literal
from pgmm_core.config.sections import ComponentConfig
from pgmm_core.hookspecs import hookimpl

class ClashConfig(ComponentConfig):
    type: Literal["toy_projector"] = "toy_projector"

class RulerConfig(ComponentConfig):
    type: Literal["ruler"] = "ruler"

@hookimpl
def pgmm_register_projectors(registrar):
    registrar.add("toy_projector", "pgmm_clash_impl:build", ClashConfig, description="same name as pgmm-toy's")

@hookimpl
def pgmm_register_callbacks(registrar):
    registrar.add("ruler", "pgmm_clash_impl:Ruler", RulerConfig, description="a callback nobody else names")
'''


def test_a_name_clash_is_listed_and_every_other_command_keeps_working(site, tmp_path):
    install_fake_distribution(site, "pgmm-clash", "0.2.0", {"pgmm_clash": CLASHING}, {"clash": "pgmm_clash"})
    listing = run(site, "plugins")
    assert listing.returncode == 0, listing.stderr
    out = listing.stdout
    assert "toy: pgmm-toy 1.2.3 [loaded]" in out and "clash: pgmm-clash 0.2.0 [loaded]" in out
    assert "    projector:toy_projector  [name clash: disabled]" in out
    assert "    callback:ruler  a callback nobody else names" in out  # the clashing plugin's other component
    assert ("projector:toy_projector: projector name 'toy_projector' is registered by pgmm-clash (plugin 'clash') "
            "and pgmm-toy (plugin 'toy'); neither is used") in out  # entry points in name order
    assert "warning" not in listing.stderr  # the listing already says it

    plugins = {p["name"]: p for p in json.loads(run(site, "plugins", "--json").stdout)}
    assert plugins["toy"]["clashes"] == plugins["clash"]["clashes"] == ["projector:toy_projector"]
    assert plugins["clash"]["components"] == ["callback:ruler"]
    assert plugins["clash"]["descriptions"] == {"callback:ruler": "a callback nobody else names"}

    config = write_config(tmp_path / "ok.json", tiny_config(tmp_path / "run"))
    result = run(site, "validate", str(config))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line and "toy_projector" in line]
    assert len(warnings) == 1 and "pgmm-toy" in warnings[0] and "pgmm-clash" in warnings[0]

    data = tiny_config(tmp_path / "run")
    data["model"]["projector"] = {"type": "toy_projector"}
    asks = run(site, "validate", str(write_config(tmp_path / "clash.json", data)))
    assert asks.returncode == 2
    assert "model.projector.type: projector name 'toy_projector' is registered by pgmm-clash" in asks.stderr


class OtherHello:
    @hookimpl
    def pgmm_register_commands(self, registrar):
        registrar.add("hello", help="also says hello", configure=lambda p: None, run=lambda ns: 1)
        registrar.add("bye", help="says bye", configure=lambda p: None, run=lambda ns: 0)


def test_a_command_name_clash_drops_only_that_command(caplog):
    host = PluginHost(load_entry_points=False, environ={})
    host.register(GoodCommands(), name="good", distribution="pgmm-good")
    host.register(OtherHello(), name="other", distribution="pgmm-other")
    with caplog.at_level(logging.WARNING, logger="pgmm_core.plugins"):
        commands = host.commands().commands
    assert set(commands) == {"bye"}
    assert all(p.status == "loaded" for p in host.plugins)
    [warning] = [r.getMessage() for r in caplog.records if "'hello'" in r.getMessage()]
    assert "pgmm-good (plugin 'good')" in warning and "pgmm-other (plugin 'other')" in warning
