"""Dataset contracts for the question-answering and conversation item formats.

Datasets of the ``dataset`` kind serve one of three item formats; the objective that trains on them
says which it reads. :class:`~pgmm_core.testing.contracts.dataset.DatasetContract` checks captions;
these two check the others, with the same shape, normalisation, seeding, pickling and loader checks:

* :class:`VqaDatasetContract` — train ``{"image", "question", "answers": distinct, "answer_weights",
  "question_id", "image_id"}``; val/test ``{"image", "question", "question_id", "answers": every
  annotator's raw answer, "answer_type", "question_type"}`` and a dataset attribute
  ``answer_metric`` (``"vqa"`` or ``"exact"``);
* :class:`ConversationDatasetContract` — ``{"image", "conversation": [{"role": "user"|"assistant",
  "content"}, ...], "id": str}`` in every split: turns alternate from a user turn to an assistant
  turn, none empty, the ``<image>`` marker exactly once, in a user turn.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pgmm_core.testing.contracts.dataset import DatasetContract

IMAGE_MARKER = "<image>"
ANSWER_METRICS = ("vqa", "exact")


def _stack(items: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """A collate function any objective could start from: stacked images, the rest as items."""
    import torch

    good = [item for item in items if "bad" not in item]
    return torch.stack([item["image"] for item in good]), good


def _same_text(first: dict[str, Any], again: dict[str, Any]) -> None:
    for key, value in first.items():
        if key != "image":
            assert value == again[key], f"item[{key!r}] differs between two reads with the same seed"


class _ItemFormatContract(DatasetContract, ABC):
    """The caption contract's checks that do not read captions, for the other item formats."""

    @abstractmethod
    def _check_train_item(self, index: int, item: dict[str, Any]) -> None:
        """Check one train item of this format."""

    @abstractmethod
    def _check_eval_item(self, index: int, item: dict[str, Any], dataset: Any) -> Any:
        """Check one eval item; return the id that must be unique in the split (None: no such id)."""

    def test_train_items(self, component_instance: Any) -> None:
        for index in self._indices(component_instance):
            item = component_instance[index]
            assert "bad" not in item, f"train item {index} could not be read: {item['bad']}"
            self._check_image(item["image"])
            self._check_train_item(index, item)

    def test_eval_items(self, eval_dataset: Any) -> None:
        seen = set()
        for index in self._indices(eval_dataset):
            item = eval_dataset[index]
            assert "bad" not in item, f"{self.eval_split} item {index} could not be read: {item['bad']}"
            self._check_image(item["image"])
            key = self._check_eval_item(index, item, eval_dataset)
            if key is None:
                continue
            assert key not in seen, f"{self.eval_split} item {index}: id {key!r} appears twice"
            seen.add(key)

    def test_same_seed_gives_the_same_item(self, component_instance: Any) -> None:
        import torch

        from pgmm_core.data import SeededItems

        seeded = SeededItems(component_instance)
        first, again = seeded[(0, 1234)], seeded[(0, 1234)]
        torch.testing.assert_close(first["image"], again["image"], rtol=0, atol=0,
                                   msg="augmentation must draw from torch's generator only")
        _same_text(first, again)

    def test_picklable(self, component_instance: Any) -> None:
        import pickle

        import torch

        from pgmm_core.data import SeededItems

        restored = pickle.loads(pickle.dumps(component_instance))
        assert len(restored) == len(component_instance)
        ours, theirs = SeededItems(component_instance)[(0, 7)], SeededItems(restored)[(0, 7)]
        torch.testing.assert_close(theirs["image"], ours["image"], rtol=0, atol=0)
        _same_text(ours, theirs)

    def test_batches_through_the_trainer_loader(self, component_instance: Any, eval_dataset: Any) -> None:
        from pgmm_core.data import EvalShardSampler, ResumableSampler, make_loader

        batch_size = min(2, len(component_instance))
        sampler = ResumableSampler([len(component_instance)], seed=0)
        images, items = next(iter(make_loader([component_instance], sampler, batch_size=batch_size, num_workers=0,
                                              drop_last=True, collate_fn=_stack)))
        assert images.shape == (batch_size, 3, self.image_size, self.image_size) and len(items) == batch_size
        images, items = next(iter(make_loader([eval_dataset], EvalShardSampler(len(eval_dataset)), batch_size=2,
                                              num_workers=0, drop_last=False, collate_fn=_stack)))
        assert images.shape[0] == len(items) == min(2, len(eval_dataset))


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool) and value != ""


