"""The synthetic dataset and the caption processor."""

from __future__ import annotations

import torch

from pgmm_data.configs import SyntheticShapesConfig
from pgmm_data.processors import blip_caption
from pgmm_data.synthetic import SyntheticShapes


def test_deterministic_and_split_specific():
    config = SyntheticShapesConfig(num_samples=10, seed=3)
    a = SyntheticShapes(config, split="train", image_size=32)[4]
    b = SyntheticShapes(config, split="train", image_size=32)[4]
    assert torch.equal(a["image"], b["image"]) and a["caption"] == b["caption"]
    val = SyntheticShapes(config, split="val", image_size=32)
    assert any(val[i]["references"][0] != SyntheticShapes(config, split="train", image_size=32)[i]["caption"]
               for i in range(10))


def test_caption_names_colour_shape_and_place():
    item = SyntheticShapes(SyntheticShapesConfig(num_samples=1), split="train", image_size=32)[0]
    words = item["caption"].split()
    assert words[0] == "a" and words[3] in ("in",) and item["image"].shape == (3, 32, 32)


def test_blip_caption_rules():
    assert blip_caption('A Dog!  Runs (fast): "home"~', max_words=50) == "a dog runs fast home"
    assert blip_caption("one two three", max_words=2) == "one two"


def test_an_eval_split_is_a_retrieval_test_set():
    """texts, txt2img and img2txt agree with the items' references (what zero-shot retrieval reads)."""
    val = SyntheticShapes(SyntheticShapesConfig(num_samples=6, seed=1), split="val", image_size=32)
    texts, txt2img, img2txt = val.texts, val.txt2img, val.img2txt
    assert len(texts) == len(txt2img) == sum(len(t) for t in img2txt)
    for index in range(len(val)):
        item = val[index]
        assert item["index"] == index
        assert [texts[t] for t in img2txt[index]] == item["references"]
        assert all(int(txt2img[t]) == index for t in img2txt[index])
