"""The dataset contract: the item format the trainer and the evaluator rely on."""

from __future__ import annotations

import pickle
from typing import Any, ClassVar

import pytest

from pgmm_core.testing.contracts.base import ComponentContract


class DatasetContract(ComponentContract):
    """``factory(config, *, split, image_spec, image_size)`` returns an indexable, sized, picklable dataset.

    ``image_spec`` is the vision encoder's :class:`~pgmm_core.preprocessing.ImageSpec`; images are
    resized to its size and normalised with its mean/std (``image_size`` is its size, for factories
    written before specs existed).

    * train items: ``{"image": float32 3×S×S, "caption": str, "image_id": str}``;
    * eval items (``val``/``test``): ``{"image": ..., "image_id": int, "references": [str, ...]}``,
      image ids unique;
    * augmentation draws only from torch's generator, so that a seed gives the same item again
      (exact resume); out-of-range indices raise ``IndexError``;
    * picklable, because DataLoader workers receive the dataset by pickling where processes are
      spawned (macOS, Windows, and Linux from Python 3.14 on).
    """

    kind: ClassVar[str] = "dataset"
    image_size: ClassVar[int] = 32
    # Nobody's statistics: a wide std squeezes correctly normalised pixels into about [-0.2, 0.3], which
    # pixels normalised with fixed constants (CLIP's, ImageNet's, 0.5) leave for all but mid-grey.
    image_mean: ClassVar[tuple[float, float, float]] = (0.4, 0.5, 0.6)
    image_std: ClassVar[tuple[float, float, float]] = (2.0, 2.5, 3.0)
    eval_split: ClassVar[str] = "val"
    items_checked: ClassVar[int] = 8

    def image_spec(self) -> Any:
        from pgmm_core.preprocessing import ImageSpec

        return ImageSpec(size=self.image_size, mean=self.image_mean, std=self.image_std, interpolation="bicubic")

    def build_context(self) -> dict[str, Any]:
        return {"split": "train", "image_spec": self.image_spec(), "image_size": self.image_size}

    def build_split(self, host: Any, config: Any, split: str) -> Any:
        return host.build(self.kind, config, split=split, image_spec=self.image_spec(), image_size=self.image_size)

    @pytest.fixture(scope="class")
    @classmethod
    def eval_dataset(cls, host: Any, component_config: Any) -> Any:
        return cls().build_split(host, component_config, cls.eval_split)

    def _indices(self, dataset: Any) -> list[int]:
        return sorted({*range(min(len(dataset), self.items_checked)), len(dataset) - 1})

    def _check_image(self, image: Any) -> None:
        import torch

        assert isinstance(image, torch.Tensor), f"item['image'] must be a tensor, got {type(image).__name__}"
        assert image.shape == (3, self.image_size, self.image_size), (
            f"item['image'] has shape {tuple(image.shape)}; resize to the image_size the factory received")
        assert image.dtype == torch.float32 and torch.isfinite(image).all()

    def test_sized(self, component_instance: Any, eval_dataset: Any) -> None:
        for dataset in (component_instance, eval_dataset):
            assert isinstance(len(dataset), int) and len(dataset) > 0

    def test_train_items(self, component_instance: Any) -> None:
        for index in self._indices(component_instance):
            item = component_instance[index]
            assert "bad" not in item, f"train item {index} could not be read: {item['bad']}"
            assert {"image", "caption", "image_id"} <= set(item), sorted(item)
            self._check_image(item["image"])
            assert isinstance(item["caption"], str) and item["caption"].strip()
            assert isinstance(item["image_id"], str), "train image ids are strings (LAVIS: 'coco_123')"

    def test_eval_items(self, eval_dataset: Any) -> None:
        seen = set()
        for index in self._indices(eval_dataset):
            item = eval_dataset[index]
            assert "bad" not in item, f"{self.eval_split} item {index} could not be read: {item['bad']}"
            assert {"image", "image_id", "references"} <= set(item), sorted(item)
            self._check_image(item["image"])
            assert isinstance(item["image_id"], int) and not isinstance(item["image_id"], bool), (
                "eval image ids are ints (the COCO results format)")
            references = item["references"]
            assert isinstance(references, list) and references
            assert all(isinstance(r, str) and r.strip() for r in references)
            assert item["image_id"] not in seen, f"image_id {item['image_id']} appears twice"
            seen.add(item["image_id"])

    def test_normalises_with_the_encoders_statistics(self, eval_dataset: Any) -> None:
        """Pixels come out in ``[(0 - mean) / std, (1 - mean) / std]`` per channel, the range of the
        spec's statistics; CLIP's or ImageNet's constants would put some channel outside it."""
        import torch

        spec = self.image_spec()
        items = [eval_dataset[i] for i in self._indices(eval_dataset)[:3]]
        images = [item["image"] for item in items if "bad" not in item]
        assert images, "no readable eval item"
        for image in images:
            for channel, (mean, std) in enumerate(zip(spec.mean, spec.std)):
                values = image[channel]
                low, high = (0 - mean) / std, (1 - mean) / std
                assert torch.all(values >= low - 1e-4) and torch.all(values <= high + 1e-4), (
                    f"channel {channel} spans [{values.min():.3f}, {values.max():.3f}], outside the "
                    f"[{low:.3f}, {high:.3f}] of image_spec mean {mean} std {std}: normalise with the "
                    "image_spec the factory received")

    def test_index_past_the_end_raises_index_error(self, component_instance: Any) -> None:
        with pytest.raises(IndexError):
            component_instance[len(component_instance)]

    def test_same_seed_gives_the_same_item(self, component_instance: Any) -> None:
        import torch

        from pgmm_core.data import SeededItems

        seeded = SeededItems(component_instance)
        first, again = seeded[(0, 1234)], seeded[(0, 1234)]
        torch.testing.assert_close(first["image"], again["image"], rtol=0, atol=0,
                                   msg="augmentation must draw from torch's generator only")
        assert first["caption"] == again["caption"]

    def test_picklable(self, component_instance: Any) -> None:
        import torch

        from pgmm_core.data import SeededItems

        restored = pickle.loads(pickle.dumps(component_instance))
        assert len(restored) == len(component_instance)
        ours, theirs = SeededItems(component_instance)[(0, 7)], SeededItems(restored)[(0, 7)]
        torch.testing.assert_close(theirs["image"], ours["image"], rtol=0, atol=0)
        assert theirs["caption"] == ours["caption"]

    def test_batches_through_the_trainer_loader(self, component_instance: Any, eval_dataset: Any) -> None:
        from pgmm_core.data import EvalShardSampler, ResumableSampler, make_loader

        batch_size = min(2, len(component_instance))
        sampler = ResumableSampler([len(component_instance)], seed=0)
        batch = next(iter(make_loader([component_instance], sampler, batch_size=batch_size, num_workers=0,
                                      drop_last=True)))
        assert batch.images.shape == (batch_size, 3, self.image_size, self.image_size)
        assert len(batch.captions) == batch_size and not batch.bad
        eval_batch = next(iter(make_loader([eval_dataset], EvalShardSampler(len(eval_dataset)),
                                           batch_size=2, num_workers=0, drop_last=False)))
        assert len(eval_batch.references) == len(eval_batch.image_ids) == eval_batch.images.shape[0]


