"""``image_folder_captions``: your own photos and captions, without converting them to COCO's layout.

Items follow the format every pgmm dataset returns (see the dataset contract): train items carry one
caption and a string id, eval items all references and an int id; an image that cannot be read
becomes ``{"bad": "path: reason"}``, which the trainer drops and counts instead of stopping.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pgmm_core.errors import DataError
from pgmm_core.preprocessing import ImageSpec
from pgmm_data.processors import blip2_image_train, blip_caption, blip_image_eval, dataset_image_spec


def read_captions(root: Path, captions_file: str) -> list[tuple[str, list[str]]]:
    """``(relative image path, captions)`` pairs, sorted by path, from the captions JSON file."""
    path = root / captions_file
    if not root.is_dir():
        raise DataError(f"image_folder_captions: root folder not found: {root}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"image_folder_captions: {path} not found; write a JSON object mapping each image "
                        'file to its captions, e.g. {"beach.jpg": ["a dog on a beach"]}') from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a non-empty JSON object mapping image files to captions")
    entries = []
    for image, captions in sorted(data.items()):
        captions = [captions] if isinstance(captions, str) else captions
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) and c.strip()
                                                                     for c in captions):
            raise DataError(f"{path}: '{image}' needs a caption string or a non-empty list of them")
        entries.append((image, captions))
    return entries


class ImageFolderCaptions:
    """The dataset object. Picklable (no lambdas), so DataLoader workers can receive it."""

    def __init__(self, config: Any, *, split: str, image_spec: ImageSpec) -> None:
        self.root = Path(config.root).expanduser()
        self.split = split
        self.name = f"image_folder_captions[{split}]"
        self.max_words = config.max_words
        self.entries = read_captions(self.root, config.captions_file)
        training = split == "train"
        # the vision encoder's preprocessing (size, mean/std, interpolation); augmenting is our choice
        self.transform = blip2_image_train(image_spec) if training and config.augment else blip_image_eval(image_spec)
        # Training: one sample per caption. Evaluation: one sample per image.
        self.samples = [(i, c) for i, (_, captions) in enumerate(self.entries) for c in captions] if training \
            else [(i, None) for i in range(len(self.entries))]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.samples):
            raise IndexError(index)
        from PIL import Image

        entry, caption = self.samples[index]
        image_path, captions = self.entries[entry]
        try:
            with Image.open(self.root / image_path) as image:
                pixels = self.transform(image.convert("RGB"))
        except OSError as exc:  # missing, truncated or not an image at all
            return {"bad": f"{self.root / image_path}: {exc}"}
        if caption is not None:
            return {"image": pixels, "caption": blip_caption(caption, self.max_words),
                    "image_id": Path(image_path).stem}
        return {"image": pixels, "image_id": entry,
                "references": [blip_caption(c, self.max_words) for c in captions]}


def build_image_folder_captions(config: Any, *, split: str, image_spec: ImageSpec | None = None,
                                image_size: int | None = None) -> ImageFolderCaptions:
    """``image_spec`` is the vision encoder's preprocessing; ``image_size`` alone (callers from before
    specs existed) means LAVIS' CLIP preprocessing at that size."""
    return ImageFolderCaptions(config, split=split, image_spec=dataset_image_spec(image_spec, image_size))
