"""Loading for any registered dataset: mixing, resumable distributed sampling, collation, bad images.

Datasets (from any plugin) are indexable objects returning dicts:

* train items ``{"image": Tensor[3,H,W], "caption": str, "image_id": str}``;
* eval items ``{"image": Tensor, "image_id": int, "references": list[str]}``;
* an item that could not be read ``{"bad": "path: reason"}`` — it is dropped from the batch and
  counted, so one corrupt JPEG never stops a run (and works across worker processes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Sampler

from pgmm_core.devices.collectives import world_size
from pgmm_core.errors import DataError, TooManyBadImagesError


class SeededItems(torch.utils.data.Dataset):
    """Runs each item's random augmentation from a seed chosen by the sampler.

    Augmentation then depends only on (seed, epoch, position) — not on which worker process loads
    the item or how many items it loaded before — so a resumed run sees exactly the same crops and
    flips as an uninterrupted one. The caller's global RNG is left untouched.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(key, tuple):
            index, seed = key
            # Item transforms run on the CPU and draw from its default generator, so that is the
            # only state to seed and restore (fork_rng would cost 50x more: 0.1 ms per item).
            generator = torch.default_generator
            state = generator.get_state()
            generator.manual_seed(seed)
            try:
                return self.dataset[index]
            finally:
                generator.set_state(state)
        return self.dataset[key]


class ResumableSampler(Sampler[tuple[int, int]]):
    """Deterministic per-epoch order, disjoint shards per rank, and an exact mid-epoch start.

    The epoch's global order is a permutation drawn from ``seed + epoch`` (or, with ``weights``,
    draws from several datasets in proportion). It is padded to a multiple of ``num_replicas`` (like
    ``DistributedSampler``) and rank ``r`` takes positions ``r, r + R, …``. ``start`` skips that many
    of this rank's samples: resuming at the recorded position replays nothing and skips nothing.
    """

    def __init__(self, sizes: Sequence[int], *, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True, weights: Sequence[float] | None = None) -> None:
        if weights is not None and len(weights) != len(sizes):
            raise DataError(f"data.train_weights has {len(weights)} entries for {len(sizes)} train datasets")
        if weights is not None and any(size == 0 for size in sizes):
            raise DataError(f"a weighted train dataset is empty (sizes {list(sizes)})")
        self.sizes = list(sizes)
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.total = sum(self.sizes)
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.weights = list(weights) if weights is not None else None
        self.epoch = 0
        self.start = 0
        self.per_rank = math.ceil(self.total / num_replicas) if self.total else 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def global_order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.weights is not None:
            # Each draw picks a dataset by weight, then a uniform sample of it (with replacement),
            # vectorised: a million draws take milliseconds, not seconds, at every epoch start.
            probs = torch.tensor(self.weights, dtype=torch.float64)
            picks = torch.multinomial(probs / probs.sum(), self.total, replacement=True, generator=generator)
            sizes = torch.tensor(self.sizes, dtype=torch.int64)[picks]
            offsets = torch.tensor(self.offsets, dtype=torch.int64)[picks]
            uniform = torch.rand(self.total, dtype=torch.float64, generator=generator)
            local = torch.minimum((uniform * sizes).long(), sizes - 1)
            order = (offsets + local).tolist()
        elif self.shuffle:
            order = torch.randperm(self.total, generator=generator).tolist()
        else:
            order = list(range(self.total))
        padding = self.per_rank * self.num_replicas - len(order)
        return order + order[:padding]

    def sample_seed(self, position: int) -> int:
        """Seed of the sample at ``position`` in this epoch's global order (for augmentation)."""
        return ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + position) % (2**63 - 1)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.global_order()
        positions = range(self.rank, len(order), self.num_replicas)[self.start :]
        return iter((order[p], self.sample_seed(p)) for p in positions)

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)


