"""pgmm-data's VQA and conversation datasets checked through the contracts plugin authors use."""

from __future__ import annotations

import pytest

from pgmm_core.testing.contracts import ConversationDatasetContract, VqaDatasetContract
from pgmm_data.testing_vqa import write_coco_vqa_tree, write_conversation_jsonl, write_gqa_tree, write_llava_tree


class TestVqav2Official(VqaDatasetContract):
    component = "vqav2"
    distribution = "pgmm-data"

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls, tmp_path_factory):
        tree = write_coco_vqa_tree(tmp_path_factory.mktemp("vqav2"), train=3, val=2, size=(48, 40))
        return {"root": str(tree.root)}


class TestVqav2Lavis(VqaDatasetContract):
    component = "vqav2"
    distribution = "pgmm-data"

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls, tmp_path_factory):
        tree = write_coco_vqa_tree(tmp_path_factory.mktemp("vqav2_lavis"), train=3, val=2, size=(48, 40))
        return {"root": str(tree.root), "format": "lavis"}


class TestOkVqa(VqaDatasetContract):
    component = "okvqa"
    distribution = "pgmm-data"

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls, tmp_path_factory):
        tree = write_coco_vqa_tree(tmp_path_factory.mktemp("okvqa"), dataset="okvqa", train=3, val=2, size=(48, 40))
        return {"root": str(tree.root)}


class TestGqa(VqaDatasetContract):
    component = "gqa"
    distribution = "pgmm-data"

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls, tmp_path_factory):
        tree = write_gqa_tree(tmp_path_factory.mktemp("gqa"), train=3, val=2, test=2, size=(48, 40))
        return {"root": str(tree.root)}


class TestLlavaConversations(ConversationDatasetContract):
    component = "llava_conversations"
    distribution = "pgmm-data"

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls, tmp_path_factory):
        tree = write_llava_tree(tmp_path_factory.mktemp("llava"), conversations=4, size=(48, 40))
        return {"path": str(tree.annotation_files["train"])}


class TestJsonlConversations(ConversationDatasetContract):
    component = "jsonl_conversations"
    distribution = "pgmm-data"

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls, tmp_path_factory):
        tree = write_conversation_jsonl(tmp_path_factory.mktemp("chat"), conversations=4, size=(48, 40))
        return {"path": str(tree.annotation_files["train"])}
