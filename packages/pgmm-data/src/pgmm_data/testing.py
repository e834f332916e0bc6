"""Small data trees in the real on-disk layouts, made from real photographs (for tests and benchmarks).

The photographs are scikit-image's bundled samples (``skimage.data``: astronaut, chelsea, coffee,
…; no download), resized and saved as JPEG. The trees follow LAVIS exactly: Karpathy JSON files and
COCO-format ground truth for COCO, LAVIS' Flickr30k retrieval files, ``vg_caption.json`` with
absolute paths from another machine and images split over ``VG_100K``/``VG_100K_2`` for Visual
Genome. Broken files can be planted on purpose: ``broken={index: "missing" | "truncated" | "corrupt"}``.

Needs ``scikit-image`` (``pip install pgmm-data[test]``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# (skimage.data name, what it shows); grayscale ones stay grayscale JPEGs, as some COCO images are.
PHOTOS: tuple[tuple[str, str], ...] = (
    ("astronaut", "an astronaut in a white suit standing next to a flag"),
    ("chelsea", "a tabby cat looking to the side"),
    ("coffee", "a cup of coffee on a saucer"),
    ("rocket", "a rocket standing on a launch pad"),
    ("camera", "a man standing behind a camera on a tripod"),
    ("hubble_deep_field", "many small galaxies in deep space"),
    ("immunohistochemistry", "a stained tissue sample seen through a microscope"),
    ("coins", "rows of old coins on a dark background"),
    ("retina", "a photograph of the back of an eye"),
    ("moon", "the cratered surface of the moon"),
)
_TEMPLATES = ("{}.", "A photo of {}.", "There is {} in this picture", "{}, seen up close!", "  {}  (again)")
ORIGIN_PREFIX = "/export/share/datasets/vision/visual-genome/image"  # paths as written on another machine


def photo(index: int, size: tuple[int, int] = (640, 480)) -> Any:
    """Photograph ``index`` (cycling through :data:`PHOTOS`) resized to ``size`` (width, height)."""
    try:
        import skimage.data  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("pgmm_data.testing needs scikit-image: pip install scikit-image") from exc
    from PIL import Image

    return _source(PHOTOS[index % len(PHOTOS)][0]).resize(size, Image.Resampling.BICUBIC)


@functools.lru_cache(maxsize=None)
def _source(name: str) -> Any:
    import skimage.data
    from PIL import Image

    image = Image.fromarray(getattr(skimage.data, name)())
    return image if image.mode in ("RGB", "L") else image.convert("RGB")


def captions_for(index: int, count: int = 5) -> list[str]:
    """``count`` differently written captions of photo ``index``."""
    subject = PHOTOS[index % len(PHOTOS)][1]
    return [_TEMPLATES[i % len(_TEMPLATES)].format(subject if i else subject.capitalize()) for i in range(count)]


def write_image(path: Path, index: int, size: tuple[int, int], broken: str | None = None) -> None:
    """Save photo ``index`` as a JPEG at ``path``, or plant a broken file of the given kind."""
    import io

    path.parent.mkdir(parents=True, exist_ok=True)
    if broken == "missing":
        return
    buffer = io.BytesIO()
    photo(index, size).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    if broken == "truncated":
        data = data[: len(data) // 2]
    elif broken == "corrupt":
        data = b"this is not a JPEG file " * 20
    elif broken is not None:
        raise ValueError(f"unknown broken kind {broken!r}")
    path.write_bytes(data)


@dataclass
class Tree:
    root: Path
    annotation_files: dict[str, Path] = field(default_factory=dict)
    images: dict[str, list[Path]] = field(default_factory=dict)
    broken: dict[str, dict[int, str]] = field(default_factory=dict)


def write_coco_tree(root: str | Path, *, train: int = 10, val: int = 4, test: int = 4, size: tuple[int, int] = (64, 48),
                    captions_per_image: int = 5, ground_truth: bool = True,
                    broken: Mapping[int, str] | None = None) -> Tree:
    """``root/annotations/coco_karpathy_{train,val,test}.json`` (+ ``_gt.json`` for val/test) and
    ``root/images/{train2014,val2014}/COCO_*.jpg``. ``broken`` indexes the train images."""
    root = Path(root)
    tree = Tree(root, broken={"train": dict(broken or {})})
    annotations = root / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    tree.images["train"] = []
    for i in range(train):
        image_id = 1000 + i
        relative = f"train2014/COCO_train2014_{image_id:012d}.jpg"
        write_image(root / "images" / relative, i, size, tree.broken["train"].get(i))
        tree.images["train"].append(root / "images" / relative)
        entries += [{"caption": c, "image": relative, "image_id": f"coco_{image_id}"}
                    for c in captions_for(i, captions_per_image)]
    _write_json(annotations / "coco_karpathy_train.json", entries)
    tree.annotation_files["train"] = annotations / "coco_karpathy_train.json"
    first_id = 5000
    for split, count in (("val", val), ("test", test)):
        split_entries, gt_annotations, gt_images = [], [], []
        tree.images[split] = []
        for i in range(count):
            image_id = first_id + i
            relative = f"val2014/COCO_val2014_{image_id:012d}.jpg"
            write_image(root / "images" / relative, image_id, size)
            tree.images[split].append(root / "images" / relative)
            caps = captions_for(image_id, captions_per_image)
            split_entries.append({"image": relative, "caption": caps})
            gt_images.append({"id": image_id})
            gt_annotations += [{"image_id": image_id, "caption": c, "id": len(gt_annotations) + k}
                               for k, c in enumerate(caps)]
        first_id += count
        _write_json(annotations / f"coco_karpathy_{split}.json", split_entries)
        tree.annotation_files[split] = annotations / f"coco_karpathy_{split}.json"
        if ground_truth:
            gt = {"annotations": gt_annotations, "images": gt_images, "type": "captions", "info": {}, "licenses": []}
            _write_json(annotations / f"coco_karpathy_{split}_gt.json", gt)
            tree.annotation_files[f"{split}_gt"] = annotations / f"coco_karpathy_{split}_gt.json"
    return tree


def write_vg_tree(root: str | Path, *, images: int = 8, regions_per_image: int = 3, size: tuple[int, int] = (64, 48),
                  broken: Mapping[int, str] | None = None) -> Tree:
    """``root/annotations/vg_caption.json`` whose paths point at another machine
    (:data:`ORIGIN_PREFIX`), and the images spread over ``root/images/VG_100K{,_2}/<id>.jpg``."""
    root = Path(root)
    tree = Tree(root, broken={"train": dict(broken or {})})
    entries = []
    tree.images["train"] = []
    for i in range(images):
        image_id = 1 + i
        folder = "VG_100K" if i % 2 == 0 else "VG_100K_2"
        path = root / "images" / folder / f"{image_id}.jpg"
        write_image(path, i + 3, size, tree.broken["train"].get(i))
        tree.images["train"].append(path)
        subject = PHOTOS[(i + 3) % len(PHOTOS)][1]
        regions = [subject, f"part of {subject}", f"the left side of {subject}", f"{subject} in the middle"]
        entries += [{"image": f"{ORIGIN_PREFIX}/{image_id}.jpg", "caption": regions[k % len(regions)],
                     "image_id": f"vg_{image_id}"} for k in range(regions_per_image)]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    _write_json(root / "annotations" / "vg_caption.json", entries)
    tree.annotation_files["train"] = root / "annotations" / "vg_caption.json"
    return tree


def write_flickr30k_tree(root: str | Path, *, train: int = 4, val: int = 3, test: int = 3, size: tuple[int, int] = (64, 48),
                         captions_per_image: int = 5, broken: Mapping[int, str] | None = None) -> Tree:
    """LAVIS' Flickr30k retrieval files: ``root/annotations/flickr30k_{train,val,test}.json`` (train: one
    entry per caption; val/test: ``{"image", "caption": [..]}`` per image) and the photos in
    ``root/images/flickr30k-images/<id>.jpg``. ``broken`` indexes the test images."""
    root = Path(root)
    tree = Tree(root, broken={"test": dict(broken or {})})
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    first_id = 1000092795
    for split, count in (("train", train), ("val", val), ("test", test)):
        entries: list[dict[str, Any]] = []
        tree.images[split] = []
        for i in range(count):
            image_id = first_id + 7 * i
            relative = f"flickr30k-images/{image_id}.jpg"
            write_image(root / "images" / relative, image_id, size, tree.broken.get(split, {}).get(i))
            tree.images[split].append(root / "images" / relative)
            caps = captions_for(image_id, captions_per_image)
            if split == "train":
                entries += [{"image": relative, "caption": c, "image_id": str(image_id)} for c in caps]
            else:
                entries.append({"image": relative, "caption": caps})
        first_id += 7 * count
        _write_json(root / "annotations" / f"flickr30k_{split}.json", entries)
        tree.annotation_files[split] = root / "annotations" / f"flickr30k_{split}.json"
    return tree


def write_jsonl_tree(root: str | Path, *, images: int = 6, size: tuple[int, int] = (64, 48)) -> Tree:
    """``root/captions.jsonl`` with relative paths into ``root/photos/``, alternating one caption
    and a list of captions per line."""
    root = Path(root)
    tree = Tree(root)
    lines = []
    tree.images["train"] = []
    for i in range(images):
        relative = f"photos/img_{i:03d}.jpg"
        write_image(root / relative, i, size)
        tree.images["train"].append(root / relative)
        caps = captions_for(i, 2)
        lines.append(json.dumps({"image": relative, "caption": caps[0] if i % 2 == 0 else caps}))
    root.mkdir(parents=True, exist_ok=True)
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tree.annotation_files["train"] = root / "captions.jsonl"
    return tree


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
