"""The generic loader: deterministic shards, exact mid-epoch resume, weighted mixing, bad-item accounting."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from pgmm_core import data as data_module
from pgmm_core.data import BadImageTracker, Batch, ResumableSampler, SeededItems, collate, make_loader
from pgmm_core.errors import DataError


class Noisy(torch.utils.data.Dataset):
    """Items whose content is drawn from torch's RNG (like a random crop); index 3 is unreadable."""

    def __init__(self, size: int = 12) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        if index == 3:
            return {"bad": f"img{index}.jpg: file not found"}
        return {"image": torch.rand(2) + index, "caption": f"c{index}", "image_id": f"id{index}"}


def test_ranks_get_disjoint_shards_that_cover_the_epoch():
    shards = []
    for rank in range(3):
        sampler = ResumableSampler([10, 7], num_replicas=3, rank=rank, seed=5)
        sampler.set_epoch(2)
        shards.append([index for index, _ in sampler])
    assert [len(s) for s in shards] == [6, 6, 6]  # 17 padded to 18, like DistributedSampler
    assert set().union(*shards) == set(range(17))
    positions = Counter(i for s in shards for i in s)
    assert sum(count - 1 for count in positions.values()) == 1  # only the single padding sample repeats


def test_order_depends_on_seed_and_epoch_only():
    def order(seed, epoch):
        sampler = ResumableSampler([50], seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1) and order(1, 0) != order(2, 0)
    assert sorted(i for i, _ in order(1, 3)) == list(range(50))


def test_resume_mid_epoch_continues_exactly_including_augmentation_seeds():
    full = ResumableSampler([30], num_replicas=2, rank=1, seed=9)
    full.set_epoch(4)
    resumed = ResumableSampler([30], num_replicas=2, rank=1, seed=9)
    resumed.set_epoch(4, start=6)
    assert list(resumed) == list(full)[6:] and len(resumed) == len(full) - 6


def test_weighted_mixing_follows_the_weights_and_is_deterministic():
    sampler = ResumableSampler([100, 1000], seed=0, weights=[3.0, 1.0])
    sampler.set_epoch(0)
    order = sampler.global_order()
    assert len(order) == 1100 and order == sampler.global_order()
    from_first = sum(1 for i in order if i < 100) / len(order)
    assert 0.70 < from_first < 0.80  # 3:1 although the first dataset is ten times smaller
    assert all(0 <= i < 1100 for i in order)
    with pytest.raises(DataError, match="2 entries for 3 train datasets"):
        ResumableSampler([1, 2, 3], weights=[1.0, 2.0])
    with pytest.raises(DataError, match="empty"):
        ResumableSampler([5, 0], weights=[1.0, 2.0])


def test_augmentation_is_the_same_whatever_the_worker_count():
    sampler = ResumableSampler([12], seed=1)

    def batches(workers):
        loader = make_loader([Noisy()], sampler, batch_size=4, num_workers=workers, drop_last=True)
        sampler.set_epoch(1)
        return [b.images for b in loader]

    single = batches(0)
    assert all(torch.equal(a, b) for a, b in zip(single, batches(2)))


def test_seeded_items_leave_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    SeededItems(Noisy())[(5, 1234)]
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(SeededItems(Noisy())[(5, 1234)]["image"], SeededItems(Noisy())[(5, 1234)]["image"])


def test_collate_drops_bad_items_and_keeps_their_reasons():
    items = [Noisy()[i] for i in (2, 3, 4)]
    batch = collate(items)
    assert batch.images.shape == (2, 2) and batch.captions == ["c2", "c4"] and batch.image_ids == ["id2", "id4"]
    assert batch.bad == ["img3.jpg: file not found"] and batch.size_before_drop == 3
    empty = collate([Noisy()[3]])
    assert len(empty) == 0 and empty.bad


def test_eval_items_collate_with_references():
    items = [{"image": torch.zeros(2), "image_id": 7, "references": ["a", "b"]},
             {"bad": "x.jpg: truncated"}]
    batch = collate(items)
    assert batch.image_ids == [7] and batch.references == [["a", "b"]] and batch.captions == []


def _batch(good: int, bad: int, prefix: str = "img") -> Batch:
    return Batch(images=torch.zeros(good, 1), image_ids=list(range(good)),
                 bad=[f"{prefix}{i}.jpg: file not found" for i in range(bad)], size_before_drop=good + bad)


def test_tracker_counts_per_epoch_and_in_total():
    tracker = BadImageTracker(0.5)
    tracker.update(_batch(8, 2))
    tracker.update(_batch(9, 1))
    assert tracker.end_epoch() == 3
    tracker.update(_batch(8, 2))
    assert tracker.end_epoch() == 2 and tracker.bad == 5 and tracker.seen == 30
    assert tracker.examples == ["img0.jpg: file not found", "img1.jpg: file not found"]  # distinct files


def test_tracker_stops_past_the_fraction_naming_examples():
    tracker = BadImageTracker(0.05)
    for _ in range(5):
        tracker.update(_batch(10, 0))
    tracker.update(_batch(7, 3, prefix="broken"))  # 3 of 60 = 5%: still allowed
    with pytest.raises(DataError, match=r"4 of 70 images could not be read \(5.7% > data.max_bad_fraction 5.0%\)"
                       r"[\s\S]*broken0.jpg[\s\S]*data check"):
        tracker.update(_batch(9, 1))


class TwoRanks:
    """Collectives of a two-rank job whose other rank sees exactly the same batches."""

    def __init__(self) -> None:
        self.calls = []

    def all_reduce(self, tensor, op="sum"):
        self.calls.append("all_reduce")
        assert op == "sum" and tensor.dtype == torch.int64  # integers: exact, and HCCL-safe
        return tensor * 2

    def all_gather_object(self, obj):
        self.calls.append("all_gather_object")
        return [obj, [r.replace("img", "other") for r in obj]]


def test_tracker_sums_over_ranks_so_every_rank_decides_alike(monkeypatch):
    monkeypatch.setattr(data_module, "world_size", lambda: 2)
    ranks = TwoRanks()
    tracker = BadImageTracker(0.5, collectives=ranks)
    tracker.update(_batch(8, 1))
    assert (tracker.seen, tracker.bad) == (18, 2)
    assert tracker.examples == ["img0.jpg: file not found", "other0.jpg: file not found"]
    tracker.update(_batch(9, 0))
    assert ranks.calls == ["all_reduce", "all_gather_object", "all_reduce"]  # gathers only when needed
