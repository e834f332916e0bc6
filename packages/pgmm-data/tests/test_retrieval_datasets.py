"""The retrieval test sets: LAVIS' tables (text, txt2img, img2txt), ids, bad images, default files."""

from __future__ import annotations

import json

import pytest

from pgmm_core.errors import DataError
from pgmm_core.preprocessing import clip_spec
from pgmm_data.configs import CocoRetrievalConfig, Flickr30kRetrievalConfig
from pgmm_data.processors import blip_caption
from pgmm_data.retrieval import RetrievalEvalSet, build_retrieval
from pgmm_data.testing import write_coco_tree, write_flickr30k_tree

SPEC = clip_spec(32)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_coco_tree(tmp_path_factory.mktemp("coco"), train=2, val=2, test=3, size=(40, 32), ground_truth=False)


@pytest.fixture(scope="module")
def flickr(tmp_path_factory):
    return write_flickr30k_tree(tmp_path_factory.mktemp("flickr"), train=2, val=2, test=3, size=(40, 32),
                                broken={1: "corrupt"})


def test_coco_test_split_has_lavis_tables_in_file_order(coco):
    dataset = build_retrieval(CocoRetrievalConfig(root=str(coco.root)), split="test", image_spec=SPEC)
    entries = json.loads(coco.annotation_files["test"].read_text())
    assert isinstance(dataset, RetrievalEvalSet) and len(dataset) == 3
    expected = [blip_caption(c) for entry in entries for c in entry["caption"]]
    assert list(dataset.texts) == expected and len(expected) == 15
    assert dataset.txt2img.tolist() == [i for i in range(3) for _ in range(5)]
    assert dataset.img2txt == [list(range(5 * i, 5 * i + 5)) for i in range(3)]
    ids = [int(entry["image"].rsplit("_", 1)[1].split(".")[0]) for entry in entries]
    assert dataset.image_ids.tolist() == ids
    item = dataset[2]
    assert item["index"] == 2 and item["image_id"] == ids[2]
    assert item["references"] == entries[2]["caption"]
    assert tuple(item["image"].shape) == (3, 32, 32)


def test_max_samples_keeps_the_first_images_and_only_their_texts(coco):
    dataset = build_retrieval(CocoRetrievalConfig(root=str(coco.root), max_samples=2), split="test", image_spec=SPEC)
    assert len(dataset) == 2 and len(dataset.texts) == 10
    assert dataset.txt2img.max() == 1 and dataset.img2txt[1] == list(range(5, 10))
    with pytest.raises(IndexError):
        dataset[2]


def test_flickr30k_reads_lavis_default_file_and_names_its_images(flickr):
    config = Flickr30kRetrievalConfig(root=str(flickr.root))
    assert config.annotation_path("test") == flickr.root / "annotations" / "flickr30k_test.json"
    dataset = build_retrieval(config, split="test", image_spec=SPEC)
    assert dataset.name == "flickr30k_retrieval[test]"
    assert dataset.image_ids.tolist() == [int(p.stem) for p in flickr.images["test"]]
    assert len(dataset.texts) == 15 and dataset.img2txt[2] == [10, 11, 12, 13, 14]


def test_an_unreadable_image_is_reported_with_its_index(flickr):
    dataset = build_retrieval(Flickr30kRetrievalConfig(root=str(flickr.root)), split="test", image_spec=SPEC)
    item = dataset[1]
    assert set(item) == {"bad", "index"} and item["index"] == 1
    assert str(flickr.images["test"][1]) in item["bad"]
    assert "bad" not in dataset[0] and "bad" not in dataset[2]


def test_train_split_serves_one_sample_per_caption(flickr):
    dataset = build_retrieval(Flickr30kRetrievalConfig(root=str(flickr.root)), split="train", image_spec=SPEC)
    assert len(dataset) == 10
    item = dataset[6]
    assert item["image_id"] == flickr.images["train"][1].stem
    assert item["caption"] == blip_caption(json.loads(flickr.annotation_files["train"].read_text())[6]["caption"])


def test_missing_annotation_names_the_flickr30k_download(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match=r"Flickr30k annotation file not found: .*flickr30k_val.json\. "
                                        r"Download https://\S+/flickr30k_val.json"):
        build_retrieval(Flickr30kRetrievalConfig(root=str(tmp_path)), split="val", image_spec=SPEC)


def test_validate_checks_the_split_file(tmp_path):
    config = CocoRetrievalConfig(root=str(tmp_path), split="test")
    paths = {str(p.path) for p in config.required_paths(split="val")}
    assert str(tmp_path / "annotations" / "coco_karpathy_test.json") in paths


def test_data_check_decodes_each_test_image_once(flickr):
    from pgmm_data.check import check_dataset

    config = Flickr30kRetrievalConfig(root=str(flickr.root))
    report = check_dataset(build_retrieval(config, split="test", image_spec=SPEC), config, "test", workers=1)
    assert (report.images, report.bad_images, report.samples) == (3, 1, 3)
    assert str(flickr.images["test"][1]) in report.bad_examples[0]