@dataclass
class Batch:
    images: torch.Tensor
    image_ids: list[Any]
    captions: list[str] = field(default_factory=list)
    references: list[list[str]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    size_before_drop: int = 0

    def __len__(self) -> int:
        return len(self.image_ids)


def collate(items: list[dict[str, Any]]) -> Batch:
    """Stack good items; keep the reasons of bad ones (an all-bad batch has no images)."""
    good = [it for it in items if "bad" not in it]
    bad = [it["bad"] for it in items if "bad" in it]
    if not good:
        return Batch(images=torch.empty(0), image_ids=[], bad=bad, size_before_drop=len(items))
    return Batch(
        images=torch.stack([it["image"] for it in good]),
        image_ids=[it["image_id"] for it in good],
        captions=[it["caption"] for it in good if "caption" in it],
        references=[it["references"] for it in good if "references" in it],
        bad=bad,
        size_before_drop=len(items),
    )


@dataclass
class BadImageTracker:
    """Counts unreadable images per epoch and in total; stops the run past ``max_fraction``.

    The limit is checked after every batch once ``min_seen_before_stop`` images were read (a few
    bad images among the first ones say little), and by :meth:`check` at every epoch end and at the
    end of the run whatever the number read, so a small data set cannot end a run over the limit.
    Images the loader never reads (the ``drop_last`` remainder of each epoch) are counted apart,
    in ``unread``: they are neither good nor bad, and the messages give their number.

    With ``collectives`` and more than one rank, every update sums the counts over all ranks (and
    gathers example reasons while fewer than ``max_examples`` are known), so the totals are the
    run's, not one rank's, and every rank takes the stop decision at the same step: a rank that
    stopped alone would leave the others waiting in their next collective until a timeout.
    """

    max_fraction: float
    collectives: Any = None
    device: Any = "cpu"
    seen: int = 0
    bad: int = 0
    epoch_bad: int = 0
    unread: int = 0
    examples: list[str] = field(default_factory=list)
    min_seen_before_stop: int = 50
    max_examples: int = 10

    def update(self, batch: Batch) -> None:
        seen, bad, reasons = batch.size_before_drop, len(batch.bad), list(batch.bad)
        if self.collectives is not None and world_size() > 1:
            counts = torch.tensor([seen, bad], dtype=torch.int64, device=self.device)
            seen, bad = (int(v) for v in self.collectives.all_reduce(counts, op="sum").tolist())
            if bad and len(self.examples) < self.max_examples:  # same decision on every rank
                reasons = [r for part in self.collectives.all_gather_object(reasons) for r in part]
        self.seen += seen
        self.bad += bad
        self.epoch_bad += bad
        for reason in reasons:  # distinct files: a bad image is met again every epoch
            if len(self.examples) < self.max_examples and reason not in self.examples:
                self.examples.append(reason)
        if self.seen >= self.min_seen_before_stop:
            self.check()

    def add_unread(self, count: int) -> None:
        """``count`` images of the epoch were never read (the loader dropped the last partial batch)."""
        self.unread += count

    def over_limit(self) -> bool:
        return self.seen > 0 and self.bad / self.seen > self.max_fraction

    def check(self) -> None:
        """Raise :class:`TooManyBadImagesError` when the run's bad fraction is over the limit."""
        if not self.over_limit():
            return
        unread = (f"; {self.unread} image(s) were never read (the last partial batch of each epoch is "
                  "dropped)" if self.unread else "")
        raise TooManyBadImagesError(
            f"{self.bad} of {self.seen} images could not be read ({self.bad / self.seen:.1%} > "
            f"data.max_bad_fraction {self.max_fraction:.1%}){unread}. Examples:\n  " + "\n  ".join(self.examples)
            + "\nList every bad file with `python -m pgmm_core data check --config FILE`, then fix or remove "
            "them, or raise data.max_bad_fraction."
        )

    def end_epoch(self) -> int:
        """This epoch's bad count (over all ranks); the epoch counter restarts."""
        count, self.epoch_bad = self.epoch_bad, 0
        return count

    def state_dict(self) -> dict[str, Any]:
        """Counts for a checkpoint, so a resumed run reports the whole run's totals."""
        return {"seen": self.seen, "bad": self.bad, "epoch_bad": self.epoch_bad, "unread": self.unread,
                "examples": list(self.examples)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.bad, self.epoch_bad = state["seen"], state["bad"], state["epoch_bad"]
        self.unread = state.get("unread", 0)  # checkpoints written before it was counted
        self.examples = list(state["examples"])


def make_loader(datasets: Sequence[Any], sampler: Sampler[int] | None, *, batch_size: int, num_workers: int,
                drop_last: bool, seed: int = 0, collate_fn: Callable[[list[dict[str, Any]]], Any] = collate
                ) -> DataLoader:
    """Batches of ``datasets`` (concatenated) in ``sampler``'s order, collated by ``collate_fn``
    (the objective's; :func:`collate` by default)."""
    dataset = datasets[0] if len(datasets) == 1 else ConcatDataset(list(datasets))
    return DataLoader(
        SeededItems(dataset),
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=drop_last,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_ignore_interrupts if num_workers else None,
    )


def _ignore_interrupts(worker_id: int) -> None:
    """Ctrl-C reaches the whole process group; a worker that died of it would make the trainer's
    graceful stop (finish the step, save, exit) fail on its next batch. The main process decides."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


class EvalShardSampler(Sampler[int]):
    """Rank ``r`` evaluates items ``r, r + R, …`` (no padding: every image is scored exactly once)."""

    def __init__(self, size: int, *, num_replicas: int = 1, rank: int = 0) -> None:
        self.indices = list(range(rank, size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
