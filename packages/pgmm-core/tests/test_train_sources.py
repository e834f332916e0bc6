"""The train sources the step loop reads: per-dataset counts of weighted indexable data, and names."""

from __future__ import annotations

import torch

from pgmm_core.data import collate
from pgmm_core.train.sources import SampledSource, build_train_source, dataset_names


class Items:
    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        return {"image": torch.zeros(3, 2, 2), "caption": "c", "image_id": f"{self.name}{index}"}


class Config:
    def __init__(self, type: str) -> None:
        self.type = type


def test_names_number_repeated_types():
    assert dataset_names([Config("a"), Config("b"), Config("a"), Config("a")]) == ["a", "b", "a.2", "a.3"]


def test_weighted_counts_are_the_samples_the_loop_read():
    sets = [Items("x", 30), Items("y", 90)]
    source = build_train_source(sets, [Config("x"), Config("y")], num_replicas=2, rank=1, seed=4,
                                weights=[1.0, 3.0], batch_size=4, num_workers=0, collate_fn=collate)
    assert isinstance(source, SampledSource)
    read: list[str] = []
    for epoch in range(2):
        for micro, batch in enumerate(source.batches(epoch, 0, 10)):
            if micro >= 10:  # the loop's limit: the loader may hold more
                break
            read += batch.image_ids
        counts = source.counts(epoch, 10)
        assert counts == {"x": sum(i.startswith("x") for i in read), "y": sum(i.startswith("y") for i in read)}
    assert source.counts(1, 3)["x"] + source.counts(1, 3)["y"] == 40 + 12
    assert source.state_dict() == {}  # the position is the trainer's (epoch, micro-batch)


def test_unweighted_indexable_data_reports_no_counts():
    source = build_train_source([Items("x", 8)], [Config("x")], num_replicas=1, rank=0, seed=0, weights=None,
                                batch_size=2, num_workers=0, collate_fn=collate)
    assert source.counts(0, 2) == {} and source.unread_per_epoch(3) == 2
