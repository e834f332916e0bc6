"""ImageSpec: JSON round trip, validation, overrides, the eval transform, and which spec a run uses."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from pgmm_core.preprocessing import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGE_SPEC_FILE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageSpec,
    clip_spec,
    denormalize,
    encoder_image_spec,
    eval_transform,
    resolve_image_spec,
    run_image_spec,
)

TIMM_LIKE = ImageSpec(size=96, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear", crop_pct=0.875)


def test_json_round_trip_is_exact_and_json_native():
    for spec in (clip_spec(224), TIMM_LIKE):
        text = spec.to_json()
        assert ImageSpec.from_json(text) == spec
        data = json.loads(text)
        assert data == {"size": spec.size, "mean": list(spec.mean), "std": list(spec.std),
                        "interpolation": spec.interpolation, "crop_pct": spec.crop_pct}
        assert ImageSpec.from_dict(data) == spec
    assert hash(ImageSpec.from_json(clip_spec(224).to_json())) == hash(clip_spec(224))


def test_lists_become_tuples_and_bad_values_are_refused():
    spec = ImageSpec(size=32, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], crop_pct=1)
    assert spec.mean == (0.5, 0.5, 0.5) and isinstance(spec.std, tuple) and spec.crop_pct == 1.0
    with pytest.raises(AttributeError):
        spec.size = 64  # frozen
    bad = [dict(size=0), dict(size=True), dict(mean=(0.5, 0.5)), dict(std=(0.2, 0.0, 0.2)),
           dict(interpolation="random"), dict(crop_pct=0.0), dict(crop_pct=1.5)]
    for fields in bad:
        with pytest.raises(ValueError):
            ImageSpec(**{"size": 32, "mean": CLIP_MEAN, "std": CLIP_STD, **fields})
    with pytest.raises(ValueError, match="unknown field"):
        ImageSpec.from_dict({**clip_spec(32).to_dict(), "antialias": True})


def test_user_overrides_beat_the_encoders_spec():
    assert resolve_image_spec(TIMM_LIKE) == TIMM_LIKE
    resolved = resolve_image_spec(TIMM_LIKE, size=64, mean=CLIP_MEAN, crop_pct=1.0)
    assert resolved == ImageSpec(size=64, mean=CLIP_MEAN, std=IMAGENET_STD, interpolation="bilinear", crop_pct=1.0)


def test_eval_transform_without_crop_is_resize_totensor_normalize():
    image = Image.effect_mandelbrot((53, 41), (-2, -1.5, 1, 1.5), 40).convert("RGB")
    reference = T.Compose([T.Resize((24, 24), interpolation=InterpolationMode.BICUBIC), T.ToTensor(),
                           T.Normalize(CLIP_MEAN, CLIP_STD)])
    assert torch.equal(eval_transform(clip_spec(24))(image), reference(image))


def test_eval_transform_with_crop_pct_keeps_the_centre():
    image = Image.effect_mandelbrot((53, 41), (-2, -1.5, 1, 1.5), 40).convert("RGB")
    scaled = math.floor(TIMM_LIKE.size / TIMM_LIKE.crop_pct)
    reference = T.Compose([T.Resize((scaled, scaled), interpolation=InterpolationMode.BILINEAR),
                           T.CenterCrop(TIMM_LIKE.size), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    ours = eval_transform(TIMM_LIKE)(image)
    assert ours.shape == (3, 96, 96) and torch.equal(ours, reference(image))
    restored = denormalize(ours, TIMM_LIKE)
    assert torch.allclose(restored, T.ToTensor()(T.CenterCrop(96)(image.resize((scaled, scaled),
                                                                                Image.Resampling.BILINEAR))),
                          atol=1e-6)


class _Encoder:
    def __init__(self, spec=None, size=32):
        if spec is not None:
            self.image_spec = spec
        self.image_size = spec.size if spec is not None else size


def test_an_encoder_without_a_spec_gets_what_every_encoder_got_before(caplog):
    assert encoder_image_spec(_Encoder(TIMM_LIKE)) is TIMM_LIKE
    with caplog.at_level(logging.WARNING, logger="pgmm_core.preprocessing"):
        assert encoder_image_spec(_Encoder(size=48)) == clip_spec(48)
    assert "declares no image_spec" in caplog.text


class _VisionConfig:
    def __init__(self, spec):
        self.spec = spec

    def image_spec(self):
        return self.spec


class _Config:
    def __init__(self, spec):
        self.model = type("Model", (), {"vision": _VisionConfig(spec)})()
        self.host = None


def test_a_run_uses_its_recorded_spec_else_its_config(tmp_path, caplog):
    config = _Config(TIMM_LIKE)
    assert run_image_spec(tmp_path, config) == TIMM_LIKE  # an older run: resolved from its config
    assert run_image_spec(tmp_path, config, _Encoder(clip_spec(96))) == clip_spec(96)  # or the built encoder
    (tmp_path / IMAGE_SPEC_FILE).write_text(clip_spec(96).to_json(), encoding="utf-8")
    assert run_image_spec(tmp_path, config) == clip_spec(96)
    with caplog.at_level(logging.WARNING, logger="pgmm_core.preprocessing"):
        assert run_image_spec(tmp_path, config, _Encoder(TIMM_LIKE)) == clip_spec(96)  # what it trained with
        assert "using the run's" in caplog.text
        resized = ImageSpec(size=64, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        assert run_image_spec(tmp_path, config, _Encoder(resized)) == resized  # the tower needs its own size
        assert "configured for 64 px" in caplog.text
