"""An objective names the model parts it trains with: those must be configured, the others may be
left out, and files of a part it does not build are not asked for."""

from __future__ import annotations

from typing import ClassVar, Literal

import pytest

from pgmm_core.config.files import missing_paths
from pgmm_core.config.loading import validate_config
from pgmm_core.errors import ConfigError
from pgmm_core.hookspecs import hookimpl
from pgmm_core.config.sections import objective_parts
from pgmm_core.objectives.base import ObjectiveConfig
from pgmm_core.plugins import PluginHost
from pgmm_core.testing import tiny_config


class ImageSideConfig(ObjectiveConfig):
    type: Literal["image_side"] = "image_side"
    parts: ClassVar[frozenset[str]] = frozenset({"vision", "connector"})


class PairsConfig(ObjectiveConfig):
    """An objective that contrasts the pairs of a batch: one pair has nothing to contrast with."""

    type: Literal["pairs"] = "pairs"

    def config_problems(self, config):
        if config.data.batch_size < 2:
            return [f"data.batch_size: {config.data.batch_size}; the 'pairs' objective needs 2 or more"]
        return []


class ImageSidePlugin:
    @hookimpl
    def pgmm_register_objectives(self, registrar):
        registrar.add("image_side", lambda config: None, ImageSideConfig,
                      description="an objective that trains the image side only")
        registrar.add("pairs", lambda config: None, PairsConfig, description="contrasts a batch's pairs")


@pytest.fixture
def host():
    host = PluginHost()
    host.register(ImageSidePlugin(), name="image-side", distribution="pgmm-test-image-side", version="1.0")
    return host


def test_an_image_side_objective_needs_no_llm(tmp_path, host):
    data = tiny_config(tmp_path / "run")
    data["objective"] = {"type": "image_side"}
    del data["model"]["llm"]
    config = validate_config(data, host)
    assert config.model.llm is None
    assert objective_parts(config) == {"vision", "connector"}


def test_the_llm_stays_required_for_captioning(tmp_path, host):
    data = tiny_config(tmp_path / "run")
    del data["model"]["llm"]
    with pytest.raises(ConfigError) as error:
        validate_config(data, host)
    assert error.value.problems == ["model.llm: required field is missing (the 'caption' objective uses it)"]


def test_files_of_an_unused_part_are_not_asked_for(tmp_path, host):
    data = tiny_config(tmp_path / "run")
    data["model"]["llm"] = {"type": "openpangu", "path": str(tmp_path / "no-such-llm")}
    assert any(p.startswith("model.llm.path: ") for p in missing_paths(validate_config(data, host)))
    data["objective"] = {"type": "image_side"}
    assert not [p for p in missing_paths(validate_config(data, host)) if p.startswith("model.llm")]


def test_an_objective_checks_the_whole_config(tmp_path, host):
    data = tiny_config(tmp_path / "run")
    data["objective"] = {"type": "pairs"}
    validate_config(data, host)
    data["data"]["batch_size"] = 1
    with pytest.raises(ConfigError) as error:
        validate_config(data, host)
    assert error.value.problems == ["data.batch_size: 1; the 'pairs' objective needs 2 or more"]
