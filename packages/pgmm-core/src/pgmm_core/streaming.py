"""Streaming train data: shard streams and indexable datasets mixed into one stream whose position a
checkpoint keeps.

A *shard stream* is a dataset read front to back, shard after shard (WebDataset tars: pgmm-data's
``webdataset_captions``), never by index. It offers:

* ``name``, ``shards`` (the shard names, in configured order), ``samples_per_epoch`` (samples in one
  pass over the shards: a manifest's count or the configured number) and ``buffer_size`` (the shuffle
  buffer);
* ``read_shard(shard, offset)`` -> :class:`Record` s from byte ``offset`` of shard number ``shard``
  (0: its start), raw bytes only, in file order; damage ends the shard with a record whose ``bad``
  says what and how many samples were read;
* ``decode(record)`` -> a train item (``{"image", "caption", "image_id"}``) or ``{"bad": reason}``;
  augmentation draws only from torch's default generator, which :class:`TrainStream` seeds per sample.

:class:`TrainStream` reads such streams and ordinary indexable datasets together, each by its
weight, and reports its position (``state_dict``) from whichever DataLoader worker runs it, so that
torchdata's ``StatefulDataLoader`` can save the position of the last batch the trainer used. Every
pass ``p`` (per dataset) deals the shards — or an indexable dataset's samples — in an order drawn
from ``seed + p``, to the ranks first (``r, r + R, …``) then to each rank's workers: no sample is read
twice in a pass and none is missed. The state is small and JSON-native: pass, shard and byte offset,
the shuffle buffer as ``[shard, offset]`` references, and counters from which every random choice is
recomputed (picks from the buffer, the dataset of each draw, each sample's augmentation seed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils.data import IterableDataset, get_worker_info

from pgmm_core.errors import DataError

__all__ = ["Record", "ShardStream", "TrainStream", "consumer_slice", "is_streaming", "pass_order",
           "sample_seed", "seeded"]

_MODULUS = 2**63 - 1
_CHOICE_BLOCK = 4096


@dataclass
class Record:
    """One sample's raw members as read from a shard. ``offset`` is the byte offset of its first
    member, ``end`` the offset reading goes on from (``-1``: the shard ends here, as after damage)."""

    shard: int
    offset: int
    end: int
    key: str
    members: dict[str, bytes]
    bad: str | None = None


@runtime_checkable
class ShardStream(Protocol):
    name: str
    shards: list[str]
    samples_per_epoch: int
    buffer_size: int

    def read_shard(self, shard: int, offset: int) -> Iterator[Record]: ...

    def decode(self, record: Record) -> dict[str, Any]: ...


def is_streaming(dataset: Any) -> bool:
    """Whether ``dataset`` is read as a shard stream (else it is indexable)."""
    return isinstance(dataset, ShardStream)


def sample_seed(seed: int, *parts: int) -> int:
    """A seed from ``seed`` and any integers: the same on every machine, worker and resume."""
    value = seed % _MODULUS
    for part in parts:
        value = (value * 1_000_003 + int(part) + 10_000_019) % _MODULUS
    return value


def seeded(function: Callable[[], Any], seed: int) -> Any:
    """``function()`` with torch's default CPU generator seeded by ``seed``, its state put back after."""
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        return function()
    finally:
        generator.set_state(state)


