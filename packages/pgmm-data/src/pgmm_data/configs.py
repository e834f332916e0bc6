"""Config models of pgmm-data's datasets (pydantic only: importing this never imports torch).

Paths are plain strings and are not checked by validation itself, so a config can be validated on a
machine that does not hold the data (``validate --no-files``); ``required_paths`` tells ``validate``
which files and folders the run will open. Files are read (and problems reported with file and
position) when a dataset is built, before the first training step.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pgmm_core.config.files import RequiredPath
from pgmm_core.config.sections import ComponentConfig
from pgmm_core.images import DEFAULT_MAX_IMAGE_PIXELS
from pydantic import Field, model_validator


def under(root: Path, value: str | None) -> Path | None:
    """A configured path; relative ones are relative to the dataset root."""
    return None if value is None else root / Path(value).expanduser()


class CaptionDatasetConfig(ComponentConfig):
    """Fields shared by caption datasets."""

    max_words: int = Field(50, gt=0, description="blip_caption: keep at most this many words.")
    max_samples: int | None = Field(
        None, gt=0, description="Use only the first N samples (train: captions; val/test: images)."
    )


class ImageFilesConfig(ComponentConfig):
    """Fields of every dataset that reads image files (caption, VQA and conversation datasets)."""

    image_processor: Literal["blip2_image_train", "blip_image_train"] = Field(
        "blip2_image_train",
        description="Train-time image processor (LAVIS names); val/test always use blip_image_eval.",
    )
    min_scale: float = Field(0.5, gt=0, le=1, description="RandomResizedCrop smallest area fraction.")
    max_scale: float = Field(1.0, gt=0, le=1, description="RandomResizedCrop largest area fraction.")
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS, gt=0,
        description="Refuse images with more pixels than this (decompression bombs); they count as bad.",
    )
    image_root: str | None = Field(
        None, description="Directory the annotation's image paths are relative to (default per dataset)."
    )

    @model_validator(mode="after")
    def _check_scales(self) -> ImageFilesConfig:
        if self.min_scale > self.max_scale:
            raise ValueError(f"min_scale {self.min_scale} is larger than max_scale {self.max_scale}")
        return self

    def _image_root_paths(self, base: Path) -> list[RequiredPath]:
        configured = under(base, self.image_root)
        return [RequiredPath(configured, "directory", "", "image_root")] if configured else []


class ImageCaptionConfig(ImageFilesConfig, CaptionDatasetConfig):
    """Fields of caption datasets that read image files."""


class CocoCaptionConfig(ImageCaptionConfig):
    """COCO captions with the Karpathy splits, in LAVIS' layout under ``root``::

        root/annotations/coco_karpathy_{train,val,test}.json
        root/annotations/coco_karpathy_{val,test}_gt.json     (optional: built from the Karpathy file)
        root/images/train2014/COCO_train2014_….jpg            (image_root: root/images, else root)
        root/images/val2014/COCO_val2014_….jpg
    """

    type: Literal["coco_caption"] = "coco_caption"
    root: str = Field(..., min_length=1, description="The COCO directory (LAVIS: cache/coco).")
    split: Literal["train", "val", "test"] | None = Field(
        None, description="Karpathy split to read; default: the list it is in (data.train -> train, ...)."
    )
    annotation: str | None = Field(
        None, description="Karpathy JSON file; default root/annotations/coco_karpathy_<split>.json."
    )
    ground_truth: str | None = Field(
        None,
        description="COCO-format references for val/test; default root/annotations/coco_karpathy_<split>_gt.json "
        "or root/../coco_gt/coco_karpathy_<split>_gt.json when present, else built from the Karpathy file.",
    )


    def required_paths(self, *, split: str) -> list[RequiredPath]:
        """What ``validate`` checks exists (:mod:`pgmm_core.config.files`)."""
        root = Path(self.root).expanduser()
        karpathy = self.split or split
        annotation = under(root, self.annotation) or root / "annotations" / f"coco_karpathy_{karpathy}.json"
        paths = [RequiredPath(root, "directory", "COCO in LAVIS's layout", "root"),
                 RequiredPath(annotation, "file", f"the Karpathy {karpathy} split of LAVIS",
                              "annotation" if self.annotation else "root"),
                 *self._image_root_paths(root)]
        if self.ground_truth is not None:
            paths.append(RequiredPath(under(root, self.ground_truth), "file", "COCO-format references", "ground_truth"))
        return paths

class VgCaptionConfig(ImageCaptionConfig):
    """Visual Genome region captions (LAVIS ``vg_caption.json``), layout under ``root``::

        root/annotations/vg_caption.json
        root/images/VG_100K/1.jpg, root/images/VG_100K_2/…   (image_root: root/images, else root)

    The annotation's image paths are absolute paths of the machine that made it; they are rewritten
    against ``image_root``: with ``path_prefix`` by stripping that prefix, otherwise by file name
    (Visual Genome file names are unique image ids).
    """

    type: Literal["vg_caption"] = "vg_caption"
    root: str = Field(..., min_length=1, description="The Visual Genome directory (LAVIS: cache/vg).")
    annotation: str | None = Field(None, description="Default root/annotations/vg_caption.json.")
    path_prefix: str | None = Field(
        None, description="Prefix of the annotation's image paths to replace by image_root "
        "(default: find each image under image_root by file name)."
    )


    def required_paths(self) -> list[RequiredPath]:
        """What ``validate`` checks exists (:mod:`pgmm_core.config.files`)."""
        root = Path(self.root).expanduser()
        annotation = under(root, self.annotation) or root / "annotations" / "vg_caption.json"
        return [RequiredPath(root, "directory", "Visual Genome in LAVIS's layout", "root"),
                RequiredPath(annotation, "file", "LAVIS's region captions",
                             "annotation" if self.annotation else "root"),
                *self._image_root_paths(root)]

class JsonlCaptionsConfig(ImageCaptionConfig):
    """Your own data: one JSON object per line, ``{"image": path, "caption": str | [str, ...]}``.

    Optional per line: ``"image_id"`` (an int is used as the evaluation id). Relative image paths are
    relative to ``image_root``, itself relative to the JSONL file's folder (default: that folder).
    """

    type: Literal["jsonl_captions"] = "jsonl_captions"
    path: str = Field(..., min_length=1, description="The .jsonl file.")


    def required_paths(self) -> list[RequiredPath]:
        """What ``validate`` checks exists (:mod:`pgmm_core.config.files`)."""
        path = Path(self.path).expanduser()
        return [RequiredPath(path, "file", "", "path"), *self._image_root_paths(path.parent)]

class RetrievalDatasetConfig(ImageCaptionConfig):
    """Fields of the image-text retrieval test sets (LAVIS' ``retrieval`` datasets).

    val/test files are lists of ``{"image": path, "caption": [str, ...]}`` (one entry per image);
    train files have one entry per caption (``{"image", "caption", "image_id"}``), as for captioning.
    """

    root: str = Field(..., min_length=1, description="The dataset directory (LAVIS: cache/<dataset>).")
    split: Literal["train", "val", "test"] | None = Field(
        None, description="Split file to read; default: the list it is in (data.val -> val, ...)."
    )
    annotation: str | None = Field(None, description="Annotation JSON file (default per dataset, under root).")

    # The default annotation file under root ({split} is filled in) and the data set's name in messages.
    default_annotation: ClassVar[str]
    title: ClassVar[str]

    def annotation_path(self, split: str) -> Path:
        """The file the split is read from: ``annotation`` if set, else the dataset's default."""
        root = Path(self.root).expanduser()
        return under(root, self.annotation) or root / self.default_annotation.format(split=self.split or split)

    def required_paths(self, *, split: str) -> list[RequiredPath]:
        """What ``validate`` checks exists (:mod:`pgmm_core.config.files`)."""
        root = Path(self.root).expanduser()
        return [RequiredPath(root, "directory", f"{self.title} in LAVIS's layout", "root"),
                RequiredPath(self.annotation_path(split), "file", f"the {self.split or split} split of LAVIS",
                             "annotation" if self.annotation else "root"),
                *self._image_root_paths(root)]


class CocoRetrievalConfig(RetrievalDatasetConfig):
    """COCO image-text retrieval on the Karpathy splits (5,000 test images, 5 captions each), in
    LAVIS' layout under ``root`` (the same files as ``coco_caption``)::

        root/annotations/coco_karpathy_{train,val,test}.json
        root/images/val2014/COCO_val2014_….jpg            (image_root: root/images, else root)
    """

    type: Literal["coco_retrieval"] = "coco_retrieval"
    default_annotation: ClassVar[str] = "annotations/coco_karpathy_{split}.json"
    title: ClassVar[str] = "COCO Karpathy"


class Flickr30kRetrievalConfig(RetrievalDatasetConfig):
    """Flickr30k image-text retrieval (LAVIS' files: 1,000 test images, 5 captions each) under ``root``::

        root/annotations/flickr30k_{train,val,test}.json
        root/images/flickr30k-images/1007129816.jpg        (image_root: root/images, else root)
    """

    type: Literal["flickr30k_retrieval"] = "flickr30k_retrieval"
    default_annotation: ClassVar[str] = "annotations/flickr30k_{split}.json"
    title: ClassVar[str] = "Flickr30k"


class SyntheticShapesConfig(CaptionDatasetConfig):
    """Procedural images of one coloured shape, captioned with its colour, shape and position.

    Deterministic from ``seed`` and the index; each split draws from its own stream. Augmentation
    is off: flips and crops would change the position the caption names.
    """

    type: Literal["synthetic_shapes"] = "synthetic_shapes"
    num_samples: int = Field(2000, gt=0)
    seed: int = 0


class WebdatasetCaptionsConfig(ImageCaptionConfig):
    """Image–caption pairs streamed from WebDataset tar shards in img2dataset's layout: ``NNNNN.tar``
    holding ``{key}.jpg|png|webp``, ``{key}.txt`` (the caption) and ``{key}.json`` (its ``caption``
    field is used when there is no ``.txt``).

    ``shards`` are brace-expanded (``/data/cc3m/{00000..00331}.tar``); local paths, or ``pipe:``
    commands that write a tar to stdout (``pipe:aws s3 cp s3://bucket/cc3m/00000.tar -``). Training
    reads them as a stream: dealt to ranks then DataLoader workers, shuffled through a buffer, the
    position saved in every checkpoint. Validation and test splits read every sample of the shards
    into memory (one item per sample, its caption the reference): keep them small.
    """

    type: Literal["webdataset_captions"] = "webdataset_captions"
    shards: str | list[str] = Field(..., description="Shard path(s) or pipe: command(s), brace-expanded.")
    samples_per_epoch: int | None = Field(
        None, gt=0, description="Samples in one pass over the shards; default: from 'manifest', manifest.json "
        "beside the shards, or img2dataset's NNNNN_stats.json files.")
    manifest: str | None = Field(None, description="A manifest listing each shard's sample count.")
    buffer_size: int = Field(1000, gt=0, description="Shuffle buffer, in samples, per DataLoader worker.")
    image_root: None = Field(None, description="Not used: the shards hold their images.")

    def required_paths(self) -> list[RequiredPath]:
        """What ``validate`` checks exists (:mod:`pgmm_core.config.files`): local shards."""
        from pgmm_data.tar_shards import expand_shards, is_pipe

        return [RequiredPath(Path(n).expanduser(), "file", "a WebDataset shard", "shards")
                for n in expand_shards(self.shards) if not is_pipe(n)]
