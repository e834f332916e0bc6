"""LAVIS' image and text processors, with the vision encoder's preprocessing.

=====================  ==========================================================================
``blip2_image_train``  RandomResizedCrop(size, scale=(0.5, 1.0), interpolation) + RandomHorizontalFlip
                       + ToTensor + Normalize(mean, std)
``blip_image_train``   the same with LAVIS' RandomAugment(2, 5) after the flip (:mod:`.randaugment`)
``blip_image_eval``    the encoder's eval transform (:func:`pgmm_core.preprocessing.eval_transform`):
                       Resize((size, size), interpolation) + ToTensor + Normalize
``blip_caption``       lowercase; ``.!"()*#:;~`` -> space; runs of 2+ whitespace -> one space;
                       strip trailing newlines, then spaces; keep the first ``max_words`` words;
                       prepend the prompt
``blip_question``      lowercase; ``.!"()*#:;~`` removed; trailing spaces stripped; keep the first
                       ``max_words`` words (LAVIS ``BlipQuestionProcessor``, VQA questions)
=====================  ==========================================================================

Size, mean/std and interpolation come from the vision encoder's :class:`~pgmm_core.preprocessing.ImageSpec`
(the dataset factory receives it); what augmentation to apply is the dataset config's choice. For
EVA-ViT-g the spec is LAVIS' own (CLIP mean/std, bicubic), so these are LAVIS' processors bit for
bit. An int instead of a spec means that size with LAVIS' spec, as before specs existed.

The random parts are torchvision's own transforms (same RNG draws as LAVIS). ToTensor + Normalize
are fused into :class:`~pgmm_core.preprocessing.ToNormalizedTensor`, which does the same float
operations in the same order (bit-identical output) in one buffer.
"""

from __future__ import annotations

import re
from typing import Callable

from pgmm_core.preprocessing import CLIP_MEAN, CLIP_STD, ImageSpec, ToNormalizedTensor, clip_spec, eval_transform
from pgmm_core.preprocessing import interpolation_mode, normalize

__all__ = ["CLIP_MEAN", "CLIP_STD", "ToNormalizedTensor", "as_spec", "blip2_image_train", "blip_caption",
           "blip_image_eval", "blip_image_train", "blip_question", "dataset_image_spec", "image_processor"]

_PUNCTUATION = re.compile(r"([.!\"()*#:;~])")
_SPACES = re.compile(r"\s{2,}")


def blip_caption(caption: str, max_words: int = 50, prompt: str = "") -> str:
    """LAVIS ``BlipCaptionProcessor``: ``prompt + pre_caption(caption)``.

    pgmm's trainer puts ``model.prompt`` before every caption itself (and masks it from the loss), so
    datasets call this with the default empty prompt.
    """
    caption = _PUNCTUATION.sub(" ", caption.lower())
    caption = _SPACES.sub(" ", caption)
    caption = caption.rstrip("\n").strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    return prompt + caption


def blip_question(question: str, max_words: int = 50) -> str:
    """LAVIS ``BlipQuestionProcessor.pre_question`` (punctuation deleted, not replaced by spaces)."""
    question = _PUNCTUATION.sub("", question.lower()).rstrip(" ")
    words = question.split(" ")
    if len(words) > max_words:
        question = " ".join(words[:max_words])
    return question


def as_spec(spec: ImageSpec | int) -> ImageSpec:
    """A spec as given; a bare size is LAVIS' CLIP spec at that size (callers from before specs)."""
    return spec if isinstance(spec, ImageSpec) else clip_spec(int(spec))


def dataset_image_spec(image_spec: ImageSpec | None, image_size: int | None) -> ImageSpec:
    """The vision encoder's spec the factory received; a caller that passes only ``image_size`` (from
    before specs existed) gets LAVIS' CLIP spec at that size, as every dataset used then."""
    if image_spec is not None:
        return image_spec
    if image_size is None:
        raise TypeError("a dataset factory needs image_spec= (or, from older callers, image_size=)")
    return as_spec(image_size)


def blip_image_eval(spec: ImageSpec | int) -> Callable:
    return eval_transform(as_spec(spec))


def _random_crop_flip(spec: ImageSpec, min_scale: float, max_scale: float) -> list:
    from torchvision import transforms

    return [
        transforms.RandomResizedCrop(spec.size, scale=(min_scale, max_scale),
                                     interpolation=interpolation_mode(spec.interpolation)),
        transforms.RandomHorizontalFlip(),
    ]


def blip2_image_train(spec: ImageSpec | int, min_scale: float = 0.5, max_scale: float = 1.0) -> Callable:
    from torchvision import transforms

    spec = as_spec(spec)
    return transforms.Compose([*_random_crop_flip(spec, min_scale, max_scale), normalize(spec)])


def blip_image_train(spec: ImageSpec | int, min_scale: float = 0.5, max_scale: float = 1.0) -> Callable:
    from torchvision import transforms

    from pgmm_data.randaugment import BLIP_OPS, RandomAugment

    spec = as_spec(spec)
    return transforms.Compose([*_random_crop_flip(spec, min_scale, max_scale), RandomAugment(2, 5, BLIP_OPS),
                               normalize(spec)])


TRAIN_PROCESSORS: dict[str, Callable[..., Callable]] = {
    "blip2_image_train": blip2_image_train,
    "blip_image_train": blip_image_train,
}


def image_processor(name: str, spec: ImageSpec | int, *, train: bool, min_scale: float = 0.5,
                    max_scale: float = 1.0) -> Callable:
    """The transform of a dataset split: ``name`` for training, the encoder's eval transform otherwise."""
    if not train:
        return blip_image_eval(spec)
    return TRAIN_PROCESSORS[name](spec, min_scale, max_scale)
