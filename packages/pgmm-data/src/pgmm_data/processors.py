"""LAVIS' image and text processors, built from torchvision transforms.

``blip2_image_train``: RandomResizedCrop(scale 0.5–1, bicubic) + horizontal flip + ToTensor +
Normalize (CLIP statistics). ``blip_image_train`` adds RandAugment (N=2, M=5; torchvision's op set).
``blip_image_eval``: Resize((s, s), bicubic) + ToTensor + Normalize. ``blip_caption``: lowercase,
``.!"()*#:;~`` -> spaces, whitespace collapsed, stripped, at most ``max_words`` words.
"""

from __future__ import annotations

import re
from typing import Callable

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_PUNCTUATION = re.compile(r"([.!\"()*#:;~])")
_SPACES = re.compile(r"\s{2,}")


def blip_caption(caption: str, max_words: int = 50, prompt: str = "") -> str:
    """LAVIS ``BlipCaptionProcessor.pre_caption`` (with its prompt prepended, as LAVIS does)."""
    caption = _PUNCTUATION.sub(" ", caption.lower())
    caption = _SPACES.sub(" ", caption).rstrip("\n").strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    return prompt + caption


def _normalize():
    from torchvision import transforms

    return transforms.Normalize(CLIP_MEAN, CLIP_STD)


def blip_image_eval(image_size: int) -> Callable:
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    return transforms.Compose([
        transforms.Resize((image_size, image_size), interpolation=InterpolationMode.BICUBIC),
        transforms.ToTensor(),
        _normalize(),
    ])


def blip2_image_train(image_size: int, min_scale: float = 0.5, max_scale: float = 1.0) -> Callable:
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    return transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=(min_scale, max_scale),
                                     interpolation=InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        _normalize(),
    ])


def blip_image_train(image_size: int, min_scale: float = 0.5, max_scale: float = 1.0) -> Callable:
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    return transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=(min_scale, max_scale),
                                     interpolation=InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.RandAugment(num_ops=2, magnitude=5),
        transforms.ToTensor(),
        _normalize(),
    ])


IMAGE_PROCESSORS = {
    "blip2_image_train": blip2_image_train,
    "blip_image_train": blip_image_train,
    "blip_image_eval": blip_image_eval,
}
