"""Building what a run trains with: model, datasets, loader, optimizer — in a fixed order.

The order matters for exact reproduction: the model is built under the run's seed (identical on
every rank), then every rank re-seeds with ``seed + rank`` (LAVIS: a dropout stream per rank)
before anything else draws random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pgmm_core import frozen_weights
from pgmm_core.data import BadImageTracker, ResumableSampler, make_loader
from pgmm_core.errors import DataError
from pgmm_core.model import MultimodalModel, build_model
from pgmm_core.train import rng
from pgmm_core.train.evaluator import build_datasets
from pgmm_core.train.optim import build_optimizer


def apply_precision_policy(model: MultimodalModel, policy: Any) -> None:
    """Store frozen towers in the policy's dtype unless their own config pinned one."""
    for part in (model.vision, model.llm):
        if getattr(part, "frozen", False) and getattr(part, "follows_precision_policy", True):
            part.to(policy.frozen_dtype)


@dataclass
class Built:
    """Everything the owners of a run are wired from."""

    model: MultimodalModel
    module: torch.nn.Module  # what the step loop calls: the model as the strategy wrapped it
    frozen_prints: dict[str, str]
    policy: Any
    val_sets: list[Any]
    sampler: ResumableSampler
    loader: Any
    steps_per_epoch: int
    total_steps: int
    optimizer: torch.optim.Optimizer
    scaler: Any
    trainable: list[torch.Tensor]
    tracker: BadImageTracker


def build_run(config: Any, strategy: Any, device: torch.device) -> Built:
    cfg, t = config, config.train
    backend = strategy.device_backend
    policy = backend.precision_policy()
    rng.seed_everything(t.seed, backend)  # identical initialisation on every rank
    model = build_model(cfg)
    frozen_prints = frozen_weights.fingerprint(model)  # before the precision policy casts
    apply_precision_policy(model, policy)
    model.to(device)
    rng.seed_everything(t.seed + strategy.rank, backend)  # LAVIS: per-rank stream for dropout
    train_sets = build_datasets(cfg, cfg.data.train, split="train", model=model)
    val_sets = build_datasets(cfg, cfg.data.val, split="val", model=model)
    batch_size = cfg.data.batch_size
    num_replicas, rank = strategy.data_shard()
    sampler = ResumableSampler([len(d) for d in train_sets], num_replicas=num_replicas, rank=rank, seed=t.seed,
                               weights=cfg.data.train_weights)
    loader = make_loader(train_sets, sampler, batch_size=batch_size, num_workers=cfg.data.num_workers,
                         drop_last=True, seed=t.seed)
    steps_per_epoch = (sampler.per_rank // batch_size) // t.accum_steps
    if steps_per_epoch == 0:
        raise DataError(
            f"the train data ({sampler.total} samples over {num_replicas} rank(s)) is smaller than "
            f"one optimizer step (batch_size {batch_size} x accum_steps {t.accum_steps})"
        )
    total_steps = steps_per_epoch * t.epochs
    if t.max_steps is not None:
        total_steps = min(total_steps, t.max_steps)
    optimizer = build_optimizer(model, t)
    scaler = policy.grad_scaler()
    trainable = [p for p in model.parameters() if p.requires_grad]
    module = strategy.wrap(model)
    tracker = BadImageTracker(cfg.data.max_bad_fraction, collectives=strategy.collectives, device=device)
    return Built(model=model, module=module, frozen_prints=frozen_prints, policy=policy, val_sets=val_sets,
                 sampler=sampler, loader=loader, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                 optimizer=optimizer, scaler=scaler, trainable=trainable, tracker=tracker)
