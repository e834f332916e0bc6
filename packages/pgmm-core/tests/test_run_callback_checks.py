"""A configured callback that the plugin host refuses (a misspelt hook) stops the run, naming why."""

from __future__ import annotations

from typing import Literal

import pytest

from pgmm_core.config.loading import validate_config
from pgmm_core.config.sections import ComponentConfig
from pgmm_core.errors import PluginError
from pgmm_core.hookspecs import hookimpl
from pgmm_core.plugins import PluginHost
from pgmm_core.testing import tiny_config


class MisspeltConfig(ComponentConfig):
    type: Literal["misspelt"] = "misspelt"


class Misspelt:
    def __init__(self, config) -> None:
        self.called = False

    @hookimpl
    def pgmm_on_before_optimiser_step(self, run, step):  # British spelling: not a pgmm hook
        self.called = True


class Provider:
    @hookimpl
    def pgmm_register_callbacks(self, registrar):
        registrar.add("misspelt", Misspelt, MisspeltConfig)


def test_misspelt_callback_hook_stops_the_run_with_a_suggestion(tmp_path):
    from pgmm_core.train import train

    host = PluginHost(environ={})
    host.register(Provider(), name="provider")
    data = tiny_config(tmp_path / "run", train={"callbacks": [{"type": "misspelt"}], "max_steps": 1})
    with pytest.raises(PluginError, match=r"train.callbacks: Misspelt .*unknown hook 'pgmm_on_before_optimiser_step' "
                                          r"\(did you mean 'pgmm_on_before_optimizer_step'\?\)"):
        train(validate_config(data, host))
    assert "run-callback-0-misspelt" not in {p.name for p in host.plugins}  # unregistered again
