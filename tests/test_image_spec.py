"""A timm tower gets its own preprocessing, in training and in captioning.

The tower here is timm's ``test_byobnet``, whose pretrained config carries ImageNet's mean/std. A
test plugin registers it with a forward pre-hook that records every pixel tensor the tower receives;
the images are solid colours, so every recorded value must be ``(v / 255 - mean) / std`` with
ImageNet's statistics, and not CLIP's, which every dataset used before encoders declared their spec.
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import pytest
import torch
from PIL import Image

from pgmm_core.hookspecs import hookimpl
from pgmm_core.plugins import PluginHost
from pgmm_core.preprocessing import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, ImageSpec
from pgmm_core.testing import tiny_config
from pgmm_vision.configs import TimmEncoderConfig

TRAIN_COLOUR = (200, 100, 50)
CAPTION_COLOUR = (30, 160, 220)
TIMM_VISION = {"type": "recording_timm", "model_name": "test_byobnet", "image_size": 64}


class RecordingTimmConfig(TimmEncoderConfig):
    type: Literal["recording_timm"] = "recording_timm"


class RecordingTimm:
    """pgmm-vision's timm tower, recording the pixels it is given."""

    def __init__(self) -> None:
        self.pixels: list[torch.Tensor] = []

    def build(self, config):
        from pgmm_vision.timm_encoder import build_timm_encoder

        tower = build_timm_encoder(config)
        tower.register_forward_pre_hook(lambda module, args: self.pixels.append(args[0].detach().float().cpu()))
        return tower

    @hookimpl
    def pgmm_register_vision_encoders(self, registrar):
        registrar.add("recording_timm", self.build, RecordingTimmConfig, description="timm tower, recorded")


def normalised(colour, mean, std) -> torch.Tensor:
    """What ToTensor + Normalize make of a solid ``colour`` pixel, in float32 as torchvision computes it."""
    values = [(np.float32(v) / np.float32(255) - np.float32(m)) / np.float32(s) for v, m, s in zip(colour, mean, std)]
    return torch.tensor(values, dtype=torch.float32)


def assert_solid(pixels: torch.Tensor, colour) -> None:
    assert pixels.ndim == 4 and pixels.shape[1:] == (3, 64, 64)
    expected = normalised(colour, IMAGENET_MEAN, IMAGENET_STD).view(1, 3, 1, 1).expand_as(pixels)
    assert torch.equal(pixels, expected), f"pixels {pixels[0, :, 0, 0].tolist()} != {expected[0, :, 0, 0].tolist()}"
    clip = normalised(colour, CLIP_MEAN, CLIP_STD)
    assert not torch.allclose(pixels[0, :, 0, 0], clip, atol=1e-2)


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory):
    """One optimizer step plus an evaluation of a tiny model whose tower is the recording timm tower."""
    from pgmm_core.config.loading import validate_config
    from pgmm_core.train import train

    tmp = tmp_path_factory.mktemp("timm_spec")
    Image.new("RGB", (48, 40), TRAIN_COLOUR).save(tmp / "solid.png")
    lines = [{"image": "solid.png", "caption": f"a solid orange square number {i}", "image_id": i} for i in range(4)]
    (tmp / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    plugin = RecordingTimm()
    host = PluginHost(environ={})
    host.register(plugin, name="recording-timm", distribution="pgmm-test-timm", version="1.0")
    data = tiny_config(tmp / "run", train={"max_steps": 1, "log_every": 1},
                       eval={"generation": {"num_beams": 1, "max_new_tokens": 2, "min_new_tokens": 1}})
    data["model"]["vision"] = dict(TIMM_VISION)
    dataset = {"type": "jsonl_captions", "path": str(tmp / "captions.jsonl")}
    data["data"].update(train=[dataset], val=[dataset], batch_size=2)
    train(validate_config(data, host, source="timm spec test"))
    return plugin, host, tmp


def test_training_feeds_the_timm_tower_imagenet_normalised_pixels(timm_run):
    plugin, _, tmp = timm_run
    assert len(plugin.pixels) >= 2  # the training step and the evaluation
    for pixels in plugin.pixels:
        assert_solid(pixels, TRAIN_COLOUR)
    recorded = ImageSpec.from_json((tmp / "run" / "image_spec.json").read_text(encoding="utf-8"))
    assert recorded == ImageSpec(size=64, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic",
                                 crop_pct=0.95)


def test_captioning_feeds_the_timm_tower_imagenet_normalised_pixels(timm_run):
    from pgmm_core import Captioner

    plugin, host, tmp = timm_run
    Image.new("RGB", (50, 70), CAPTION_COLOUR).save(tmp / "blue.png")
    captioner = Captioner.from_run(tmp / "run", checkpoint="last", host=host)
    assert captioner.image_spec.mean == IMAGENET_MEAN and captioner.image_size == 64
    plugin.pixels.clear()
    captions = captioner.caption([tmp / "blue.png", Image.new("RGB", (20, 20), CAPTION_COLOUR)])
    assert len(captions) == 2
    assert len(plugin.pixels) >= 1
    for pixels in plugin.pixels:
        assert_solid(pixels, CAPTION_COLOUR)


def test_a_run_without_image_spec_json_resolves_it_from_its_config(timm_run):
    from pgmm_core.config.loading import load_config
    from pgmm_core.preprocessing import run_image_spec

    _, host, tmp = timm_run
    config = load_config(tmp / "run" / "config.json", host=host)
    recorded = ImageSpec.from_json((tmp / "run" / "image_spec.json").read_text(encoding="utf-8"))
    older = tmp / "older_run"
    older.mkdir()
    (older / "config.json").write_text((tmp / "run" / "config.json").read_text(encoding="utf-8"), encoding="utf-8")
    assert run_image_spec(older, config) == recorded
