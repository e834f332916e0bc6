"""The strategy contract: one process on the CPU backend trains exactly as plain PyTorch does.

The strategy is set up as one process of a one-process launch (torchrun's variables in the
environment, gloo underneath), then takes two accumulated micro-batches and one optimizer step on
a small model. Its gradients, gradient norm and updated weights must equal those of the same step
in plain PyTorch, and the state it hands over for checkpoints must load back into a fresh model
wrapped by the same strategy.

The model is wrapped before its optimizer is built, as the trainer does: a sharding strategy
replaces the parameters it shards (with ``DTensor`` s, compared here as whole tensors).
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pgmm_core.testing.contracts.base import ComponentContract


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _whole(tensor: Any) -> Any:
    """A sharded tensor (``DTensor``) gathered whole; any other tensor as it is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def _collective_worker_threads() -> int:
    """How many gloo worker threads this process runs (Linux: named in ``/proc/self/task``)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        pytest.skip("counting a process's native threads needs /proc (Linux)")
    names = []
    for task in tasks.iterdir():
        with contextlib.suppress(OSError):  # a thread that ended while listing
            names.append((task / "comm").read_text().strip())
    return sum(name.startswith("pt_gloo") for name in names)


def _tiny_model() -> Any:
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.frozen = nn.Linear(4, 4)
            self.head = nn.Linear(4, 2)
            self.frozen.requires_grad_(False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.frozen(x))).pow(2).mean()

        def trainable_state_dict(self) -> dict[str, torch.Tensor]:
            names = {n for n, p in self.named_parameters() if p.requires_grad}
            return {k: v for k, v in self.state_dict().items() if k in names}

    torch.manual_seed(0)
    return Tiny()


class StrategyContract(ComponentContract):
    """A :class:`pgmm_core.strategies.base.Strategy` subclass (see its docstrings)."""

    kind: ClassVar[str] = "strategy"
    max_norm: ClassVar[float | None] = 0.05
    """Clipping applied in the training check (small enough to clip)."""

    def build_context(self) -> dict[str, Any]:
        from pgmm_core.devices.configs import CpuConfig
        from pgmm_core.devices.cpu import CpuBackend

        return {"device_backend": CpuBackend(CpuConfig(type="cpu"))}

    @pytest.fixture
    def one_process_launch(self, monkeypatch: Any) -> None:
        """The environment torchrun gives the only process of a one-process job."""
        for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                            "MASTER_PORT": str(_free_port())}.items():
            monkeypatch.setenv(name, value)

    def test_satisfies_the_protocol(self, host: Any, component_config: Any, one_process_launch: None) -> None:
        from pgmm_core.strategies.base import Strategy

        context = self.build_context()
        strategy = self.build(host, component_config)
        assert isinstance(strategy, Strategy), "strategies subclass pgmm_core.strategies.base.Strategy"
        assert isinstance(strategy.name, str) and strategy.name
        strategy = host.build(self.kind, component_config, **context)
        assert strategy.collectives is context["device_backend"].collectives, (
            "a strategy uses its device backend's collectives, not its own")

    def test_one_step_equals_plain_pytorch(self, host: Any, component_config: Any, one_process_launch: None) -> None:
        import torch

        batches = [torch.randn(3, 4, generator=torch.Generator().manual_seed(i)) for i in range(2)]
        reference = _tiny_model()
        expected_optimizer = torch.optim.AdamW([p for p in reference.parameters() if p.requires_grad], lr=0.1)
        for batch in batches:
            (reference(batch) / 2).backward()
        expected_norm = float(torch.nn.utils.clip_grad_norm_(reference.head.parameters(), self.max_norm))
        expected_grads = [p.grad.clone() for p in reference.head.parameters()]
        expected_optimizer.step()

        strategy = self.build(host, component_config)
        device = strategy.setup()
        try:
            assert isinstance(device, torch.device) and device.type == "cpu"
            assert strategy.data_shard() == (1, 0) and strategy.is_main
            model = _tiny_model()
            module = strategy.wrap(model)
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trainable, lr=0.1)
            for i, batch in enumerate(batches):
                with strategy.accumulation(sync=i == len(batches) - 1):
                    strategy.backward(module(batch) / 2)
            norm = strategy.clip_gradients(optimizer, trainable, self.max_norm)
            assert norm == pytest.approx(expected_norm, rel=1e-6)
            for got, want in zip([_whole(p.grad) for p in model.head.parameters()], expected_grads):
                torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
            strategy.optimizer_step(optimizer)
            assert all(p.grad is None for p in trainable), "optimizer_step clears the gradients"
            for got, want in zip(model.head.parameters(), reference.head.parameters()):
                torch.testing.assert_close(_whole(got), want, rtol=1e-6, atol=1e-7)

            weights, state = strategy.model_state(model), strategy.optimizer_state(optimizer)
            assert set(weights) == {"head.weight", "head.bias"}
            assert all(w.device.type == "cpu" for w in weights.values())
            assert strategy.trainable_shapes(model) == {k: tuple(v.shape) for k, v in weights.items()}
            fresh = _tiny_model()
            strategy.wrap(fresh)
            fresh_optimizer = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=0.1)
            assert strategy.load_model_state(fresh, weights) == []
            strategy.load_optimizer_state(fresh_optimizer, state)
            assert torch.equal(_whole(fresh.head.weight), _whole(model.head.weight))
            assert fresh_optimizer.state_dict()["state"][0]["step"] == 1
            strategy.barrier()
        finally:
            strategy.teardown()

    def test_teardown_frees_the_process_group(self, host: Any, component_config: Any,
                                              one_process_launch: None) -> None:
        """Once the trainer has let go of the model, teardown frees every process group the strategy
        joined or made, with its worker threads. A group left alive until interpreter exit can abort
        a finished run there (a worker releasing a collective's tensors cannot take the GIL)."""
        import torch

        before = _collective_worker_threads()
        strategy = self.build(host, component_config)
        strategy.setup()
        try:
            model = _tiny_model()
            module = strategy.wrap(model)
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trainable, lr=0.1)
            with strategy.accumulation(sync=True):
                strategy.backward(module(torch.ones(2, 4)))
            strategy.clip_gradients(optimizer, trainable, self.max_norm)
            strategy.optimizer_step(optimizer)
            strategy.barrier()
        finally:
            model = module = trainable = optimizer = None
            strategy.teardown()
        assert _collective_worker_threads() == before, (
            "process-group worker threads still run after teardown: something the strategy keeps "
            "(a wrapper, a device mesh) still references a group")
