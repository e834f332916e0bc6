"""Config assembly, overrides and error messages."""

from __future__ import annotations

import json

import pytest

from pgmm_core.config.loading import apply_overrides, load_config, validate_config
from pgmm_core.errors import ConfigError
from pgmm_core.plugins import PluginHost
from pgmm_core.testing import tiny_config, write_config


@pytest.fixture(scope="module")
def host():
    return PluginHost(environ={})


def problems_of(data, host, overrides=()):
    data, override_problems = apply_overrides(data, overrides)
    with pytest.raises(ConfigError) as err:
        validate_config(data, host, extra_problems=override_problems)
    return err.value.problems


def test_valid_config_builds_typed_sections(tmp_path, host):
    config = validate_config(tiny_config(tmp_path), host)
    assert config.model.vision.type == "eva_vit_g"
    assert type(config.model.vision).__name__ == "EvaViTGConfig"
    assert config.train.schedule == "linear_warmup_cosine"
    assert config.host is host


def test_overrides_set_nested_values_and_lists(tmp_path, host):
    path = write_config(tmp_path / "c.json", tiny_config(tmp_path))
    config = load_config(path, ["train.lr=2e-5", "data.train.0.num_samples=7", "model.prompt=a photo of",
                                "eval.generation.num_beams=2"], host=host)
    assert config.train.lr == 2e-5
    assert config.data.train[0].num_samples == 7
    assert config.model.prompt == "a photo of"
    assert config.eval.generation.num_beams == 2


def test_all_errors_reported_at_once_with_paths(tmp_path, host):
    data = tiny_config(tmp_path)
    data["model"]["vision"]["image_size"] = -3
    data["train"]["lr_typo"] = 1
    data["model"]["connector"]["type"] = "qformr"
    problems = problems_of(data, host, ["train.epochs=zero"])
    joined = "\n".join(problems)
    assert len(problems) == 4, joined
    assert "model.vision.image_size: Input should be greater than 0" in joined
    assert "train.lr_typo: unknown field" in joined
    assert "model.connector.type: unknown connector 'qformr'" in joined and "Did you mean 'qformer'" in joined
    assert "train.epochs:" in joined


def test_unknown_field_suggests_close_name(tmp_path, host):
    data = tiny_config(tmp_path)
    data["data"]["train"][0]["num_sample"] = 5
    (problem,) = problems_of(data, host)
    assert problem.startswith("data.train.0.num_sample: unknown field (did you mean 'num_samples'?)")


def test_uninstalled_component_names_its_package(tmp_path):
    import pgmm_core.builtin
    import pgmm_data.plugin
    import pgmm_pangu.plugin
    import pgmm_vision.plugin

    host = PluginHost(environ={}, load_entry_points=False)  # pgmm-ascend not installed
    for module in (pgmm_core.builtin, pgmm_vision.plugin, pgmm_pangu.plugin, pgmm_data.plugin):
        host.register(module)
    data = tiny_config(tmp_path, device={"type": "npu"})
    (problem,) = problems_of(data, host)
    assert "unknown device backend 'npu'" in problem
    assert "pip install pgmm-ascend" in problem


def test_disabled_component_says_it_is_disabled(tmp_path):
    host = PluginHost(environ={"PGMM_DISABLE_PLUGINS": "pgmm-ascend"})
    data = tiny_config(tmp_path, device={"type": "npu"})
    (problem,) = problems_of(data, host)
    assert "'npu' is provided by pgmm-ascend, which is installed but disabled" in problem


def test_missing_type_lists_choices(tmp_path, host):
    data = tiny_config(tmp_path)
    del data["model"]["llm"]["type"]
    (problem,) = problems_of(data, host)
    assert problem.startswith("model.llm.type: required; one of:") and "openpangu" in problem


def test_bad_overrides(tmp_path, host):
    problems = problems_of(tiny_config(tmp_path), host, ["train.lr.x=1", "noequals", "data.train.5.seed=1"])
    joined = "\n".join(problems)
    assert "'train.lr' is a float, not an object" in joined
    assert "expected KEY=VALUE" in joined
    assert "index 5 is past the end of 'data.train'" in joined


def test_json_syntax_error_names_line(tmp_path, host):
    path = tmp_path / "broken.json"
    path.write_text('{"model": {\n  "vision": 1,,\n}}')
    with pytest.raises(ConfigError) as err:
        load_config(path, host=host)
    assert "line 2" in str(err.value) and str(path) in str(err.value)


def test_demo_config_is_the_example(tmp_path):
    from pathlib import Path

    from pgmm_core.config.loading import demo_config_text

    example = Path(__file__).parents[3] / "examples" / "tiny" / "stage2.json"
    assert json.loads(demo_config_text()) == json.loads(example.read_text())


def test_schema_contains_plugin_sections(host):
    schema = host.config_model().model_json_schema()
    text = json.dumps(schema)
    for name in ("EvaViTGConfig", "QFormerConfig", "OpenPanguConfig", "SyntheticShapesConfig", "NpuConfig"):
        assert name in text


@pytest.mark.parametrize("path, value", [("train.seed", True), ("eval.generation.max_new_tokens", True),
                                         ("train.lr", False), ("data.batch_size", "8"), ("train.lr", "1e-4"),
                                         ("model.prompt", 3)])
def test_config_values_are_strict_json(tmp_path, host, path, value):
    """A boolean is not a number and a string is not a number (nor a number a string), whatever
    pydantic's lax mode would coerce; each error names its path."""
    data = tiny_config(tmp_path)
    section, *rest = path.split(".")
    target = data.setdefault(section, {})
    for key in rest[:-1]:
        target = target.setdefault(key, {})
    target[rest[-1]] = value
    problems = problems_of(data, host)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: "), problems


def test_json_forms_still_accepted(tmp_path, host):
    """Integers for floats, and overrides parsed as JSON first (``train.seed=7`` is the number 7)."""
    path = write_config(tmp_path / "c.json", tiny_config(tmp_path))
    config = load_config(path, ["train.lr=1", "train.seed=7", "model.prompt=7 cats"], host=host)
    assert config.train.lr == 1.0 and config.train.seed == 7 and config.model.prompt == "7 cats"
    with pytest.raises(ConfigError, match="train.seed"):
        load_config(path, ["train.seed=true"], host=host)
