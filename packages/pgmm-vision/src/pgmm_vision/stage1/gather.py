"""The global batch of stage 1: every rank's pairs, gathered as LAVIS' ``Blip2Qformer.forward`` does.

LAVIS contrasts each rank's images and captions with every rank's: ITC's features are gathered
*without* gradient (``concat_all_gather``: the other ranks' features are constants, and so are this
rank's own copies in the gathered tensor), ITM's image embeddings *with* gradient
(``all_gather_with_grad``), the token ids plainly. Everything goes through the run's dtype-safe
:class:`~pgmm_core.devices.collectives.Collectives` (floats as float32 on the wire, HCCL-safe).

Unlike LAVIS, ranks may hold different numbers of pairs (pgmm drops unreadable images from a batch):
tensors are padded to the largest rank's size for the collective and the padding is removed after,
so the global batch is exactly the pairs every rank holds, in rank order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from pgmm_core.devices.collectives import GLOO_RULES, Collectives, rank, world_size


def image_key(image_id: Any) -> int:
    """A 63-bit integer standing for an image id (string or number) on every rank alike."""
    digest = hashlib.blake2b(str(image_id).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


class GlobalBatch:
    """This step's pairs across ranks: sizes, this rank's offset, and the three kinds of gather.

    ``collectives`` are the run's (the device backend's); without them a process-group-agnostic
    instance is used, which suits every backend here since only float32 and int64 tensors are sent,
    from ``device`` (the model's).
    """

    def __init__(self, local_size: int, collectives: Collectives | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.collectives = collectives if collectives is not None else Collectives(GLOO_RULES)
        self.rank = rank()
        self.world_size = world_size()
        self.local_size = local_size
        if self.world_size == 1:
            self.sizes = [local_size]
        else:  # on the model's device: NCCL and HCCL move only tensors that live on theirs
            sizes = self.collectives.all_gather(torch.tensor([local_size], dtype=torch.int64, device=device))
            self.sizes = [int(s.item()) for s in sizes]
        self.offset = sum(self.sizes[:self.rank])
        self.total = sum(self.sizes)
        self.max_size = max(self.sizes)

    @property
    def uneven(self) -> bool:
        return len(set(self.sizes)) > 1

    def _pad(self, tensor: torch.Tensor) -> torch.Tensor:
        missing = self.max_size - tensor.shape[0]
        if not missing:
            return tensor
        return F.pad(tensor, [0, 0] * (tensor.dim() - 1) + [0, missing])

    def _unpad(self, gathered: torch.Tensor) -> torch.Tensor:
        if not self.uneven:
            return gathered
        rows = torch.cat([torch.arange(r * self.max_size, r * self.max_size + n) for r, n in enumerate(self.sizes)])
        return gathered.index_select(0, rows.to(gathered.device))

    def constant(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` concatenated, detached (LAVIS ``concat_all_gather``; with one
        process too: LAVIS always runs with a process group, so its gathered features carry no graph)."""
        tensor = tensor.detach()
        if self.world_size == 1:
            return tensor
        wire = tensor.float() if tensor.is_floating_point() else tensor
        parts = self.collectives.all_gather(self._pad(wire).contiguous())
        return self._unpad(torch.cat(parts, dim=0)).to(tensor.dtype)

    def with_grad(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` concatenated, differentiable back to each rank's own rows (LAVIS
        ``all_gather_with_grad``; the input itself with one process)."""
        if self.world_size == 1:
            return tensor
        return self._unpad(self.collectives.all_gather_with_grad(self._pad(tensor)))

    def image_keys(self, image_ids: Sequence[Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(local [B], global [N])`` integer keys of the pairs' image ids (equal keys: same image)."""
        local = torch.tensor([image_key(i) for i in image_ids], dtype=torch.int64, device=device)
        return local, self.constant(local)

    def own_columns(self) -> torch.Tensor:
        """Indices of this rank's pairs in the global batch."""
        return torch.arange(self.offset, self.offset + self.local_size)