class ShardStreamDatasetContract(DatasetContract):
    """A dataset whose train split streams shards (:mod:`pgmm_core.streaming`); val/test are indexable.

    The train split is a :class:`~pgmm_core.streaming.ShardStream`: no ``len`` or indexing, but
    ``read_shard(shard, offset)`` from any record's ``end`` goes on with the next record (exact resume
    seeks there), offsets grow within a shard, ``decode`` gives train items whose augmentation draws
    only from torch's generator, and it is picklable (DataLoader workers).
    """

    def _records(self, stream: Any, shard: int = 0) -> list[Any]:
        return list(stream.read_shard(shard, 0))

    def test_sized(self, component_instance: Any, eval_dataset: Any) -> None:
        from pgmm_core.streaming import is_streaming

        assert is_streaming(component_instance), "the train split must be a pgmm_core.streaming.ShardStream"
        assert component_instance.shards and component_instance.samples_per_epoch > 0
        assert isinstance(len(eval_dataset), int) and len(eval_dataset) > 0

    def test_train_items(self, component_instance: Any) -> None:
        from pgmm_core.streaming import sample_seed, seeded

        records = self._records(component_instance)[: self.items_checked]
        assert records, "the first shard gave no record"
        for number, record in enumerate(records):
            item = seeded(lambda: component_instance.decode(record), sample_seed(0, number))
            assert "bad" not in item, f"train record {record.key} could not be read: {item['bad']}"
            assert {"image", "caption", "image_id"} <= set(item), sorted(item)
            self._check_image(item["image"])
            assert isinstance(item["caption"], str) and item["caption"].strip()
            assert isinstance(item["image_id"], str)

    def test_reading_goes_on_from_any_record_end(self, component_instance: Any) -> None:
        records = self._records(component_instance)
        offsets = [r.offset for r in records]
        assert offsets == sorted(set(offsets)), "record offsets must grow within a shard"
        for i, record in enumerate(records[:-1]):
            rest = [r.key for r in component_instance.read_shard(record.shard, record.end)]
            assert rest == [r.key for r in records[i + 1:]], f"reading from the end of {record.key}"

    def test_index_past_the_end_raises_index_error(self, eval_dataset: Any) -> None:
        with pytest.raises(IndexError):
            eval_dataset[len(eval_dataset)]

    def test_same_seed_gives_the_same_item(self, component_instance: Any) -> None:
        import torch

        from pgmm_core.streaming import seeded

        record = self._records(component_instance)[0]
        first, again = (seeded(lambda: component_instance.decode(record), 1234) for _ in range(2))
        torch.testing.assert_close(first["image"], again["image"], rtol=0, atol=0,
                                   msg="augmentation must draw from torch's generator only")

    def test_picklable(self, component_instance: Any) -> None:
        import torch

        from pgmm_core.streaming import seeded

        restored = pickle.loads(pickle.dumps(component_instance))
        record = self._records(restored)[0]
        ours, theirs = (seeded(lambda d=d: d.decode(record), 7) for d in (component_instance, restored))
        torch.testing.assert_close(theirs["image"], ours["image"], rtol=0, atol=0)
        assert theirs["caption"] == ours["caption"]

    def test_batches_through_the_trainer_loader(self, component_instance: Any, eval_dataset: Any) -> None:
        from pgmm_core.data import EvalShardSampler, collate, make_loader
        from pgmm_core.streaming import TrainStream

        stream = TrainStream([component_instance], [self.component], seed=0)
        stream.configure(0, 1, 0)
        items = iter(stream)
        batch = collate([next(items) for _ in range(2)])
        assert batch.images.shape == (2, 3, self.image_size, self.image_size)
        assert len(batch.captions) == 2 and not batch.bad
        eval_batch = next(iter(make_loader([eval_dataset], EvalShardSampler(len(eval_dataset)),
                                           batch_size=2, num_workers=0, drop_last=False)))
        assert len(eval_batch.references) == len(eval_batch.image_ids) == eval_batch.images.shape[0]
