"""``synthetic_shapes``: procedural image–caption pairs that need no files and can be learned fast.

Each image shows one shape of one colour in one of five places on a light, slightly noisy
background; the caption names all three ("a red circle in the top left"). Everything is a pure
function of ``(seed, split, index)``, so runs and resumes are reproducible on any machine.
"""

from __future__ import annotations

import math
import random
from typing import Any

from pgmm_core.preprocessing import ImageSpec
from pgmm_data.processors import blip_caption

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (140, 60, 180),
    "orange": (240, 130, 20),
}
SHAPES = ("circle", "square", "triangle", "star")
PLACES = {
    "top left": (0.27, 0.27),
    "top right": (0.73, 0.27),
    "bottom left": (0.27, 0.73),
    "bottom right": (0.73, 0.73),
    "center": (0.5, 0.5),
}


def describe(colour: str, shape: str, place: str) -> list[str]:
    """Reference captions; the first is the one used for training."""
    return [f"a {colour} {shape} in the {place}", f"a {colour} {shape} at the {place}"]


def _polygon(shape: str, cx: float, cy: float, r: float, turn: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = 4
        return [(cx + r * math.cos(turn + math.pi / 4 + i * math.pi / 2),
                 cy + r * math.sin(turn + math.pi / 4 + i * math.pi / 2)) for i in range(corners)]
    if shape == "triangle":
        return [(cx + r * math.cos(turn - math.pi / 2 + i * 2 * math.pi / 3),
                 cy + r * math.sin(turn - math.pi / 2 + i * 2 * math.pi / 3)) for i in range(3)]
    points = []  # star
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.45
        angle = turn - math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def _pick(rng: random.Random) -> tuple[str, str, str]:
    return rng.choice(sorted(COLOURS)), rng.choice(SHAPES), rng.choice(sorted(PLACES))


def labels(seed: int, split: str, index: int) -> tuple[str, str, str]:
    """A sample's (colour, shape, place), as :func:`render` draws it, without drawing the image."""
    return _pick(random.Random(f"synthetic_shapes:{seed}:{split}:{index}"))


def render(seed: int, split: str, index: int, size: int) -> tuple[Any, tuple[str, str, str]]:
    """The PIL image and its (colour, shape, place) for one sample."""
    from PIL import Image, ImageDraw

    rng = random.Random(f"synthetic_shapes:{seed}:{split}:{index}")
    colour, shape, place = _pick(rng)
    shade = rng.randint(200, 245)
    image = Image.new("RGB", (size, size), (shade, shade, shade))
    draw = ImageDraw.Draw(image)
    for _ in range(size // 4):  # speckle noise so that the background is not constant
        x, y = rng.randrange(size), rng.randrange(size)
        v = shade + rng.randint(-25, 10)
        draw.point((x, y), fill=(v, v, v))
    fx, fy = PLACES[place]
    cx = (fx + rng.uniform(-0.05, 0.05)) * size
    cy = (fy + rng.uniform(-0.05, 0.05)) * size
    r = rng.uniform(0.13, 0.19) * size
    fill = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in COLOURS[colour])
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, rng.uniform(-0.2, 0.2)), fill=fill)
    return image, (colour, shape, place)


class SyntheticShapes:
    """The dataset object: train items carry one caption, eval items all references and their index.

    An eval split is also a retrieval test set (as ``coco_retrieval``'s): ``texts`` (every image's
    references in order), ``txt2img`` and ``img2txt``, so the tiny stage-1 demo evaluates zero-shot
    retrieval on it.
    """

    def __init__(self, config: Any, *, split: str, image_spec: ImageSpec | None = None,
                 image_size: int | None = None) -> None:
        from pgmm_data.processors import blip_image_eval, dataset_image_spec

        self.config = config
        self.split = split
        self.name = f"synthetic_shapes[{split}]"
        self.image_spec = dataset_image_spec(image_spec, image_size)
        self.image_size = self.image_spec.size
        self.transform = blip_image_eval(self.image_spec)
        self._length = min(config.num_samples, config.max_samples or config.num_samples)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self._length:
            raise IndexError(index)
        image, (colour, shape, place) = render(self.config.seed, self.split, index, self.image_size)
        pixels = self.transform(image)
        references = [blip_caption(c, max_words=self.config.max_words) for c in describe(colour, shape, place)]
        if self.split == "train":
            return {"image": pixels, "caption": references[0], "image_id": f"shapes_{index}"}
        return {"image": pixels, "image_id": index, "index": index, "references": references}

    def _references(self, index: int) -> list[str]:
        return [blip_caption(c, max_words=self.config.max_words)
                for c in describe(*labels(self.config.seed, self.split, index))]

    @property
    def texts(self) -> list[str]:
        """Every image's references, image 0's first (the retrieval queries and candidates)."""
        return [text for index in range(self._length) for text in self._references(index)]

    @property
    def txt2img(self) -> Any:
        import numpy as np

        counts = [len(self._references(index)) for index in range(self._length)]
        return np.repeat(np.arange(self._length, dtype=np.int64), counts)

    @property
    def img2txt(self) -> list[list[int]]:
        out, start = [], 0
        for index in range(self._length):
            count = len(self._references(index))
            out.append(list(range(start, start + count)))
            start += count
        return out


def build_synthetic_shapes(config: Any, *, split: str, image_spec: ImageSpec | None = None,
                           image_size: int | None = None) -> SyntheticShapes:
    return SyntheticShapes(config, split=split, image_spec=image_spec, image_size=image_size)
