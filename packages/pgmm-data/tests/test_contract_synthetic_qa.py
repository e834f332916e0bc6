"""The synthetic-shapes question and conversation datasets: contracts, and what they ask and answer."""

from __future__ import annotations

from pgmm_core.testing.contracts import ConversationDatasetContract, VqaDatasetContract
from pgmm_data.synthetic import labels
from pgmm_data.synthetic_qa import (
    ALTERNATIVE_PLACES,
    QUESTION_TYPES,
    build_synthetic_shapes_chat,
    build_synthetic_shapes_vqa,
)
from pgmm_data.synthetic_qa_configs import SyntheticShapesChatConfig, SyntheticShapesVqaConfig


class TestSyntheticShapesVqa(VqaDatasetContract):
    component = "synthetic_shapes_vqa"
    distribution = "pgmm-data"
    config = {"num_samples": 4, "seed": 3}


class TestSyntheticShapesChat(ConversationDatasetContract):
    component = "synthetic_shapes_chat"
    distribution = "pgmm-data"
    config = {"num_samples": 4, "seed": 3}


def test_vqa_items_ask_colour_shape_and_place_of_the_picture():
    config = SyntheticShapesVqaConfig(num_samples=3, seed=5)
    train = build_synthetic_shapes_vqa(config, split="train", image_size=32)
    val = build_synthetic_shapes_vqa(config, split="val", image_size=32)
    assert len(train) == len(val) == 9
    for index in range(9):
        colour, shape, place = labels(5, "val", index // 3)
        item = val[index]
        kind = ("what color", "what shape", "where")[index % 3]
        assert item["question_type"] == kind and item["image_id"] == index // 3 and item["question_id"] == index
        expected = {"what color": [colour] * 10, "what shape": [shape] * 10,
                    "where": [place] * 7 + [ALTERNATIVE_PLACES[place]] * 3}[kind]
        assert item["answers"] == expected
    colour, shape, place = labels(5, "train", 0)
    assert train[0]["answers"] == [colour] and train[0]["answer_weights"] == [1.0]
    assert train[2]["answers"] == [place, ALTERNATIVE_PLACES[place]] and train[2]["answer_weights"] == [0.7, 0.3]
    assert set(QUESTION_TYPES.values()) == {"what color", "what shape", "where"}


def test_vqa_items_are_deterministic_and_splits_differ():
    config = SyntheticShapesVqaConfig(num_samples=4, seed=1)
    first = build_synthetic_shapes_vqa(config, split="val", image_size=32)
    again = build_synthetic_shapes_vqa(config, split="val", image_size=32)
    assert [first[i]["question"] for i in range(12)] == [again[i]["question"] for i in range(12)]
    assert (first[0]["image"] == again[0]["image"]).all()
    test = build_synthetic_shapes_vqa(config, split="test", image_size=32)
    assert [labels(1, "val", i) for i in range(4)] != [labels(1, "test", i) for i in range(4)]
    assert len(test) == 12


def test_conversations_answer_every_kind_once_in_a_per_image_order():
    dataset = build_synthetic_shapes_chat(SyntheticShapesChatConfig(num_samples=6, seed=2), split="train",
                                          image_size=32)
    orders = set()
    for index in range(6):
        colour, shape, place = labels(2, "train", index)
        conversation = dataset[index]["conversation"]
        assert conversation[0]["content"].startswith("<image>\n")
        replies = [turn["content"] for turn in conversation if turn["role"] == "assistant"]
        assert sorted(replies) == sorted([colour, f"a {shape}", f"in the {place}"])
        orders.add(tuple(replies.index(r) for r in (colour, f"a {shape}", f"in the {place}")))
    assert len(orders) > 1, "the question order varies between images"
    short = build_synthetic_shapes_chat(SyntheticShapesChatConfig(num_samples=2, turns=1), split="val",
                                        image_size=32)
    assert len(short[0]["conversation"]) == 2
