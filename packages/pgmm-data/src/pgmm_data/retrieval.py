"""Image-text retrieval test sets (``coco_retrieval``, ``flickr30k_retrieval``): LAVIS' files and layout.

Both read the same structure — a JSON list of ``{"image": relative path, "caption": [str, ...]}``,
one entry per image (COCO Karpathy ``coco_karpathy_test.json``, LAVIS ``flickr30k_test.json``) — and
differ only in where the files are by default (:mod:`pgmm_data.configs`), so they share this code;
two component names say which LAVIS download a config expects and let ``validate`` check the
right default paths.

``split="val"``/``"test"`` serve a :class:`RetrievalEvalSet`: one item per image, as LAVIS'
``RetrievalEvalDataset``, plus the retrieval tables of the whole set: ``texts`` (every caption
through ``blip_caption``, in file order: image 0's captions, then image 1's, ...), ``txt2img`` (text
-> image index) and ``img2txt`` (image -> its text indices). ``split="train"`` serves one sample per
caption, as ``coco_caption`` does (LAVIS' retrieval fine-tuning reads the train files that way).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from pgmm_core.images import BadImage, open_rgb
from pgmm_core.preprocessing import ImageSpec
from pgmm_data.annotations import Annotations, StringTable, check_images_exist, load_coco_karpathy
from pgmm_data.datasets import CaptionEvalSet, CaptionTrainSet, image_root_of
from pgmm_data.processors import blip_caption, dataset_image_spec, image_processor


class RetrievalEvalSet(CaptionEvalSet):
    """One item per image, ``{"image", "image_id": int, "index": int, "references": [captions]}``, and
    the retrieval tables.

    ``index`` is the image's position (LAVIS' image index: what ``txt2img`` points at); an unreadable
    image comes back as ``{"bad": "path: reason", "index": i}`` so that an evaluation can leave the
    image and its captions out. ``references`` are the image's captions as written (what the caption
    objective scores against); ``texts`` holds them processed as LAVIS' retrieval evaluation does.
    """

    def __init__(self, annotations: Annotations, *, name: str, transform: Callable, max_pixels: int,
                 max_words: int, max_samples: int | None = None) -> None:
        super().__init__(annotations, annotations.grouped_captions(), name=name, transform=transform,
                         max_pixels=max_pixels, max_samples=max_samples)
        self.max_words = max_words
        self.text_offsets = self.offsets[: self._length + 1].copy()
        end = int(self.text_offsets[-1])
        self.texts = StringTable([blip_caption(self.references[j], max_words) for j in range(end)])
        self.txt2img = np.repeat(np.arange(self._length, dtype=np.int64), np.diff(self.text_offsets))
        self.image_ids = annotations.eval_ids[: self._length].copy()

    @property
    def img2txt(self) -> list[list[int]]:
        """For each image, the indices of its texts (built on each call: read it once)."""
        return [list(range(int(a), int(b))) for a, b in zip(self.text_offsets[:-1], self.text_offsets[1:])]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self._length:
            raise IndexError(index)
        path = self.annotations.images[index]
        try:
            image = open_rgb(path, self.max_pixels)
        except BadImage as exc:
            return {"bad": f"{path}: {exc}", "index": index}
        return {"image": self.transform(image), "image_id": int(self.image_ids[index]), "index": index,
                "references": self.references_of(index)}


def build_retrieval(config: Any, *, split: str, image_spec: ImageSpec | None = None,
                    image_size: int | None = None) -> CaptionTrainSet | RetrievalEvalSet:
    """The factory of both retrieval components (their configs name the default files)."""
    image_spec = dataset_image_spec(image_spec, image_size)
    root = Path(config.root).expanduser()
    annotations = load_coco_karpathy(config.annotation_path(split), image_root_of(root, config.image_root),
                                     f"{config.title} annotation file")
    check_images_exist(annotations, f"set 'root' (or 'image_root') to the folder the annotation's image paths "
                       f"are relative to (e.g. {annotations.images[0]})")
    train = split == "train"
    transform = image_processor(config.image_processor, image_spec, train=train,
                                min_scale=config.min_scale, max_scale=config.max_scale)
    name = f"{config.type}[{split}]"
    if train:
        return CaptionTrainSet(annotations, name=name, transform=transform, max_words=config.max_words,
                               max_pixels=config.max_image_pixels, max_samples=config.max_samples)
    return RetrievalEvalSet(annotations, name=name, transform=transform, max_pixels=config.max_image_pixels,
                            max_words=config.max_words, max_samples=config.max_samples)
