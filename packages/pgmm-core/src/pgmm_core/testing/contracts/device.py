"""The device-backend contract: what the trainer calls instead of ``torch.cuda``.

Checks that need the hardware (setup, RNG, memory, autocast) run where the backend is available and
are skipped with its own reason elsewhere; everything else runs anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from pgmm_core.testing.contracts.base import ComponentContract


class DeviceBackendContract(ComponentContract):
    """A :class:`pgmm_core.devices.base.DeviceBackend` subclass (see its docstrings)."""

    kind: ClassVar[str] = "device"

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, host: Any, component_config: Any) -> Any:
        return cls().build(host, component_config)

    @pytest.fixture(scope="class")
    @classmethod
    def device(cls, backend: Any) -> Any:
        reason = backend.unavailable_reason()
        if reason is not None:
            pytest.skip(f"device backend '{backend.name}' is unavailable here: {reason}")
        return backend.setup(0)

    # --- anywhere -------------------------------------------------------------------------------

    def test_satisfies_the_protocol(self, host: Any, backend: Any) -> None:
        from pgmm_core.devices.base import DeviceBackend
        from pgmm_core.devices.collectives import DtypeRules

        assert isinstance(backend, DeviceBackend), "device backends subclass pgmm_core.devices.base.DeviceBackend"
        assert backend.name in host.registry("device"), f"backend.name '{backend.name}' is not a registered name"
        for attr in ("device_type", "dist_backend"):
            assert isinstance(getattr(backend, attr), str) and getattr(backend, attr)
        assert isinstance(backend.rules, DtypeRules) and backend.rules.backend == backend.dist_backend

    def test_availability_is_explained(self, host: Any, backend: Any) -> None:
        from pgmm_core.errors import DeviceUnavailableError

        reason = backend.unavailable_reason()
        assert reason is None or (isinstance(reason, str) and reason.strip())
        assert backend.is_available() is (reason is None)
        if reason is None:
            assert backend.device_count() >= 1
            return
        with pytest.raises(DeviceUnavailableError, match=backend.name):
            backend.require_available()
        with pytest.raises(DeviceUnavailableError):  # never an AttributeError from a missing runtime
            host.build("device", backend.config).setup(0)

    def test_default_precision_is_fp32(self, host: Any, backend: Any, spec: Any) -> None:
        import torch

        default = spec.config_model.model_fields["precision"].default
        assert default == "fp32"
        policy = self.rebuilt(host, backend, precision="fp32").precision_policy()
        assert policy.name == "fp32" and policy.autocast_dtype is None
        assert policy.frozen_dtype == torch.float32 and not policy.use_grad_scaler and policy.grad_scaler() is None

    def test_collectives_on_a_single_process(self, backend: Any) -> None:
        import torch

        from pgmm_core.errors import PgmmError

        c = backend.collectives
        doubles = torch.tensor([1.5, -2.0], dtype=torch.float64)
        summed = c.all_reduce(doubles, "sum")
        assert summed.dtype == torch.float64 and torch.equal(summed, doubles) and summed is not doubles
        averaged = c.all_reduce(torch.tensor([3, 4]), "avg")
        assert averaged.is_floating_point() and averaged.tolist() == [3.0, 4.0]
        assert c.all_reduce(torch.tensor([True, False]), "max").tolist() == [True, False]
        assert torch.equal(c.broadcast(doubles, src=0), doubles)
        gathered = c.all_gather(doubles)
        assert len(gathered) == 1 and torch.equal(gathered[0], doubles)
        assert c.all_gather_object({"a": 1}) == [{"a": 1}]
        assert c.reduce_scalars({"loss": 2.0, "n": 3.0}, op="sum") == {"loss": 2.0, "n": 3.0}
        c.barrier()
        with pytest.raises(PgmmError):
            c.all_reduce(doubles, "median")

    def test_to_serializable_narrows_float64_and_moves_to_cpu(self, backend: Any) -> None:
        import torch

        device = backend.device if backend.device is not None else torch.device("cpu")
        state = {"w": torch.ones(2, dtype=torch.float64, device=device), "steps": [torch.tensor(3)],
                 "pair": (torch.zeros(1, dtype=torch.bfloat16, device=device), "text"), "lr": 1e-4}
        out = backend.to_serializable(state)
        assert out["w"].dtype == torch.float32 and out["w"].device.type == "cpu"
        assert out["steps"][0].dtype == torch.int64 and isinstance(out["steps"], list)
        assert out["pair"][0].dtype == torch.bfloat16 and out["pair"][0].device.type == "cpu"
        assert isinstance(out["pair"], tuple) and out["pair"][1] == "text" and out["lr"] == 1e-4
        assert state["w"].dtype == torch.float64, "to_serializable must not modify its input"

    # --- on the device --------------------------------------------------------------------------

    def test_setup_gives_an_indexed_device(self, backend: Any, device: Any) -> None:
        import torch

        assert isinstance(device, torch.device) and device.type == backend.device_type
        assert device.type == "cpu" or device.index is not None, "use device strings with an index (npu:0)"
        assert backend.device == device
        backend.synchronize()
        assert backend.describe().strip()
        stats = backend.memory_stats()
        assert "peak_mem_mb" in stats and all(isinstance(v, float) for v in stats.values())
        backend.reset_peak_memory()

    def test_rng_state_round_trips(self, backend: Any, device: Any) -> None:
        import io
        import random

        import torch

        from pgmm_core.train import rng

        rng.seed_everything(5, backend)
        state = backend.to_serializable(rng.capture(backend))
        buffer = io.BytesIO()
        torch.save(state, buffer)  # checkpoints store it and load it with weights_only=True
        buffer.seek(0)
        state = torch.load(buffer, weights_only=True)
        first = (torch.rand(3, device=device).cpu(), torch.rand(3).tolist(), random.random())
        rng.restore(state, backend)
        again = (torch.rand(3, device=device).cpu(), torch.rand(3).tolist(), random.random())
        assert torch.equal(first[0], again[0]) and first[1:] == again[1:]

    def test_precision_policies_on_the_device(self, host: Any, backend: Any, device: Any, spec: Any) -> None:
        import typing

        import torch

        expected = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        choices = typing.get_args(spec.config_model.model_fields["precision"].annotation)
        for precision in choices:
            policy = self.rebuilt(host, backend, precision=precision).precision_policy()
            assert policy.name == precision and policy.autocast_dtype == expected[precision]
            assert policy.use_grad_scaler == (precision == "fp16")
            assert (policy.grad_scaler() is not None) == policy.use_grad_scaler
            a = torch.randn(4, 4, device=device)
            with policy.autocast():
                product = a @ a
            assert product.dtype == (expected[precision] or torch.float32)

    def test_collectives_in_a_process_group_of_one(self, backend: Any, device: Any, tmp_path: Path) -> None:
        import torch
        import torch.distributed as dist

        if not dist.is_available() or dist.is_initialized():
            pytest.skip("torch.distributed unavailable or already initialised in this process")
        store = dist.FileStore(str(tmp_path / "store"), 1)
        dist.init_process_group(backend.dist_backend, store=store, rank=0, world_size=1)
        try:
            c = backend.collectives
            doubles = torch.tensor([1.5, -2.0], dtype=torch.float64, device=device)
            summed = c.all_reduce(doubles, "sum")
            assert summed.dtype == torch.float64 and torch.equal(summed.cpu(), doubles.cpu())
            assert c.all_reduce(torch.tensor([3, 4], device=device), "avg").cpu().tolist() == [3.0, 4.0]
            assert c.all_reduce(torch.tensor([True, False], device=device), "max").cpu().tolist() == [True, False]
            assert [t.cpu().tolist() for t in c.all_gather(doubles)] == [[1.5, -2.0]]
            assert c.all_gather_object([1, "a"]) == [[1, "a"]]
            assert c.reduce_scalars({"loss": 2.0}, op="avg", device=device) == {"loss": 2.0}
        finally:
            dist.destroy_process_group()

    # --- helpers --------------------------------------------------------------------------------

    def rebuilt(self, host: Any, backend: Any, **changes: Any) -> Any:
        """Another backend of the same registered name with some config fields changed."""
        return host.build("device", self.with_fields(backend.config, **changes))