def pass_order(count: int, seed: int, pass_index: int) -> list[int]:
    """The order of ``count`` shards (or samples) in pass ``pass_index``."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed + pass_index)).tolist()


def consumer_slice(order: Sequence[int], rank: int, world: int, worker: int, workers: int) -> list[int]:
    """Rank ``rank``'s share of ``order`` (every ``world``-th from ``rank``), then its worker's share."""
    return list(order[rank::world][worker::workers])


class _ShardCursor:
    """One worker's reading of a shard stream: its shards of each pass through a shuffle buffer."""

    def __init__(self, stream: Any, *, seed: int, consumer: tuple[int, int, int, int]) -> None:
        self.stream = stream
        self.seed = seed
        self.consumer = consumer  # rank, world, worker, workers
        self.pass_index = 0
        self.shard_pos = 0  # index into this worker's shards of the pass
        self.offset = 0  # where reading that shard goes on
        self.buffer: list[Record] = []
        self.picks = 0
        self.read_in_pass = 0
        self.reader: Iterator[Record] | None = None
        self.mine = self._my_shards()

    def _my_shards(self) -> list[int]:
        return consumer_slice(pass_order(len(self.stream.shards), self.seed, self.pass_index), *self.consumer)

    def next_item(self) -> dict[str, Any]:
        self._fill()
        while not self.buffer:
            if not self.read_in_pass:
                raise DataError(f"{self.stream.name}: the shards of this reader hold no samples "
                                f"({[self.stream.shards[s] for s in self.mine]})")
            self.pass_index, self.shard_pos, self.offset, self.read_in_pass = self.pass_index + 1, 0, 0, 0
            self.mine = self._my_shards()
            self._fill()
        rank, _, worker, _ = self.consumer
        rng = torch.Generator().manual_seed(sample_seed(self.seed, 11, rank, worker, self.pass_index, self.picks))
        pick = int(torch.randint(len(self.buffer), (1,), generator=rng))
        self.picks += 1
        self.buffer[pick], self.buffer[-1] = self.buffer[-1], self.buffer[pick]
        record = self.buffer.pop()
        if record.bad is not None and not record.members:
            return {"bad": record.bad}
        return seeded(lambda: self.stream.decode(record),
                      sample_seed(self.seed, self.pass_index, record.shard, record.offset))

    def _fill(self) -> None:
        while len(self.buffer) < max(self.stream.buffer_size, 1) and self.shard_pos < len(self.mine):
            if self.reader is None:
                self.reader = iter(self.stream.read_shard(self.mine[self.shard_pos], self.offset))
            record = next(self.reader, None)
            if record is None or record.end < 0:
                self.reader, self.shard_pos, self.offset = None, self.shard_pos + 1, 0
            else:
                self.offset = record.end
            if record is not None:
                self.buffer.append(record)
                self.read_in_pass += 1

    def state_dict(self) -> dict[str, Any]:
        refs = [[r.shard, r.offset] if r.members or r.bad is None else [r.shard, -1, r.bad] for r in self.buffer]
        return {"pass": self.pass_index, "shard_pos": self.shard_pos, "offset": self.offset, "picks": self.picks,
                "read_in_pass": self.read_in_pass, "buffer": refs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pass_index, self.shard_pos, self.offset = state["pass"], state["shard_pos"], state["offset"]
        self.picks, self.read_in_pass = state["picks"], state["read_in_pass"]
        self.mine, self.reader = self._my_shards(), None
        self.buffer = self._reread(state["buffer"])

    def _reread(self, refs: list[list[Any]]) -> list[Record]:
        """The buffered samples again, in their order, each shard read once from its first one."""
        wanted: dict[int, set[int]] = {}
        for ref in refs:
            if ref[1] >= 0:
                wanted.setdefault(ref[0], set()).add(ref[1])
        found: dict[tuple[int, int], Record] = {}
        for shard, offsets in wanted.items():
            for record in self.stream.read_shard(shard, min(offsets)):
                if record.offset in offsets:
                    found[(shard, record.offset)] = record
                if len([o for o in offsets if (shard, o) in found]) == len(offsets) or record.end < 0:
                    break
        buffer = []
        for ref in refs:
            if ref[1] < 0:
                buffer.append(Record(ref[0], -1, -1, "", {}, ref[2]))
            elif (ref[0], ref[1]) in found:
                buffer.append(found[(ref[0], ref[1])])
            else:
                raise DataError(f"{self.stream.name}: resuming needs the sample at byte {ref[1]} of "
                                f"{self.stream.shards[ref[0]]}, which is no longer there (were the shards rewritten?)")
        return buffer


class _IndexCursor:
    """One worker's reading of an indexable dataset: its share of each pass's permutation."""

    def __init__(self, dataset: Any, *, seed: int, consumer: tuple[int, int, int, int]) -> None:
        self.dataset = dataset
        self.seed = seed
        self.consumer = consumer
        self.pass_index = 0
        self.position = 0
        self.mine = self._my_indices()

    def _my_indices(self) -> list[int]:
        return consumer_slice(pass_order(len(self.dataset), self.seed, self.pass_index), *self.consumer)

    def next_item(self) -> dict[str, Any]:
        while self.position >= len(self.mine):
            if not self.mine:
                raise DataError(f"a train dataset of {len(self.dataset)} samples is too small to give every "
                                "rank and worker one")
            self.pass_index, self.position = self.pass_index + 1, 0
            self.mine = self._my_indices()
        index = self.mine[self.position]
        self.position += 1
        return seeded(lambda: self.dataset[index], sample_seed(self.seed, self.pass_index, index))

    def state_dict(self) -> dict[str, Any]:
        return {"pass": self.pass_index, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pass_index, self.position = state["pass"], state["position"]
        self.mine = self._my_indices()


class TrainStream(IterableDataset):
    """Indexable datasets and shard streams drawn by ``weights`` into one endless stream of items.

    Each draw picks a dataset (from a generator recomputed from the draw's number), then that
    dataset's next sample for this rank and worker. Call :meth:`configure` with the rank before a
    DataLoader starts workers. ``state_dict()`` is the position of the worker it runs in;
    ``load_state_dict`` makes the next iteration start there.
    """

    def __init__(self, datasets: Sequence[Any], names: Sequence[str], *, weights: Sequence[float] | None = None,
                 seed: int = 0) -> None:
        if weights is not None and len(weights) != len(datasets):
            raise DataError(f"data.train_weights has {len(weights)} entries for {len(datasets)} train datasets")
        self.datasets = list(datasets)
        self.names = list(names)
        self.weights = list(weights) if weights is not None else [float(size_of(d)) for d in self.datasets]
        self.seed = seed
        self.rank, self.world = 0, 1
        self.cursors: list[Any] = []
        self.worker = 0
        self.draws = 0
        self.counts = [0] * len(self.datasets)
        self.resume: dict[str, Any] | None = None
        self._choices: tuple[int, list[int]] = (-1, [])

    def configure(self, rank: int, world: int, workers: int) -> None:
        """This process's rank; refuses shard streams with fewer shards than readers."""
        self.rank, self.world = rank, world
        readers = world * max(workers, 1)
        for dataset in self.datasets:
            if is_streaming(dataset) and len(dataset.shards) < readers:
                raise DataError(f"{dataset.name}: {len(dataset.shards)} shard(s) for {world} rank(s) x "
                                f"{max(workers, 1)} DataLoader worker(s): every reader needs a shard of its own; "
                                "write smaller shards or lower data.num_workers")

    def _choice(self, draw: int) -> int:
        if len(self.datasets) == 1:
            return 0
        block = draw // _CHOICE_BLOCK
        if self._choices[0] != block:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, 13, self.rank, self.worker, block))
            probs = torch.tensor(self.weights, dtype=torch.float64)
            picks = torch.multinomial(probs / probs.sum(), _CHOICE_BLOCK, replacement=True, generator=generator)
            self._choices = (block, picks.tolist())
        return self._choices[1][draw % _CHOICE_BLOCK]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        self.worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        consumer = (self.rank, self.world, self.worker, workers)
        self.cursors = [(_ShardCursor if is_streaming(d) else _IndexCursor)(d, seed=self.seed, consumer=consumer)
                        for d in self.datasets]
        self.draws, self.counts = 0, [0] * len(self.datasets)
        if self.resume is not None:
            state, self.resume = self.resume, None
            self.draws, self.counts = state["draws"], list(state["counts"])
            for cursor, cursor_state in zip(self.cursors, state["cursors"]):
                cursor.load_state_dict(cursor_state)
        while True:
            which = self._choice(self.draws)
            item = self.cursors[which].next_item()
            self.draws += 1
            self.counts[which] += 1
            yield item

    def state_dict(self) -> dict[str, Any]:
        if self.resume is not None:  # restored, not iterating yet: the position is still the loaded one
            return self.resume
        return {"draws": self.draws, "counts": list(self.counts), "cursors": [c.state_dict() for c in self.cursors]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.resume = state


def size_of(dataset: Any) -> int:
    """Samples in one pass: a stream's ``samples_per_epoch``, an indexable dataset's length."""
    return int(dataset.samples_per_epoch) if is_streaming(dataset) else len(dataset)
