"""Learning-rate schedules as pure functions of the position in training (so resume is trivial).

``linear_warmup_cosine`` is LAVIS' ``LinearWarmupCosineLRScheduler``: during epoch 0 the rate rises
linearly from ``warmup_lr`` to ``lr`` over ``warmup_steps`` steps and then holds; from epoch 1 on it is
``min_lr + (lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2``, constant within the epoch.
``cosine`` warms up the same way, then decays per step to ``min_lr`` at the last step.
``constant`` warms up, then holds ``lr``.
"""

from __future__ import annotations

import math
from typing import Any


def warmup(step: int, warmup_steps: int, warmup_lr: float, lr: float) -> float:
    return min(lr, warmup_lr + (lr - warmup_lr) * step / max(warmup_steps, 1))


def learning_rate(train: Any, *, epoch: int, step_in_epoch: int, global_step: int, total_steps: int) -> float:
    """The rate for the optimizer step about to be taken."""
    if train.schedule == "linear_warmup_cosine":
        if epoch == 0:
            return warmup(step_in_epoch, train.warmup_steps, train.warmup_lr, train.lr)
        return train.min_lr + (train.lr - train.min_lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / train.epochs))
    if global_step < train.warmup_steps:
        return warmup(global_step, train.warmup_steps, train.warmup_lr, train.lr)
    if train.schedule == "constant":
        return train.lr
    decay_steps = max(total_steps - train.warmup_steps, 1)
    progress = min((global_step - train.warmup_steps) / decay_steps, 1.0)
    return train.min_lr + (train.lr - train.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
