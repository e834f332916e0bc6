"""Building what a run trains with: model, datasets, loader, optimizer — in a fixed order.

The order matters for exact reproduction: the model is built under the run's seed (identical on
every rank), then every rank re-seeds with ``seed + rank`` (LAVIS: a dropout stream per rank)
before anything else draws random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pgmm_core.data import BadImageTracker
from pgmm_core.errors import DataError
from pgmm_core.model import MultimodalModel, build_model
from pgmm_core.objectives.base import ObjectiveModule
from pgmm_core.preprocessing import encoder_image_spec
from pgmm_core.train import rng
from pgmm_core.train.evaluator import build_datasets
from pgmm_core.train.optim import build_optimizer
from pgmm_core.train.sources import SampledSource, StreamSource, build_train_source


@dataclass
class Built:
    """Everything the owners of a run are wired from."""

    objective: Any
    model: MultimodalModel
    module: torch.nn.Module  # what the step loop calls: ObjectiveModule(model, objective), wrapped by the strategy
    frozen_prints: dict[str, str]
    image_spec: Any
    policy: Any
    val_sets: list[Any]
    source: SampledSource | StreamSource  # the train batches and their position, whatever the data's kind
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
    objective = config.host.build("objective", cfg.objective)
    model = build_model(cfg, objective.parts, policy=policy)  # frozen, fingerprinted, then cast by the policy
    strategy.place(model)  # on the device (a sharding strategy moves only each rank's shards, in wrap)
    rng.seed_everything(t.seed + strategy.rank, backend)  # LAVIS: per-rank stream for dropout
    image_spec = encoder_image_spec(model.vision)
    train_sets = build_datasets(cfg, cfg.data.train, split="train", image_spec=image_spec)
    val_sets = build_datasets(cfg, cfg.data.val, split="val", image_spec=image_spec)
    batch_size = cfg.data.batch_size
    num_replicas, rank = strategy.data_shard()
    source = build_train_source(train_sets, cfg.data.train, num_replicas=num_replicas, rank=rank, seed=t.seed,
                                weights=cfg.data.train_weights, batch_size=batch_size,
                                num_workers=cfg.data.num_workers, collate_fn=objective.collate)
    per_rank = -(-source.total // num_replicas)
    steps_per_epoch = (per_rank // batch_size) // t.accum_steps
    if steps_per_epoch == 0:
        raise DataError(
            f"the train data ({source.total} samples over {num_replicas} rank(s)) is smaller than "
            f"one optimizer step (batch_size {batch_size} x accum_steps {t.accum_steps})"
        )
    total_steps = steps_per_epoch * t.epochs
    if t.max_steps is not None:
        total_steps = min(total_steps, t.max_steps)
    # Wrapped before the optimizer is built: a sharding strategy replaces the parameters it shards.
    module = strategy.wrap(ObjectiveModule(model, objective))
    optimizer = build_optimizer(model, t)
    scaler = policy.grad_scaler()
    trainable = [p for p in model.parameters() if p.requires_grad]
    tracker = BadImageTracker(cfg.data.max_bad_fraction, collectives=strategy.collectives, device=device)
    return Built(objective=objective, model=model, module=module, frozen_prints=model.frozen_fingerprint,
                 image_spec=image_spec, policy=policy, val_sets=val_sets,
                 source=source, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                 optimizer=optimizer, scaler=scaler, trainable=trainable, tracker=tracker)
