"""Capturing and restoring every random generator a run uses (for bit-exact resume)."""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np
import torch


def seed_everything(seed: int, device_backend: Any | None = None) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if device_backend is not None:
        device_backend.manual_seed(seed)


@contextlib.contextmanager
def seeded_on_cpu(seed: int) -> Iterator[None]:
    """Seed Python, NumPy and torch's CPU generator as the trainer does before building its model,
    and give the caller its own generator states back afterwards."""
    saved = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    seed_everything(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.random.set_rng_state(saved[2])


def capture(device_backend: Any) -> dict[str, Any]:
    """Python, NumPy, torch and device RNG states as tensors and plain lists (weights_only-loadable)."""
    np_state = np.random.get_state()
    return {
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.random.get_rng_state(),
        "device": device_backend.get_rng_state(),
    }


def restore(state: dict[str, Any], device_backend: Any) -> None:
    internal, version, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.random.set_rng_state(state["torch"])
    device_backend.set_rng_state(state["device"])
