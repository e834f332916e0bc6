"""Where the step loop's batches come from: one interface for indexable and streaming train data.

The step loop asks a source for an epoch's batches from a micro-batch on, and the checkpoint
manager asks it for its per-rank state; neither knows which kind of data it is:

* :class:`SampledSource` — indexable datasets through :class:`~pgmm_core.data.ResumableSampler`
  (concatenated or drawn by ``data.train_weights``). Its position is entirely the trainer's
  ``(epoch, micro-batch)``: the sampler recomputes the epoch's order and skips what was used, so its
  checkpoint state is empty.
* :class:`StreamSource` — when any train dataset is a shard stream, every dataset is read through one
  :class:`~pgmm_core.streaming.TrainStream` by a torchdata ``StatefulDataLoader``; its position (per
  worker: pass, shard, byte offset, shuffle buffer, mixing draws) is the loader's state, saved per
  rank. The stream runs on across epochs; an epoch is ``samples_per_epoch`` of every dataset (a
  manifest's counts or the configured number) summed, as for concatenated indexable datasets.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from pgmm_core.data import ResumableSampler, _ignore_interrupts, make_loader
from pgmm_core.errors import CheckpointError
from pgmm_core.streaming import TrainStream, is_streaming, size_of


def dataset_names(configs: Sequence[Any]) -> list[str]:
    """Names for the per-dataset counts: the config's type, numbered when a type repeats."""
    names: list[str] = []
    for config in configs:
        name = getattr(config, "type", "dataset")
        names.append(name if name not in names else f"{name}.{sum(n.split('.')[0] == name for n in names) + 1}")
    return names