class VqaDatasetContract(_ItemFormatContract):
    """Question-answering items (VQAv2, OK-VQA, GQA and the like); see the module docstring."""

    answer_metrics: ClassVar[tuple[str, ...]] = ANSWER_METRICS

    def _check_train_item(self, index: int, item: dict[str, Any]) -> None:
        assert {"image", "question", "answers", "answer_weights", "question_id", "image_id"} <= set(item), sorted(item)
        assert isinstance(item["question"], str) and item["question"].strip()
        answers, weights = item["answers"], item["answer_weights"]
        assert isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers)
        assert len(set(answers)) == len(answers), f"train item {index}: answers must be distinct, got {answers}"
        assert isinstance(weights, list) and len(weights) == len(answers)
        assert all(isinstance(w, float) and 0 < w <= 1 for w in weights), weights
        assert math.isclose(sum(weights), 1.0, rel_tol=0, abs_tol=1e-6), (
            f"train item {index}: answer weights are shares of the annotators and sum to 1, got {weights}")
        assert _is_id(item["question_id"]) and _is_id(item["image_id"])

    def _check_eval_item(self, index: int, item: dict[str, Any], dataset: Any) -> Any:
        assert {"image", "question", "question_id", "answers", "answer_type", "question_type"} <= set(item), sorted(item)
        assert getattr(dataset, "answer_metric", None) in self.answer_metrics, (
            f"eval datasets say how they are scored: answer_metric in {self.answer_metrics}")
        assert isinstance(item["question"], str) and item["question"].strip()
        answers = item["answers"]
        assert isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers)
        for key in ("answer_type", "question_type"):
            assert item[key] is None or isinstance(item[key], str), f"item[{key!r}] is a string or None"
        assert _is_id(item["question_id"])
        return item["question_id"]


def check_conversation(conversation: Any) -> None:
    """The rules every served conversation keeps (see the module docstring)."""
    assert isinstance(conversation, list) and len(conversation) >= 2, conversation
    for position, turn in enumerate(conversation):
        assert isinstance(turn, dict) and set(turn) == {"role", "content"}, turn
        expected = "user" if position % 2 == 0 else "assistant"
        assert turn["role"] == expected, f"turn {position} is {turn['role']!r}, expected {expected!r}"
        assert isinstance(turn["content"], str) and turn["content"].strip(), f"turn {position} is empty"
    assert conversation[-1]["role"] == "assistant"
    markers = [turn["content"].count(IMAGE_MARKER) for turn in conversation]
    assert sum(markers) == 1, f"the {IMAGE_MARKER} marker appears {sum(markers)} times"
    assert conversation[markers.index(1)]["role"] == "user", f"the {IMAGE_MARKER} marker is in an assistant turn"


class ConversationDatasetContract(_ItemFormatContract):
    """Conversation items (visual instruction data); see the module docstring."""

    def _check(self, item: dict[str, Any]) -> None:
        assert {"image", "conversation", "id"} <= set(item), sorted(item)
        assert isinstance(item["id"], str) and item["id"]
        check_conversation(item["conversation"])

    def _check_train_item(self, index: int, item: dict[str, Any]) -> None:
        self._check(item)

    def _check_eval_item(self, index: int, item: dict[str, Any], dataset: Any) -> Any:
        self._check(item)
        return None  # ids name the source entry; LLaVA's files reuse an id for several conversations
