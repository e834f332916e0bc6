"""build_model: the parts an objective asks for, the one owner of freezing, the config's precision policy."""

from __future__ import annotations

import pytest
import torch

from pgmm_core import frozen_weights
from pgmm_core.config.loading import validate_config
from pgmm_core.model import ModelPartsError, build_model
from pgmm_core.plugins import PluginHost
from pgmm_core.testing import tiny_config


@pytest.fixture(scope="module")
def host():
    return PluginHost(environ={})


def config(host, tmp_path, precision="fp32", **model):
    data = tiny_config(tmp_path / "run", device={"type": "cpu", "precision": precision})
    data["model"].update(model)
    return validate_config(data, host)


def test_the_default_parts_are_the_objectives(host, tmp_path):
    model = build_model(config(host, tmp_path))
    assert model.parts == {"vision", "connector", "projector", "llm"}
    assert host.build("objective", config(host, tmp_path).objective).parts == model.parts


def test_the_image_side_alone(host, tmp_path):
    llm_dir = tmp_path / "llm"
    cfg = config(host, tmp_path, llm={**tiny_config("x")["model"]["llm"], "path": str(llm_dir)})
    model = build_model(cfg, parts={"vision", "connector"})
    assert model.parts == {"vision", "connector"} and model.llm is None and model.projector is None
    assert not llm_dir.exists()  # the LLM was not even loaded
    encoding = model.encode_image(torch.randn(2, 3, 32, 32))
    assert encoding.query_embeds.shape == (2, 4, 32) and encoding.llm_embeds is None
    with pytest.raises(ModelPartsError, match="generate needs the model's projector, llm.*vision"):
        model.generate(torch.randn(1, 3, 32, 32))
    with pytest.raises(ModelPartsError, match="captioning loss needs the model's projector, llm"):
        model(torch.randn(1, 3, 32, 32), ["a red circle"])
    assert {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad} == {"ln_vision",
                                                                                               "connector"}


@pytest.mark.parametrize("parts,message", [
    ({"vision", "connector", "projector"}, "projector cannot be built without the llm"),
    ({"connector"}, "connector cannot be built without the vision"),
    ({"vision", "decoder"}, "unknown model part"),
])
def test_parts_that_cannot_be_built_are_refused(host, tmp_path, parts, message):
    with pytest.raises(ModelPartsError, match=message):
        build_model(config(host, tmp_path), parts=parts)


def test_build_model_is_the_one_that_freezes(host, tmp_path):
    qformer = {**tiny_config("x")["model"]["connector"], "freeze": True}
    cfg = config(host, tmp_path, connector=qformer)
    alone = host.build("connector", cfg.model.connector, encoder_width=32)
    assert alone.frozen and all(p.requires_grad for p in alone.parameters())  # the factory only declares it
    model = build_model(cfg, parts={"vision", "connector"})
    assert model.connector.frozen and not any(p.requires_grad for p in model.connector.parameters())
    model.train()
    assert not model.connector.training and not model.vision.training and model.ln_vision.training


def test_the_configs_precision_policy_is_applied_after_the_fingerprint(host, tmp_path):
    torch.manual_seed(0)
    full = build_model(config(host, tmp_path))
    torch.manual_seed(0)
    half = build_model(config(host, tmp_path, precision="bf16"))
    assert {p.dtype for p in half.vision.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in half.llm.parameters()} == {torch.bfloat16}
    trainable = [p for p in half.parameters() if p.requires_grad]
    assert trainable and {p.dtype for p in trainable} == {torch.float32}
    # the record a run keeps does not depend on the precision it ran with
    assert half.frozen_fingerprint == full.frozen_fingerprint == frozen_weights.fingerprint(full)
    assert frozen_weights.fingerprint(half) != half.frozen_fingerprint
