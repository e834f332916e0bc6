"""Image preprocessing as data: what a vision encoder expects its pixels to look like.

A vision tower was trained on images resized, interpolated and normalised one particular way; fed
anything else it still runs, silently worse. So the encoder declares it: every encoder exposes an
:class:`ImageSpec`, every vision config model can give the same spec without building the tower
(``config.image_spec()``), datasets receive it (``image_spec=``), and each run records it in
``image_spec.json`` so that captioning, evaluation and reports preprocess as training did.

The spec holds facts about the model only (size, mean/std, interpolation, eval crop). Augmentation
is a recipe choice and stays in the dataset config. User overrides beat the encoder's values, which
beat the defaults — timm's rule (:func:`resolve_image_spec`).

Importing this module never imports torch: config models call it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)

# OpenAI CLIP's statistics: EVA-CLIP and the BLIP-2 towers were trained with them (LAVIS processors).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# ImageNet's, which most timm backbones were trained with (timm.data.IMAGENET_DEFAULT_MEAN/STD).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# PIL resampling filters by name, as timm and torchvision spell them.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
IMAGE_SPEC_FILE = "image_spec.json"


@dataclass(frozen=True)
class ImageSpec:
    """How pixels must be prepared for one vision encoder; JSON-native, hashable, comparable.

    * ``size``: square input side in pixels;
    * ``mean``/``std``: per-channel (RGB) normalisation of ``[0, 1]`` pixels;
    * ``interpolation``: resampling filter for resizing (one of :data:`INTERPOLATIONS`);
    * ``crop_pct``: evaluation crop: the image is resized to ``size / crop_pct`` and its centre
      ``size`` pixels kept (timm's ``crop_pct``); ``1.0`` resizes straight to ``size`` (LAVIS).
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0:
            raise ValueError(f"image spec size must be a positive int, got {self.size!r}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if isinstance(values, (str, bytes)) or len(values) != 3:
                raise ValueError(f"image spec {name} needs 3 values (R, G, B), got {values!r}")
            object.__setattr__(self, name, tuple(float(v) for v in values))
        if any(s <= 0 for s in self.std):
            raise ValueError(f"image spec std must be positive, got {self.std}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"image spec interpolation {self.interpolation!r} is not one of "
                             f"{', '.join(INTERPOLATIONS)}")
        crop_pct = float(self.crop_pct)
        if not 0 < crop_pct <= 1:
            raise ValueError(f"image spec crop_pct must be in (0, 1], got {self.crop_pct!r}")
        object.__setattr__(self, "crop_pct", crop_pct)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"image spec has unknown field(s) {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ImageSpec:
        return cls.from_dict(json.loads(text))


def clip_spec(size: int) -> ImageSpec:
    """LAVIS' preprocessing for CLIP-trained towers (EVA-ViT-g): CLIP mean/std, bicubic, no crop."""
    return ImageSpec(size=size, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic", crop_pct=1.0)


def resolve_image_spec(model_spec: ImageSpec, *, size: int | None = None, mean: Any = None, std: Any = None,
                       interpolation: str | None = None, crop_pct: float | None = None) -> ImageSpec:
    """The encoder's spec with the user's overrides applied: a value given (not None) wins."""
    given = {"size": size, "mean": mean, "std": std, "interpolation": interpolation, "crop_pct": crop_pct}
    return replace(model_spec, **{k: v for k, v in given.items() if v is not None})


# --- the spec of an encoder, of a config, of a run --------------------------------------------------------


def encoder_image_spec(encoder: Any) -> ImageSpec:
    """``encoder.image_spec``; an encoder written before specs existed gets what every encoder got
    then (CLIP statistics at its ``image_size``), with a warning."""
    spec = getattr(encoder, "image_spec", None)
    if isinstance(spec, ImageSpec):
        return spec
    logger.warning("vision encoder %s declares no image_spec; using CLIP mean/std and bicubic resizing at %s px",
                   type(encoder).__name__, encoder.image_size)
    return clip_spec(int(encoder.image_size))


def config_image_spec(vision_config: Any, host: Any | None = None) -> ImageSpec:
    """The spec of the encoder ``vision_config`` describes, cheaply: the config model's own
    ``image_spec()`` (no weights, no tower). A config model without one costs building the tower."""
    method = getattr(vision_config, "image_spec", None)
    if callable(method):
        spec = method()
        if not isinstance(spec, ImageSpec):
            raise TypeError(f"{type(vision_config).__name__}.image_spec() returned {type(spec).__name__}, "
                            "not an ImageSpec")
        return spec
    if host is None:
        raise TypeError(f"{type(vision_config).__name__} has no image_spec() and no plugin host was given "
                        "to build the encoder")
    logger.info("%s has no image_spec(); building the vision encoder to learn its preprocessing",
                type(vision_config).__name__)
    return encoder_image_spec(host.build("vision", vision_config))


def run_image_spec(run_dir: str | Path, config: Any, encoder: Any = None) -> ImageSpec:
    """The spec a run trained with: its ``image_spec.json``; for runs older than that file, the
    built ``encoder``'s, else resolved from the run's config.

    The recorded spec wins over the encoder as configured now (timm's defaults may have changed since),
    except when the sizes differ (an override changed the tower): the encoder then needs its own.
    """
    path = Path(run_dir) / IMAGE_SPEC_FILE
    current = encoder_image_spec(encoder) if encoder is not None else None
    if not path.is_file():
        return current or config_image_spec(config.model.vision, getattr(config, "host", None))
    recorded = ImageSpec.from_json(path.read_text(encoding="utf-8"))
    if current is None or current == recorded:
        return recorded
    if current.size != recorded.size:
        logger.warning("the run trained at %s px, its vision encoder is now configured for %s px: using the "
                       "encoder's preprocessing %s", recorded.size, current.size, current)
        return current
    logger.warning("the run trained with preprocessing %s, its vision encoder now declares %s: using the "
                   "run's", recorded, current)
    return recorded


# --- transforms -----------------------------------------------------------------------------------------


def interpolation_mode(name: str) -> Any:
    """torchvision's ``InterpolationMode`` for a spec's interpolation name."""
    from torchvision.transforms import InterpolationMode

    return InterpolationMode(name)


class ToNormalizedTensor:
    """``Normalize(mean, std)(ToTensor()(image))`` for 8-bit RGB PIL images, bit for bit.

    Same operations as torchvision (uint8 -> float32, / 255, - mean, / std, each rounded to float32),
    done in place in one CHW buffer instead of through successive temporaries (about 1.5x faster).
    """

    def __init__(self, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD) -> None:
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, image: Any) -> Any:
        import numpy as np
        import torch

        if getattr(image, "mode", None) != "RGB":
            raise ValueError(f"expected an RGB PIL image, got {getattr(image, 'mode', type(image).__name__)}")
        pixels = torch.from_numpy(np.array(image))  # H×W×3 uint8 (a writable copy: from_numpy wants one)
        out = torch.empty((3, pixels.shape[0], pixels.shape[1]), dtype=torch.float32)
        out.copy_(pixels.permute(2, 0, 1))
        out.div_(255)
        mean = torch.as_tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return out.sub_(mean).div_(std)

    def __repr__(self) -> str:
        return f"ToNormalizedTensor(mean={self.mean}, std={self.std})"


def normalize(spec: ImageSpec) -> ToNormalizedTensor:
    """ToTensor + Normalize with the spec's statistics (the last step of every image transform)."""
    return ToNormalizedTensor(spec.mean, spec.std)


def eval_transform(spec: ImageSpec) -> Callable:
    """The evaluation transform of a spec: PIL RGB image in, ``3×size×size`` float32 tensor out.

    ``crop_pct == 1``: ``Resize((size, size))`` + ToTensor + Normalize — LAVIS ``blip_image_eval``
    exactly for a CLIP spec. ``crop_pct < 1``: resized to ``floor(size / crop_pct)`` square, then the
    centre ``size`` pixels kept (timm's eval crop, with the aspect ratio handled as LAVIS does).
    """
    from torchvision import transforms

    mode = interpolation_mode(spec.interpolation)
    if spec.crop_pct >= 1:
        steps = [transforms.Resize((spec.size, spec.size), interpolation=mode)]
    else:
        scaled = math.floor(spec.size / spec.crop_pct)
        steps = [transforms.Resize((scaled, scaled), interpolation=mode), transforms.CenterCrop(spec.size)]
    return transforms.Compose([*steps, normalize(spec)])


def denormalize(pixels: Any, spec: ImageSpec) -> Any:
    """Preprocessed pixels (3×H×W) back to ``[0, 1]`` RGB, e.g. to show them."""
    import torch

    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    return (pixels.float().cpu() * std + mean).clamp(0, 1)
