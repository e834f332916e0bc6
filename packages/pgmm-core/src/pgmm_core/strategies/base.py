"""The strategy protocol: what the trainer asks of whatever spreads training over processes.

Import-cheap (no torch at import): a strategy plugin's module may import :class:`Strategy` and
:class:`StrategyConfig` (the base of strategy config models) from here while it registers.

A strategy is built with the run's device backend (``factory(config, *, device_backend)``) and
uses that backend's device, dist backend (gloo, nccl, hccl) and dtype-safe collectives rather than
its own: device backends are the hardware, strategies the parallelism, and every pair composes.

The trainer calls, in this order:

1. :meth:`Strategy.setup` once (selects the device, joins the process group), :meth:`teardown` at
   the end, whatever happened;
2. :meth:`place` on the built model, then :meth:`wrap` on the module whose ``forward`` computes the
   loss (before the optimizer is built); the loop calls the wrapped one;
3. per micro-batch, inside :meth:`accumulation` (``sync`` true on the last micro-batch of a step):
   the forward, then :meth:`backward`;
4. per optimizer step: :meth:`scale_gradients` (when the loss is normalised over the step's
   targets), :meth:`clip_gradients` (returns the global gradient norm), :meth:`optimizer_step`;
5. around each evaluation, on every rank: :meth:`evaluation`;
6. for checkpoints, on every rank: :meth:`model_state` / :meth:`optimizer_state` (``None`` on
   ranks that do not write), :meth:`load_model_state` / :meth:`load_optimizer_state` on resume.
7. when the run fails: :meth:`lost_peer`, whether the failure is the process group reporting a
   rank that died or stopped answering (the run then ends with one message per node, exit code 7).

Gradient semantics every strategy keeps: after the synchronising micro-batch, each trainable
parameter's gradient is the **mean over ranks** of the gradients the ranks accumulated (what DDP
does). Loss normalisation in the step loop relies on it.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from pgmm_core.strategies import process_group
from pgmm_core.strategies.configs import StrategyConfig
from pgmm_core.strategies.process_group import DistEnv

__all__ = ["DistEnv", "Strategy", "StrategyConfig"]

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pgmm_core.devices.base import DeviceBackend
    from pgmm_core.devices.collectives import Collectives


class Strategy(ABC):
    """Base class of strategies. Subclasses implement :meth:`setup`, :meth:`teardown` and :meth:`wrap`;
    the other methods are right for any strategy whose ranks hold whole (unsharded) parameters."""

    name: ClassVar[str] = ""

    def __init__(self, config: Any, *, device_backend: DeviceBackend, env: DistEnv | None = None) -> None:
        self.config = config
        self.device_backend = device_backend
        self.env = env if env is not None else DistEnv.from_environ()
        self.device: torch.device | None = None
        # The module given to :meth:`wrap` (unwrapped): names the parameters of optimizer state
        # saved by name (see :mod:`pgmm_core.strategies.optimizer_state`).
        self.trained_module: nn.Module | None = None
        # How long a collective waits for the other ranks (set by setup when a group is joined).
        self.group_timeout: timedelta | None = None

    # --- where this process stands ------------------------------------------------------------------

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run's files and prints its messages."""
        return self.env.rank == 0

    @property
    def collectives(self) -> Collectives:
        """The device backend's dtype-safe collectives (the strategy never keeps its own)."""
        return self.device_backend.collectives

    def data_shard(self) -> tuple[int, int]:
        """``(num_replicas, rank)`` for samplers: which share of each epoch this process reads."""
        return self.env.world_size, self.env.rank

    # --- lifecycle -----------------------------------------------------------------------------------

    @abstractmethod
    def setup(self) -> torch.device:
        """Select this process's device through the device backend and join the process group if
        there is one; returns the device."""

    @abstractmethod
    def teardown(self) -> None:
        """Leave the process group (safe to call after a failed :meth:`setup`)."""

    def join_launched_job(self) -> torch.device:
        """For :meth:`setup` of a strategy that runs only under torchrun: refuse a plain launch by
        name, select this process's device and join the job's process group (``strategy.timeout_s``
        bounds every collective). Returns the device."""
        from pgmm_core.errors import ConfigError

        if not self.env.launched:
            raise ConfigError([
                f"strategy.type: '{self.name}' needs a torchrun launch (torchrun --nproc_per_node=N -m "
                "pgmm_core.train ...); for one process use strategy.type=auto or single"
            ])
        self.device = self.device_backend.setup(self.env.local_rank)
        self.group_timeout = process_group.init_process_group(
            self.env, self.device_backend.dist_backend, self.device, timeout_s=getattr(self.config, "timeout_s", None))
        return self.device

    def barrier(self) -> None:
        self.collectives.barrier()

    def lost_peer(self, exc: BaseException) -> str | None:
        """What happened, for the user, when ``exc`` is a collective that failed because another
        rank died or stopped answering (see :func:`~pgmm_core.strategies.process_group.lost_peer`);
        ``None`` for any other failure, which keeps its traceback. A strategy whose backend words
        such failures otherwise adds its own cases."""
        detail = process_group.lost_peer(exc) if self.env.distributed else None
        if detail is None:
            return None
        wait = (f"{self.group_timeout.total_seconds():g} s" if self.group_timeout is not None
                else "the process group's timeout")
        return (f"rank {self.rank} of {self.world_size} lost contact with the other ranks: a process or node "
                f"of this run died or stopped answering ({detail}). A collective waits at most {wait} for "
                "the other ranks (strategy.timeout_s, else PGMM_DIST_TIMEOUT)")

    # --- the model and its gradients -------------------------------------------------------------

    def place(self, model: nn.Module) -> None:
        """Put a freshly built model on this process's device (before :meth:`wrap`). Default: all of
        it. A sharding strategy leaves it where it was built and moves only each rank's shards, so
        that a model larger than one device never has to fit on one."""
        model.to(self.device)

    @abstractmethod
    def wrap(self, module: nn.Module) -> nn.Module:
        """The module to call for training forwards (``module`` itself when nothing is needed)."""

    def accumulation(self, *, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """Context for one micro-batch's forward and backward; ``sync`` is false on micro-batches
        whose gradients are only accumulated locally (no communication needed)."""
        return contextlib.nullcontext()

    def zero_loss(self, parameters: Sequence[torch.Tensor]) -> torch.Tensor:
        """A loss giving every trainable parameter a zero gradient: what a rank whose batch held no
        readable image backpropagates, so that it still takes part in the step's gradient sync."""
        return sum(p.sum() * 0.0 for p in parameters)

    def backward(self, loss: torch.Tensor, scaler: Any = None) -> None:
        """Backpropagate ``loss`` (scaled by the fp16 grad scaler when there is one)."""
        (scaler.scale(loss) if scaler is not None else loss).backward()

    def scale_gradients(self, parameters: Iterable[torch.Tensor], factor: float) -> None:
        """Multiply the accumulated gradients by ``factor`` (before clipping and the step)."""
        for param in parameters:
            if param.grad is not None:
                param.grad.mul_(factor)

    def clip_gradients(self, optimizer: Any, parameters: Sequence[torch.Tensor], max_norm: float | None,
                       scaler: Any = None) -> float:
        """Unscale (fp16), clip to ``max_norm`` when given, and return the global gradient norm.

        Gradients here are whole and already averaged over ranks, so the local norm is the global one.
        """
        import torch

        if scaler is not None:
            scaler.unscale_(optimizer)
        if max_norm is not None:
            return float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return 0.0
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))

    def optimizer_step(self, optimizer: Any, scaler: Any = None) -> None:
        """Step (through the scaler when there is one), then clear the gradients."""
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def evaluation(self) -> contextlib.AbstractContextManager[Any]:
        """Context around an evaluation, entered on every rank. Ranks evaluate different numbers of
        batches (and generate different numbers of tokens), so nothing a forward does inside may
        need the other ranks; a sharding strategy gathers its weights here. Default: nothing."""
        return contextlib.nullcontext()

    # --- state for checkpoints (every rank calls; the strategy decides who holds the result) ------

    def trainable_shapes(self, model: Any) -> dict[str, tuple[int, ...]]:
        """Full shapes of the trainable tensors a checkpoint of this model holds."""
        return {k: tuple(v.shape) for k, v in model.trainable_state_dict().items()}

    def model_state(self, model: Any) -> dict[str, torch.Tensor] | None:
        """The trainable weights to save (on CPU, no float64) on the writing rank; ``None`` elsewhere."""
        if not self.is_main:
            return None
        return self.device_backend.to_serializable(model.trainable_state_dict())

    def load_model_state(self, model: Any, weights: dict[str, torch.Tensor]) -> list[str]:
        """Load saved trainable weights into ``model`` on every rank; returns unexpected keys."""
        _, unexpected = model.load_state_dict(weights, strict=False)
        return list(unexpected)

    def optimizer_state(self, optimizer: Any) -> dict[str, Any] | None:
        """The optimizer state to save on the writing rank; ``None`` elsewhere."""
        if not self.is_main:
            return None
        return self.device_backend.to_serializable(optimizer.state_dict())

    def load_optimizer_state(self, optimizer: Any, state: dict[str, Any]) -> None:
        """Load saved optimizer state; state saved by name (by ``fsdp2``) is renumbered first."""
        from pgmm_core.strategies import optimizer_state

        optimizer.load_state_dict(optimizer_state.to_indexed(state, optimizer, self.trained_module))

    def describe(self) -> str:
        return f"{self.name}, world size {self.world_size}"
