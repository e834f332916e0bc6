"""Caption an eval dataset across ranks and score it (used by the trainer and ``evaluate``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pgmm_core.data import EvalShardSampler, make_loader
from pgmm_core.devices.collectives import Collectives, rank, world_size
from pgmm_core.metrics import caption_metrics


@dataclass
class EvalResult:
    name: str
    results: list[dict[str, Any]]  # LAVIS format: [{"image_id": int, "caption": str}]
    metrics: dict[str, Any]
    bad_images: int


def caption_dataset(model: Any, dataset: Any, *, generation: Any, batch_size: int, num_workers: int,
                    device: torch.device, policy: Any, max_images: int | None = None,
                    progress: bool = False) -> tuple[list[dict[str, Any]], dict[Any, list[str]], int]:
    """This rank's share of captions, references and bad-image count for ``dataset``."""
    size = len(dataset) if max_images is None else min(len(dataset), max_images)
    sampler = EvalShardSampler(size, num_replicas=world_size(), rank=rank())
    loader = make_loader([dataset], sampler, batch_size=batch_size, num_workers=num_workers, drop_last=False)
    results: list[dict[str, Any]] = []
    references: dict[Any, list[str]] = {}
    bad = 0
    iterator = loader
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(loader, desc=f"eval {getattr(dataset, 'name', 'dataset')}", leave=False, dynamic_ncols=True)
    was_training = model.training
    model.eval()
    try:
        for batch in iterator:
            bad += len(batch.bad)
            if len(batch) == 0:
                continue
            with policy.autocast():
                captions = model.generate(batch.images.to(device), generation=generation)
            step = generation.num_return_sequences
            for i, image_id in enumerate(batch.image_ids):
                results.append({"image_id": image_id, "caption": captions[i * step]})
                references[image_id] = list(batch.references[i])
    finally:
        model.train(was_training)
    return results, references, bad


def evaluate_dataset(model: Any, dataset: Any, *, generation: Any, batch_size: int, num_workers: int,
                     device: torch.device, policy: Any, collectives: Collectives, java: str = "java",
                     max_images: int | None = None, progress: bool = False) -> EvalResult:
    """Caption on every rank, gather everything, score once, and give every rank the same result."""
    results, references, bad = caption_dataset(
        model, dataset, generation=generation, batch_size=batch_size, num_workers=num_workers,
        device=device, policy=policy, max_images=max_images, progress=progress)
    gathered = collectives.all_gather_object((results, references, bad))
    all_results: list[dict[str, Any]] = []
    all_references: dict[Any, list[str]] = {}
    total_bad = 0
    for part_results, part_refs, part_bad in gathered:
        all_results.extend(part_results)
        all_references.update(part_refs)
        total_bad += part_bad
    all_results.sort(key=lambda r: str(r["image_id"]))
    metrics: dict[str, Any] = {}
    if rank() == 0 and all_results:
        predictions = {r["image_id"]: r["caption"] for r in all_results}
        metrics = caption_metrics(predictions, all_references, java=java)
    metrics = collectives.all_gather_object(metrics)[0]
    return EvalResult(getattr(dataset, "name", "dataset"), all_results, metrics, total_bad)
