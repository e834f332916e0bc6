"""What the contracts cannot know about these components: local weights, the captions file format,
unreadable images, a padded batch of vision tokens."""

from __future__ import annotations

import json

import pytest
import torch

from pgmm_core.errors import CheckpointError, DataError
from pgmm_example_plugin.configs import AttentionPoolConfig, CnnTokensConfig, ImageFolderCaptionsConfig
from pgmm_example_plugin.connector import build_attention_pool
from pgmm_example_plugin.demo_folder import write_demo_folder
from pgmm_example_plugin.encoder import build_cnn_tokens
from pgmm_example_plugin.folder import build_image_folder_captions

KWARGS = {"depths": [1, 1, 1, 1], "dims": [16, 32, 48, 64]}


def test_tokens_are_the_flattened_feature_map():
    encoder = build_cnn_tokens(CnnTokensConfig(model_name="convnext_atto", image_size=64, model_kwargs=KWARGS,
                                               position_embedding=False)).eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = encoder(pixels)
        feature_map = encoder.backbone.forward_features(pixels)
    assert tokens.shape == (2, 4, 64)  # stride 32: a 2×2 grid of 64-wide features
    torch.testing.assert_close(tokens[:, 1], feature_map[:, :, 0, 1])  # row-major positions


def test_the_cnn_declares_timms_preprocessing_and_the_dataset_applies_it(tmp_path):
    from PIL import Image
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    config = CnnTokensConfig(model_name="convnext_atto", image_size=64, model_kwargs=KWARGS)
    spec = build_cnn_tokens(config).image_spec
    assert (spec.size, spec.mean, spec.std) == (64, tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))
    assert config.image_spec() == spec  # known without building the CNN
    Image.new("RGB", (64, 64), (255, 0, 128)).save(tmp_path / "solid.png")
    (tmp_path / "captions.json").write_text(json.dumps({"solid.png": "a pink square"}), encoding="utf-8")
    pixels = build_image_folder_captions(ImageFolderCaptionsConfig(root=str(tmp_path)), split="val",
                                         image_spec=spec)[0]["image"]
    for channel, value in enumerate((255, 0, 128)):
        expected = (value / 255 - IMAGENET_DEFAULT_MEAN[channel]) / IMAGENET_DEFAULT_STD[channel]
        torch.testing.assert_close(pixels[channel], torch.full((64, 64), expected), rtol=0, atol=1e-6)


def test_local_weights_are_loaded(tmp_path):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("convnext_atto", pretrained=False, **KWARGS)  # with its classifier head
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "weights.safetensors")
    encoder = build_cnn_tokens(CnnTokensConfig(model_name="convnext_atto", model_kwargs=KWARGS,
                                               checkpoint=str(tmp_path / "weights.safetensors")))
    for name, value in encoder.backbone.state_dict().items():
        torch.testing.assert_close(value, source.state_dict()[name], rtol=0, atol=0)


def test_checkpoint_problems_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        build_cnn_tokens(CnnTokensConfig(model_name="convnext_atto", checkpoint=str(tmp_path / "none.pth")))
    import timm
    from safetensors.torch import save_file

    other = timm.create_model("convnext_atto", pretrained=False, depths=[1, 1, 1, 1], dims=[16, 32, 48, 80])
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="does not fit convnext_atto"):
        build_cnn_tokens(CnnTokensConfig(model_name="convnext_atto", model_kwargs=KWARGS,
                                         checkpoint=str(tmp_path / "other.safetensors")))


def test_train_samples_are_captions_and_eval_samples_are_images(tmp_path):
    folder = write_demo_folder(tmp_path, split="val", count=3, size=32)
    config = ImageFolderCaptionsConfig(root=str(folder))
    captions = json.loads((folder / "captions.json").read_text())
    train = build_image_folder_captions(config, split="train", image_size=32)
    val = build_image_folder_captions(config, split="val", image_size=32)
    assert len(train) == sum(len(c) for c in captions.values()) and len(val) == 3
    first = sorted(captions)[0]
    assert val[0]["references"] == captions[first] and val[0]["image_id"] == 0
    assert train[0]["caption"] == captions[first][0] and train[0]["image_id"] == first.removesuffix(".jpg")


def test_unreadable_image_is_reported_not_raised(tmp_path):
    folder = write_demo_folder(tmp_path, split="train", count=2, size=32)
    (folder / "train_0000.jpg").write_bytes(b"not a jpeg")
    dataset = build_image_folder_captions(ImageFolderCaptionsConfig(root=str(folder)), split="val", image_size=32)
    assert dataset[0]["bad"].startswith(str(folder / "train_0000.jpg"))
    assert "image" in dataset[1]


def test_captions_file_mistakes_name_the_file(tmp_path):
    config = ImageFolderCaptionsConfig(root=str(tmp_path))
    with pytest.raises(DataError, match="captions.json not found"):
        build_image_folder_captions(config, split="train", image_size=32)
    (tmp_path / "captions.json").write_text('{"a.jpg": []}')
    with pytest.raises(DataError, match="'a.jpg' needs a caption"):
        build_image_folder_captions(config, split="train", image_size=32)


def test_a_padded_batch_gives_each_image_the_queries_of_its_own_tokens():
    """``vision_mask`` is B×N, one row per image, 1 = a real token, 0 = padding: an image padded to
    the batch's longest token sequence gets the queries of its real tokens alone."""
    connector = build_attention_pool(AttentionPoolConfig(num_query_tokens=3, hidden_size=16, num_heads=2),
                                     encoder_width=8).eval()
    generator = torch.Generator().manual_seed(0)
    short, long = torch.randn(1, 4, 8, generator=generator), torch.randn(1, 7, 8, generator=generator)
    padded = torch.cat([torch.cat([short, torch.randn(1, 3, 8, generator=generator)], dim=1), long])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1] * 7])
    with torch.no_grad():
        batch = connector(padded, mask)
        alone = connector(short)
        as_bool = connector(padded, mask.bool())
    assert batch.shape == (2, 3, 16)
    torch.testing.assert_close(batch[:1], alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(as_bool, batch)
    assert not torch.allclose(connector(padded)[:1], alone, atol=1e-3), "without the mask the padding is attended to"


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        AttentionPoolConfig(hidden_size=30, num_heads=4)


def test_grad_norm_log_sees_the_gradients_of_every_step(pgmm_tiny_config):
    """In a real run the callback's global norm is the one the trainer logs (no clipping here)."""
    from pgmm_core.config.loading import validate_config
    from pgmm_core.plugins import PluginHost
    from pgmm_core.train import train

    config = pgmm_tiny_config(train={"max_steps": 3, "log_every": 1, "callbacks": [{"type": "grad_norm_log"}]})
    config["data"]["val"] = []
    train(validate_config(config, PluginHost()))
    run = config["train"]["output_dir"]
    norms = [json.loads(line) for line in open(f"{run}/grad_norms.jsonl", encoding="utf-8")]
    logged = [json.loads(line) for line in open(f"{run}/log.jsonl", encoding="utf-8")]
    assert [n["step"] for n in norms] == [1, 2, 3]
    assert {"connector", "projector", "total"} <= set(norms[0])  # the trainable parts
    for mine, record in zip(norms, logged):
        assert mine["total"] > 0
        assert mine["total"] == pytest.approx(record["grad_norm"], rel=1e-5)