class SampledSource:
    """Indexable train datasets in :class:`ResumableSampler` order (the position is the trainer's)."""

    def __init__(self, datasets: Sequence[Any], names: Sequence[str], *, num_replicas: int, rank: int, seed: int,
                 weights: Sequence[float] | None, batch_size: int, num_workers: int, collate_fn: Any) -> None:
        self.names = list(names)
        self.batch_size = batch_size
        self.sampler = ResumableSampler([len(d) for d in datasets], num_replicas=num_replicas, rank=rank, seed=seed,
                                        weights=weights)
        self.loader = make_loader(datasets, self.sampler, batch_size=batch_size, num_workers=num_workers,
                                  drop_last=True, seed=seed, collate_fn=collate_fn)
        self.total = self.sampler.total
        self.num_replicas = num_replicas
        self.micro_limit = 0  # micro-batches the loop reads of an epoch (set by batches)
        self._epoch_drawn: dict[int, torch.Tensor] = {}  # the dataset of each sample of one epoch, for counts
        self._epoch_counts: dict[int, torch.Tensor] = {}  # per dataset, for each finished epoch

    def batches(self, epoch: int, first_micro: int, micro_limit: int) -> Iterable[Any]:
        """The epoch's batches from micro-batch ``first_micro`` (the loop stops at ``micro_limit``)."""
        self.sampler.set_epoch(epoch, start=first_micro * self.batch_size)
        self.micro_limit = micro_limit
        return self.loader

    def unread_per_epoch(self, micro_limit: int) -> int:
        """Samples of an epoch no rank reads (drop_last's partial batch, an unfinished accumulation)."""
        return max(self.total - micro_limit * self.batch_size * self.num_replicas, 0)

    def counts(self, epoch: int, micro: int) -> dict[str, int]:
        """Samples this rank drew from each dataset so far (only when they are mixed by weight)."""
        if self.sampler.weights is None:
            return {}
        size = len(self.names)
        totals = torch.bincount(self._drawn(epoch)[:micro * self.batch_size], minlength=size)
        for past in range(epoch):
            if past not in self._epoch_counts:
                used = self.micro_limit * self.batch_size
                self._epoch_counts[past] = torch.bincount(self._drawn(past)[:used], minlength=size)
            totals = totals + self._epoch_counts[past]
        return dict(zip(self.names, totals.tolist()))

    def _drawn(self, epoch: int) -> torch.Tensor:
        """The dataset of each of this rank's samples in ``epoch``, in order (kept per epoch)."""
        if epoch not in self._epoch_drawn:
            sampler = self.sampler
            saved = sampler.epoch
            sampler.epoch = epoch
            try:
                order = torch.tensor(sampler.global_order()[sampler.rank::sampler.num_replicas], dtype=torch.int64)
            finally:
                sampler.epoch = saved
            bounds = torch.tensor(sampler.offsets[1:], dtype=torch.int64)
            self._epoch_drawn = {epoch: torch.bucketize(order, bounds, right=True)}  # the current epoch only
        return self._epoch_drawn[epoch]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class StreamSource:
    """Train datasets, streams among them, read through a ``StatefulDataLoader`` whose state is saved."""

    def __init__(self, datasets: Sequence[Any], names: Sequence[str], *, num_replicas: int, rank: int, seed: int,
                 weights: Sequence[float] | None, batch_size: int, num_workers: int, collate_fn: Any) -> None:
        from torchdata.stateful_dataloader import StatefulDataLoader

        self.names = list(names)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.num_replicas = num_replicas
        self.stream = TrainStream(datasets, names, weights=weights, seed=seed)
        self.stream.configure(rank, num_replicas, num_workers)
        self.total = sum(size_of(d) for d in datasets)
        with warnings.catch_warnings():  # torchdata 0.11 warns about its own call of a deprecated torch API
            warnings.filterwarnings("ignore", message=".*set_vital.*", category=UserWarning)
            self.loader = StatefulDataLoader(
                self.stream, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn,
                worker_init_fn=_ignore_interrupts if num_workers else None,
                # its own generator: starting the iterator must not draw from the global stream (dropout),
                # or a resumed run's random numbers would be shifted by one draw
                generator=torch.Generator().manual_seed(seed))
        self._iterator: Iterator[Any] | None = None

    def batches(self, epoch: int, first_micro: int, micro_limit: int) -> Iterable[Any]:
        """Exactly the epoch's remaining batches of the endless stream (nothing is read ahead and lost)."""
        if self._iterator is None:
            self._iterator = iter(self.loader)
        return itertools.islice(self._iterator, max(micro_limit - first_micro, 0))

    def unread_per_epoch(self, micro_limit: int) -> int:
        return 0  # the stream goes on into the next epoch: nothing is dropped

    def counts(self, epoch: int, micro: int) -> dict[str, int]:
        """Samples this rank drew from each dataset so far (the workers' counts at the last batch)."""
        if len(self.names) < 2:
            return {}
        snapshot = self.loader.state_dict()
        totals = [0] * len(self.names)
        for state in _dataset_states(snapshot):
            for i, count in enumerate(state.get("counts", [])):
                totals[i] += count
        return dict(zip(self.names, totals))

    def state_dict(self) -> dict[str, Any]:
        return {"workers": self.num_workers, "loader": self.loader.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("workers") != self.num_workers:
            raise CheckpointError(f"the checkpoint's stream position was saved with data.num_workers="
                                  f"{state.get('workers')}; resume with the same number (now {self.num_workers})")
        self.loader.load_state_dict(state["loader"])
        self._iterator = None


def _dataset_states(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """The dataset states inside a ``StatefulDataLoader`` state (one per worker, or the main process's)."""
    inner = snapshot.get("_snapshot", snapshot)
    workers = inner.get("_worker_snapshots") or {}
    if workers:
        return [w.get("dataset_state") or {} for w in workers.values()]
    return [snapshot.get("dataset_state") or {}]


def build_train_source(datasets: Sequence[Any], configs: Sequence[Any], *, num_replicas: int, rank: int, seed: int,
                       weights: Sequence[float] | None, batch_size: int, num_workers: int,
                       collate_fn: Any) -> SampledSource | StreamSource:
    """A :class:`StreamSource` when any dataset streams, else today's :class:`SampledSource`."""
    kind = StreamSource if any(is_streaming(d) for d in datasets) else SampledSource
    return kind(datasets, dataset_names(configs), num_replicas=num_replicas, rank=rank, seed=seed, weights=weights,
                batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn)
