"""LAVIS' ``RandomAugment`` (the one in ``blip_image_train``), on PIL images, drawing from torch's RNG.

The rules are LAVIS': draw ``num_ops`` operations from the list *with replacement*; apply each with
probability 0.5; the magnitude ``level`` (0..10) maps to rotate ±3·level degrees, shear ±0.03·level,
translate ±level pixels (each sign chosen with probability 0.5), brightness/sharpness factor
0.18·level + 0.1 (so 1.0, unchanged, at LAVIS' level 5); geometric ops fill with grey (128).

LAVIS runs the ops with OpenCV on numpy arrays and draws from ``np.random`` (which DataLoader
workers do not reseed per sample); here the same ops run with PIL and every draw comes from torch's
RNG, so that :class:`pgmm_core.data.SeededItems` makes each sample's augmentation a pure function of
(seed, epoch, position) and resumed runs repeat it exactly.
"""

from __future__ import annotations

from typing import Callable

import torch
from PIL import Image, ImageEnhance, ImageOps

MAX_LEVEL = 10
FILL = (128, 128, 128)
TRANSLATE_PIXELS = 10  # LAVIS' translate_const: pixels at MAX_LEVEL

# The op list LAVIS' BlipImageTrainProcessor passes (in its order).
BLIP_OPS = ("Identity", "AutoContrast", "Brightness", "Sharpness", "Equalize",
            "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


def _coin() -> bool:
    return bool(torch.rand(()) > 0.5)


def _signed(value: float, negative_if_heads: bool = True) -> float:
    heads = _coin()
    return -value if heads == negative_if_heads else value


def enhance_factor(level: float) -> float:
    return level / MAX_LEVEL * 1.8 + 0.1


def _affine(image: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    """``matrix`` maps output to input pixels (PIL's convention; OpenCV's warpAffine is the inverse)."""
    return image.transform(image.size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR,
                           fillcolor=FILL)


def _shear_x(image: Image.Image, level: float) -> Image.Image:
    factor = _signed(level / MAX_LEVEL * 0.3)
    return _affine(image, (1, -factor, 0, 0, 1, 0))


def _shear_y(image: Image.Image, level: float) -> Image.Image:
    factor = _signed(level / MAX_LEVEL * 0.3)
    return _affine(image, (1, 0, 0, -factor, 1, 0))


def _translate_x(image: Image.Image, level: float) -> Image.Image:
    offset = _signed(level / MAX_LEVEL * TRANSLATE_PIXELS)
    return _affine(image, (1, 0, offset, 0, 1, 0))


def _translate_y(image: Image.Image, level: float) -> Image.Image:
    offset = _signed(level / MAX_LEVEL * TRANSLATE_PIXELS)
    return _affine(image, (1, 0, 0, 0, 1, offset))


def _rotate(image: Image.Image, level: float) -> Image.Image:
    # LAVIS negates the angle when the draw is < 0.5 (the other ops: when > 0.5); counter-clockwise.
    degrees = _signed(level / MAX_LEVEL * 30, negative_if_heads=False)
    return image.rotate(degrees, resample=Image.Resampling.BILINEAR, fillcolor=FILL)


def _enhance(enhancer: type) -> Callable[[Image.Image, float], Image.Image]:
    def apply(image: Image.Image, level: float) -> Image.Image:
        factor = enhance_factor(level)
        return image if factor == 1.0 else enhancer(image).enhance(factor)

    return apply


OPS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "Identity": lambda image, level: image,
    "AutoContrast": lambda image, level: ImageOps.autocontrast(image),
    "Equalize": lambda image, level: ImageOps.equalize(image),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate_x,
    "TranslateY": _translate_y,
    "Rotate": _rotate,
}


class RandomAugment:
    """``RandomAugment(2, 5, augs=BLIP_OPS)`` of LAVIS: PIL image in, PIL image out."""

    def __init__(self, num_ops: int = 2, level: float = 5, ops: tuple[str, ...] = BLIP_OPS) -> None:
        unknown = [name for name in ops if name not in OPS]
        if unknown:
            raise ValueError(f"unknown RandomAugment ops {unknown} (known: {sorted(OPS)})")
        self.num_ops = num_ops
        self.level = level
        self.ops = tuple(ops)

    def draw(self) -> list[str]:
        """The ops of one call, before each one's probability-0.5 draw (with replacement)."""
        picks = torch.randint(len(self.ops), (self.num_ops,)).tolist()
        return [self.ops[i] for i in picks]

    def __call__(self, image: Image.Image) -> Image.Image:
        for name in self.draw():
            if torch.rand(()) > 0.5:  # LAVIS: skip when random() > prob (0.5)
                continue
            image = OPS[name](image, self.level)
        return image

    def __repr__(self) -> str:
        return f"RandomAugment(num_ops={self.num_ops}, level={self.level}, ops={list(self.ops)})"
