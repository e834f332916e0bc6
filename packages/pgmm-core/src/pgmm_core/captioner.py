"""Captioning images with a trained run: ``Captioner.from_run(run_dir).caption(images)``."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from pgmm_core.config.sections import GenerationSection
from pgmm_core.errors import DataError
from pgmm_core.preprocessing import ImageSpec, encoder_image_spec, eval_transform

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def expand_image_paths(items: Iterable[str | Path]) -> list[Path]:
    """Files as given; directories replaced by their image files (sorted, not recursive)."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            paths.append(path)
    return paths


def load_rgb(path: Path, max_pixels: int | None = None) -> Any:
    """Decode an image the way the datasets do (grayscale, CMYK, RGBA and 16-bit images converted to
    8-bit RGB; decompression bombs refused), or raise :class:`DataError`."""
    from pgmm_core.images import DEFAULT_MAX_IMAGE_PIXELS, BadImage, open_rgb

    try:
        return open_rgb(str(path), max_pixels or DEFAULT_MAX_IMAGE_PIXELS)
    except BadImage as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


class Captioner:
    """A model plus the preprocessing, device and precision it runs with.

    ``image_spec`` is the preprocessing images get (default: the model's vision encoder's); from a
    run it is the one the run trained with (:func:`pgmm_core.preprocessing.run_image_spec`).
    """

    def __init__(self, model: Any, *, device: torch.device, policy: Any, image_spec: ImageSpec | None = None,
                 generation: GenerationSection | None = None) -> None:
        self.model = model.eval()
        self.device = device
        self.policy = policy
        self.image_spec = image_spec or encoder_image_spec(model.vision)
        self.image_size = self.image_spec.size
        self.generation = generation or GenerationSection()
        self.transform = eval_transform(self.image_spec)
        self.run: Any = None  # the LoadedRun, when made by from_run

    @classmethod
    def from_run(cls, run_dir: str | Path, *, checkpoint: str = "best", overrides: Sequence[str] = (),
                 host: Any | None = None) -> Captioner:
        """Load ``run_dir``'s model (``checkpoint``: best, last or a path) on its configured device.

        ``overrides`` are config ``key=value`` pairs, e.g. ``model.llm.path=/data/pangu`` for a run
        trained on another machine, or ``device.type=cpu``.
        """
        from pgmm_core.devices.select import select_device_backend
        from pgmm_core.preprocessing import run_image_spec
        from pgmm_core.runs import load_run

        run = load_run(run_dir, checkpoint=checkpoint, overrides=list(overrides), host=host)  # policy applied
        backend = select_device_backend(run.config.device, run.config.host)
        device = backend.setup(0)
        policy = backend.precision_policy()
        run.model.to(device)
        spec = run_image_spec(run.run_dir, run.config, run.model.vision)
        logger.debug("captioning with %s on %s", spec, device)
        captioner = cls(run.model, device=device, policy=policy, image_spec=spec,
                        generation=run.config.eval.generation)
        captioner.run = run
        return captioner

    def pixel_values(self, images: Sequence[Any]) -> torch.Tensor:
        """Paths and PIL images are preprocessed; uint8 tensors (C×H×W) are treated as images;
        float tensors as already preprocessed pixel values (C×H×W at the model's size)."""
        from PIL import Image

        rows = []
        for image in images:
            if isinstance(image, (str, Path)):
                rows.append(self.transform(load_rgb(Path(image))))
            elif isinstance(image, Image.Image):
                rows.append(self.transform(image.convert("RGB")))
            elif isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
                from torchvision.transforms.functional import to_pil_image

                rows.append(self.transform(to_pil_image(image)))
            elif isinstance(image, torch.Tensor):
                if image.shape[-2:] != (self.image_size, self.image_size):
                    raise DataError(f"pixel tensor of shape {tuple(image.shape)} is not "
                                    f"3x{self.image_size}x{self.image_size}")
                rows.append(image.float())
            else:
                raise TypeError(f"cannot caption a {type(image).__name__}: give a path, a PIL image or a tensor")
        return torch.stack(rows)

    @torch.no_grad()
    def caption(self, images: Any, *, batch_size: int = 8, prompt: str | None = None,
                **generation: Any) -> list[str]:
        """One caption per image (``num_return_sequences`` per image if set). ``generation`` overrides
        the run's ``eval.generation`` settings (num_beams, max_new_tokens, do_sample, top_p, …)."""
        if not isinstance(images, (list, tuple)):
            images = list(images) if isinstance(images, torch.Tensor) and images.dim() == 4 else [images]
        settings = self.generation.model_copy(update=generation) if generation else self.generation
        settings = _validated_generation(settings.model_dump())
        captions: list[str] = []
        for start in range(0, len(images), batch_size):
            pixels = self.pixel_values(images[start : start + batch_size]).to(self.device)
            with self.policy.autocast():
                captions.extend(self.model.generate(pixels, prompt=prompt, generation=settings))
        return captions


def _validated_generation(settings: dict[str, Any]) -> GenerationSection:
    """Generation settings checked like a config section: a bad value is a :class:`ConfigError`."""
    from pydantic import ValidationError

    from pgmm_core.errors import ConfigError

    try:
        return GenerationSection.model_validate(settings)
    except ValidationError as exc:
        problems = [f"generation {'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']} "
                    f"(got {e.get('input')!r})" if e["loc"] else f"generation settings: {e['msg']}"
                    for e in exc.errors(include_url=False)]
        raise ConfigError(problems) from None
