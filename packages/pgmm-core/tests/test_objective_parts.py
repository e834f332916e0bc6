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


class ImageSidePlugin:
    @hookimpl
    def pgmm_register_objectives(self, registrar):
        registrar.add("image_side", lambda config: None, ImageSideConfig,
                      description="an objective that trains the image side only")


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
