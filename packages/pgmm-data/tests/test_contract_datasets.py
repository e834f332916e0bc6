"""pgmm-data's datasets checked through the contract plugin authors use."""

from __future__ import annotations

import pytest

from pgmm_core.testing.contracts import DatasetContract
from pgmm_data.testing import write_coco_tree, write_flickr30k_tree, write_jsonl_tree, write_vg_tree


class TestSyntheticShapes(DatasetContract):
    component = "synthetic_shapes"
    distribution = "pgmm-data"
    config = {"num_samples": 12, "seed": 3}


class TestCocoCaption(DatasetContract):
    component = "coco_caption"
    distribution = "pgmm-data"

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls, tmp_path_factory):
        tree = write_coco_tree(tmp_path_factory.mktemp("coco"), train=4, val=3, test=3, size=(48, 40))
        return {"root": str(tree.root)}


class TestVgCaption(DatasetContract):
    component = "vg_caption"
    distribution = "pgmm-data"

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls, tmp_path_factory):
        tree = write_vg_tree(tmp_path_factory.mktemp("vg"), images=4, size=(48, 40))
        return {"root": str(tree.root)}


class TestJsonlCaptions(DatasetContract):
    component = "jsonl_captions"
    distribution = "pgmm-data"

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls, tmp_path_factory):
        tree = write_jsonl_tree(tmp_path_factory.mktemp("jsonl"), images=4, size=(48, 40))
        return {"path": str(tree.annotation_files["train"])}


class TestCocoRetrieval(DatasetContract):
    component = "coco_retrieval"
    distribution = "pgmm-data"

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls, tmp_path_factory):
        tree = write_coco_tree(tmp_path_factory.mktemp("coco_retrieval"), train=4, val=3, test=3, size=(48, 40),
                               ground_truth=False)
        return {"root": str(tree.root)}


class TestFlickr30kRetrieval(DatasetContract):
    component = "flickr30k_retrieval"
    distribution = "pgmm-data"

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls, tmp_path_factory):
        tree = write_flickr30k_tree(tmp_path_factory.mktemp("flickr30k"), train=3, val=3, test=3, size=(48, 40))
        return {"root": str(tree.root)}
