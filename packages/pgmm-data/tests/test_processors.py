"""LAVIS processor semantics, rule by rule, against references computed directly with PIL + torchvision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from pgmm_data import randaugment
from pgmm_data.processors import (
    CLIP_MEAN,
    CLIP_STD,
    ToNormalizedTensor,
    blip2_image_train,
    blip_caption,
    blip_image_eval,
    blip_image_train,
    image_processor,
)
from pgmm_data.testing import photo

# --- blip_caption ------------------------------------------------------------------------------------


def test_caption_lowercases():
    assert blip_caption("A Tabby CAT") == "a tabby cat"


@pytest.mark.parametrize("mark", list('.!"()*#:;~'))
def test_caption_each_listed_punctuation_mark_becomes_a_space(mark):
    assert blip_caption(f"a{mark}b") == "a b"


def test_caption_other_punctuation_is_kept():
    assert blip_caption("a cat's toy, a dog-bed? yes") == "a cat's toy, a dog-bed? yes"


def test_caption_collapses_runs_of_whitespace_but_keeps_single_tabs():
    assert blip_caption("a  \t b\n\nc") == "a b c"
    assert blip_caption("a\tb") == "a\tb"  # LAVIS only replaces runs of two or more


def test_caption_strips_trailing_newline_then_spaces():
    assert blip_caption("  a cat on a mat.\n") == "a cat on a mat"
    assert blip_caption("(a cat)") == "a cat"


def test_caption_keeps_at_most_max_words_words():
    text = " ".join(f"w{i}" for i in range(60))
    assert blip_caption(text).split() == [f"w{i}" for i in range(50)]
    assert blip_caption("one two three", max_words=2) == "one two"
    assert blip_caption("one two", max_words=2) == "one two"


def test_caption_prompt_is_prepended_after_truncation():
    assert blip_caption("One Two Three.", max_words=2, prompt="a photo of ") == "a photo of one two"


# --- image processors --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image():
    return photo(1, (97, 61)).convert("RGB")  # odd sizes: no accidental symmetry


def _reference_normalize():
    return T.Compose([T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])


def test_to_normalized_tensor_is_bit_identical_to_totensor_normalize(image):
    ours = ToNormalizedTensor()(image)
    assert ours.dtype == torch.float32 and ours.is_contiguous()
    assert torch.equal(ours, _reference_normalize()(image))


def test_eval_transform_equals_pil_bicubic_resize_then_clip_normalisation(image):
    size = 24
    ours = blip_image_eval(size)(image)
    resized = image.resize((size, size), Image.Resampling.BICUBIC)  # what LAVIS' Resize((s, s)) does to a PIL image
    assert torch.equal(ours, _reference_normalize()(resized))
    by_hand = (np.asarray(resized, dtype=np.float32) / 255 - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD)
    np.testing.assert_allclose(ours.permute(1, 2, 0).numpy(), by_hand, rtol=0, atol=1e-6)
    assert ours.shape == (3, size, size)


def test_blip2_train_transform_equals_torchvision_pipeline_with_the_same_draws(image):
    reference = T.Compose([
        T.RandomResizedCrop(20, scale=(0.5, 1.0), interpolation=InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])
    ours = blip2_image_train(20)
    outputs = []
    for seed in range(6):
        torch.manual_seed(seed)
        a = ours(image)
        torch.manual_seed(seed)
        assert torch.equal(a, reference(image))
        outputs.append(a)
    assert not all(torch.equal(outputs[0], o) for o in outputs[1:])  # the draws do vary


def test_train_transforms_respect_scale_range(image):
    crop = blip2_image_train(16, min_scale=1.0, max_scale=1.0).transforms[0]
    assert crop.scale == (1.0, 1.0) and crop.interpolation == InterpolationMode.BICUBIC
    assert image_processor("blip2_image_train", 16, train=True, min_scale=0.3).transforms[0].scale == (0.3, 1.0)
    assert isinstance(image_processor("blip_image_train", 16, train=False).transforms[0], T.Resize)


def test_blip_image_train_adds_lavis_random_augment_after_the_flip(image):
    steps = blip_image_train(20).transforms
    assert [type(s).__name__ for s in steps] == ["RandomResizedCrop", "RandomHorizontalFlip", "RandomAugment",
                                                 "ToNormalizedTensor"]
    assert steps[2].num_ops == 2 and steps[2].level == 5
    assert steps[2].ops == ("Identity", "AutoContrast", "Brightness", "Sharpness", "Equalize",
                            "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
    torch.manual_seed(3)
    a = blip_image_train(20)(image)
    torch.manual_seed(3)
    assert torch.equal(a, blip_image_train(20)(image)) and a.shape == (3, 20, 20)


# --- RandomAugment (LAVIS rules) ---------------------------------------------------------------------------


def test_random_augment_draws_ops_with_replacement_and_applies_each_with_probability_half(monkeypatch):
    augment = randaugment.RandomAugment(2, 5)
    torch.manual_seed(0)
    draws = [augment.draw() for _ in range(400)]
    assert any(a == b for a, b in draws)  # with replacement, as np.random.choice(augs, N)
    assert {op for pair in draws for op in pair} == set(augment.ops)
    applied = []
    monkeypatch.setattr(randaugment, "OPS", {name: (lambda img, level, n=name: applied.append(n) or img)
                                             for name in randaugment.OPS})
    torch.manual_seed(1)
    tiny = Image.new("RGB", (4, 4))
    for _ in range(500):
        augment(tiny)
    assert 400 < len(applied) < 600  # 1000 drawn ops, each kept with probability 0.5


def test_random_augment_magnitudes_at_level_5():
    assert randaugment.enhance_factor(5) == pytest.approx(1.0)  # brightness/sharpness unchanged at M=5
    assert randaugment.enhance_factor(10) == pytest.approx(1.9)
    image = photo(0, (40, 30)).convert("RGB")
    assert randaugment.OPS["Brightness"](image, 5) is image and randaugment.OPS["Sharpness"](image, 5) is image
    fill = (128, 128, 128)
    rotated = {randaugment.OPS["Rotate"](image, 5).tobytes() for _ in range(20)}
    assert rotated == {image.rotate(a, resample=Image.Resampling.BILINEAR, fillcolor=fill).tobytes() for a in (15, -15)}


def test_random_augment_translate_moves_content_by_level_pixels_with_grey_fill():
    stripe = np.zeros((10, 30, 3), dtype=np.uint8)
    stripe[:, 15] = 255
    image = Image.fromarray(stripe)
    columns = set()
    for _ in range(20):
        out = np.asarray(randaugment.OPS["TranslateX"](image, 5))
        columns.add(int(np.flatnonzero(out[0, :, 0] == 255)[0]))
        assert (out[:, :5] == 128).all() or (out[:, -5:] == 128).all()  # the uncovered side is grey
    assert columns == {10, 20}  # ±5 px at level 5 (LAVIS: level / 10 * 10)


def test_random_augment_shear_uses_factor_0_15_at_level_5():
    image = photo(2, (32, 32)).convert("RGB")
    sheared = {randaugment.OPS["ShearX"](image, 5).tobytes() for _ in range(20)}
    expected = {image.transform(image.size, Image.Transform.AFFINE, (1, f, 0, 0, 1, 0),
                                resample=Image.Resampling.BILINEAR, fillcolor=(128, 128, 128)).tobytes()
                for f in (0.15, -0.15)}
    assert sheared == expected


def test_random_augment_autocontrast_and_equalize_are_pil_ops():
    image = photo(3, (32, 24)).convert("RGB")
    from PIL import ImageOps

    assert randaugment.OPS["AutoContrast"](image, 5).tobytes() == ImageOps.autocontrast(image).tobytes()
    assert randaugment.OPS["Equalize"](image, 5).tobytes() == ImageOps.equalize(image).tobytes()


# --- processors take the vision encoder's image spec ------------------------------------------------


def _lavis_blip_image_eval(size):
    """LAVIS ``BlipImageEvalProcessor`` as it stands: Resize((s, s), bicubic) + ToTensor + Normalize(CLIP)."""
    return T.Compose([T.Resize((size, size), interpolation=InterpolationMode.BICUBIC), T.ToTensor(),
                      T.Normalize(CLIP_MEAN, CLIP_STD)])


def test_eva_spec_eval_transform_is_lavis_blip_image_eval_bit_for_bit():
    from pgmm_core.preprocessing import eval_transform
    from pgmm_vision.configs import EvaViTGConfig

    astronaut = photo(0, (512, 512)).convert("RGB")  # a real photograph (skimage.data.astronaut)
    spec = EvaViTGConfig(image_size=224).image_spec()
    ours = eval_transform(spec)(astronaut)
    assert ours.shape == (3, 224, 224)
    assert torch.equal(ours, _lavis_blip_image_eval(224)(astronaut))
    assert torch.equal(blip_image_eval(spec)(astronaut), ours)
    assert torch.equal(blip_image_eval(224)(astronaut), ours)  # a bare size still means LAVIS' spec


def test_train_transforms_take_the_specs_statistics_and_interpolation(image):
    from pgmm_core.preprocessing import IMAGENET_MEAN, IMAGENET_STD, ImageSpec

    spec = ImageSpec(size=20, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear", crop_pct=0.9)
    reference = T.Compose([
        T.RandomResizedCrop(20, scale=(0.5, 1.0), interpolation=InterpolationMode.BILINEAR),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    for transform in (blip2_image_train(spec), image_processor("blip2_image_train", spec, train=True)):
        for seed in range(3):
            torch.manual_seed(seed)
            ours = transform(image)
            torch.manual_seed(seed)
            assert torch.equal(ours, reference(image))
    torch.manual_seed(0)
    with_randaugment = blip_image_train(spec)(image)
    assert with_randaugment.shape == (3, 20, 20)
    assert blip_image_train(spec).transforms[0].interpolation == InterpolationMode.BILINEAR


@pytest.mark.parametrize("name", ["blip2_image_train", "eval"])
def test_a_solid_colour_is_normalised_with_the_specs_statistics(name):
    from pgmm_core.preprocessing import IMAGENET_MEAN, IMAGENET_STD, ImageSpec

    colour = (200, 100, 50)
    solid = Image.new("RGB", (40, 30), colour)  # crops, flips and resizes leave it solid
    spec = ImageSpec(size=16, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic", crop_pct=0.875)
    pixels = image_processor(name, spec, train=name != "eval")(solid)
    assert pixels.shape == (3, 16, 16)
    for channel, value in enumerate(colour):
        expected = (np.float32(value) / np.float32(255) - np.float32(IMAGENET_MEAN[channel])) / np.float32(
            IMAGENET_STD[channel])
        assert torch.all(pixels[channel] == torch.tensor(expected)), channel
        clip = (value / 255 - CLIP_MEAN[channel]) / CLIP_STD[channel]
        assert abs(float(pixels[channel, 0, 0]) - clip) > 0.01  # not CLIP's normalisation
