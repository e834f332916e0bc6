"""``fsdp2``: the model sharded over the processes torchrun started (``torch.distributed.fsdp.fully_shard``).

Each rank keeps 1/world of every weight. The units (see :mod:`~pgmm_core.strategies.sharding_plan`)
are every block of the frozen LLM and vision tower, the rest of each part, and the root; a unit's
weights are all-gathered just before its forward (and again in backward when resharded after the
forward) and freed after. Gradients of trainable weights are reduce-scattered on the step's last
micro-batch only (``set_requires_gradient_sync``), as a mean over ranks like DDP's.

Precision follows the device backend's policy: each unit is all-gathered in the dtype its part is
stored in (frozen towers in the policy's ``frozen_dtype``, trainable parts float32) and gradients
are reduced in float32, so nothing float64 and nothing fp16 is ever reduced (HCCL-safe). Gradients
are summed and then divided (never ``ReduceOp.AVG``, which HCCL emulates that way anyway).

Checkpoints keep today's format: the trainable weights are gathered whole into rank 0's memory
(``get_model_state_dict`` with ``full_state_dict``/``cpu_offload``, frozen weights left out) and
written as one safetensors file; the optimizer state is gathered whole, keyed by parameter name
(:mod:`~pgmm_core.strategies.optimizer_state`), so it loads at any world size and under any strategy.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from pgmm_core.errors import ConfigError
from pgmm_core.strategies import optimizer_state as named_state
from pgmm_core.strategies.base import Strategy
from pgmm_core.strategies.process_group import destroy_process_group
from pgmm_core.strategies.sharding_plan import Part, find_parts

logger = logging.getLogger(__name__)


def require_fully_shard() -> Any:
    """``torch.distributed.fsdp.fully_shard``, or one clear error saying what is missing."""
    import torch

    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        raise ConfigError([
            f"strategy.type: 'fsdp2' needs torch.distributed.fsdp.fully_shard (torch 2.6 or newer); this "
            f"torch is {torch.__version__}. Use strategy.type=ddp, or install a newer torch"
        ]) from None
    return fully_shard


class Fsdp2Strategy(Strategy):
    name = "fsdp2"

    def __init__(self, config: Any, *, device_backend: Any, env: Any = None) -> None:
        super().__init__(config, device_backend=device_backend, env=env)
        self.parts: list[Part] = []
        self.meshes: list[Any] = []  # released in teardown (see destroy_process_group)

    # --- lifecycle -----------------------------------------------------------------------------------

    def setup(self) -> Any:
        require_fully_shard()
        reason = self.device_backend.sharding_unsupported()
        if reason:
            raise ConfigError([f"strategy.type: 'fsdp2' is not available on {self.device_backend.name}: {reason}"])
        policy = self.device_backend.precision_policy()
        if policy.use_grad_scaler:
            raise ConfigError([
                f"strategy.type: 'fsdp2' does not train with the fp16 grad scaler (precision "
                f"{policy.name}); use bf16 or fp32 precision, or strategy.type=ddp"
            ])
        return self.join_launched_job()

    def teardown(self) -> None:
        self.trained_module, self.parts = None, []
        meshes, self.meshes = self.meshes, []
        destroy_process_group(meshes)

    # --- sharding ------------------------------------------------------------------------------------

    def place(self, model: Any) -> None:
        """Nothing yet: :meth:`wrap` moves the model unit by unit, each unit's whole weights to the
        device only while they are split, so no rank ever holds more than its shards and one unit."""

    def wrap(self, module: Any) -> Any:
        """Shard every block, then every part, then the root. Call it before building the optimizer:
        sharding replaces each parameter with a sharded one (a ``DTensor``)."""
        import torch
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, register_fsdp_forward_method

        fully_shard = require_fully_shard()
        device_type = self.device.type if self.device is not None else "cpu"
        mesh = init_device_mesh(device_type, (self.world_size,))
        replicate_mesh = (init_device_mesh(device_type, (self.world_size, 1), mesh_dim_names=("replicate", "shard"))
                          if self.config.trainable == "replicate" else None)
        self.meshes = [m for m in (mesh, replicate_mesh) if m is not None]
        reshard = self.config.reshard_after_forward

        def shard(unit: Any, dtype: torch.dtype | None, unit_mesh: Any = mesh) -> None:
            fully_shard(unit, mesh=unit_mesh, reshard_after_forward=reshard,
                        mp_policy=MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32,
                                                       cast_forward_inputs=False))

        self.parts = find_parts(module)
        for part in self.parts:
            # what the precision policy stored it in; a mixed part keeps each tensor's own dtype
            dtype = None if part.mixed else next(part.module.parameters()).dtype
            if part.trainable and not part.mixed and replicate_mesh is not None:
                shard(part.module, dtype, replicate_mesh)  # one replicated unit: HSDP with shards of one
                continue
            for block in part.blocks:
                shard(block, dtype)
            shard(part.module, dtype)
        for part in self.parts:
            for method in part.entry_points:  # parts are called through these too, not only forward
                register_fsdp_forward_method(part.module, method)
        fully_shard(module, mesh=mesh, reshard_after_forward=reshard,
                    mp_policy=MixedPrecisionPolicy(reduce_dtype=torch.float32, cast_forward_inputs=False))
        for unit in module.modules():
            if hasattr(unit, "set_force_sum_reduction_for_comms"):
                unit.set_force_sum_reduction_for_comms(True)  # SUM then divide: no ReduceOp.AVG on the wire
        self.trained_module = module  # now the root FSDP unit
        logger.debug("fsdp2 units: %s", "; ".join(
            f"{p.name or '<root>'} ({'mixed' if p.mixed else 'trainable' if p.trainable else 'frozen'}, "
            f"{len(p.blocks)} blocks)"
            for p in self.parts))
        return module

    def accumulation(self, *, sync: bool) -> contextlib.AbstractContextManager[Any]:
        return self._gradient_sync(sync)

    @contextlib.contextmanager
    def _gradient_sync(self, sync: bool) -> Iterator[None]:
        if self.trained_module is not None:
            self.trained_module.set_requires_gradient_sync(sync)
        yield

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """Every unit gathered whole for the evaluation, and kept whole after each forward: ranks
        evaluate different numbers of batches and generate different numbers of tokens, so no forward
        inside may all-gather. Costs the whole model's memory per rank while evaluating."""
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in self.trained_module.modules() if isinstance(m, FSDPModule)] \
            if self.trained_module is not None else []
        for unit in units:
            unit.set_reshard_after_forward(False, recurse=False)
            unit.unshard()
        try:
            yield
        finally:
            for unit in units:
                unit.reshard()
                unit.set_reshard_after_forward(self.config.reshard_after_forward, recurse=False)

    def zero_loss(self, parameters: Sequence[Any]) -> Any:
        """Every rank must run each unit's forward (its all-gather) in every micro-batch; a rank
        without a batch cannot, so it stops the run with a clear error rather than hang the others."""
        raise RuntimeError(
            f"rank {self.rank}: every image of a micro-batch was unreadable; under strategy.type=fsdp2 "
            "each rank must run the forward of every micro-batch. Clean the data set (or lower "
            "data.max_bad_fraction to stop earlier), or train with strategy.type=ddp")

    # --- gradients -----------------------------------------------------------------------------------

    def clip_gradients(self, optimizer: Any, parameters: Sequence[Any], max_norm: float | None,
                       scaler: Any = None) -> float:
        """The global norm of the sharded gradients, then the same clipping as
        ``torch.nn.utils.clip_grad_norm_``.

        Each rank sums the squares of the gradient elements it holds; an element held by several
        ranks (a replicated dimension, or an unsharded tensor) counts once in total, so its square
        is divided by how many hold it. One float32 all-reduce (HCCL-safe) adds the ranks' sums.
        """
        import torch

        grads = [p.grad for p in parameters if p.grad is not None]
        local_sum = torch.zeros((), dtype=torch.float32)
        for grad in grads:
            if hasattr(grad, "to_local"):  # a DTensor
                local = grad.to_local()
                copies = 1
                for dim, placement in enumerate(grad.placements):
                    if placement.is_replicate():
                        copies *= grad.device_mesh.size(dim)
            else:
                local, copies = grad, self.world_size
            square = torch.linalg.vector_norm(local.float()).pow(2).cpu() if local.numel() else torch.zeros(())
            local_sum = local_sum + square / copies
        total = torch.sqrt(self.collectives.all_reduce(local_sum, op="sum"))
        if max_norm is not None and grads:
            coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)  # as clip_grad_norm_ computes it
            for grad in grads:
                local = grad.to_local() if hasattr(grad, "to_local") else grad
                local.mul_(coefficient.to(local.device, local.dtype))
        return float(total)

    # --- state for checkpoints -----------------------------------------------------------------------

    def model_state(self, model: Any) -> dict[str, Any] | None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        state = get_model_state_dict(model, options=options)  # every rank takes part in the gathers
        if not self.is_main:
            return None
        names = set(self.trainable_shapes(model))
        return self.device_backend.to_serializable({k: v for k, v in state.items() if k in names})

    def load_model_state(self, model: Any, weights: dict[str, Any]) -> list[str]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        names = set(self.trainable_shapes(model))
        unexpected = [k for k in weights if k not in names]
        set_model_state_dict(model, {k: v for k, v in weights.items() if k in names},
                             options=StateDictOptions(full_state_dict=True, strict=False))
        return unexpected

    def optimizer_state(self, optimizer: Any) -> dict[str, Any] | None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_optimizer_state_dict(self._module(), optimizer, options=options)  # every rank
        if not self.is_main:
            return None
        return self.device_backend.to_serializable(state)

    def load_optimizer_state(self, optimizer: Any, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        module = self._module()
        state = named_state.to_named(state, optimizer, module)
        set_optimizer_state_dict(module, optimizer, state,
                                 options=StateDictOptions(full_state_dict=True))

    def _module(self) -> Any:
        if self.trained_module is None:
            raise RuntimeError("fsdp2: optimizer state before wrap(): the strategy has not sharded a model yet")
        return self.trained_module

    def describe(self) -> str:
        return f"{self.name}, world size {self.world_size}, trainable parts {self.config.trainable}d"


def build_fsdp2(config: Any, *, device_backend: Any) -> Fsdp2Strategy:
    return Fsdp2Strategy(config, device_backend=device_backend)
