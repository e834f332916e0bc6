"""``fsdp2`` refuses what it cannot do with one clear error at start, and never waits forever.

In one process (no group needed for the refusals); the timeout check uses two fresh processes.
"""

from __future__ import annotations

import time

import pytest

from pgmm_ascend.testing.ranks import run_ranks
from pgmm_core.devices.base import PrecisionPolicy
from pgmm_core.devices.configs import CpuConfig
from pgmm_core.devices.cpu import CpuBackend
from pgmm_core.errors import ConfigError
from pgmm_core.strategies.configs import Fsdp2StrategyConfig
from pgmm_core.strategies.fsdp2 import Fsdp2Strategy
from pgmm_core.strategies.process_group import DEFAULT_TIMEOUT_S, DistEnv, group_timeout

LAUNCHED = DistEnv(rank=0, local_rank=0, world_size=2, launched=True)


def _strategy(backend=None, env=LAUNCHED, **config):
    return Fsdp2Strategy(Fsdp2StrategyConfig(**config), device_backend=backend or CpuBackend(CpuConfig(type="cpu")),
                         env=env)


def test_a_torch_without_fully_shard_is_refused_at_start(monkeypatch):
    import torch.distributed.fsdp

    monkeypatch.delattr(torch.distributed.fsdp, "fully_shard")
    with pytest.raises(ConfigError, match=r"needs torch.distributed.fsdp.fully_shard \(torch 2.6 or newer\); "
                                          r"this torch is 2\."):
        _strategy().setup()


def test_a_backend_without_sharding_is_refused_at_start():
    class NoSharding(CpuBackend):
        def sharding_unsupported(self):
            return "torch_npu 2.5.1 has no FSDP2 support"

    with pytest.raises(ConfigError, match="'fsdp2' is not available on cpu: torch_npu 2.5.1 has no FSDP2 support"):
        _strategy(NoSharding(CpuConfig(type="cpu"))).setup()


def test_fp16_with_its_grad_scaler_is_refused_at_start():
    class Fp16(CpuBackend):
        def precision_policy(self):
            return PrecisionPolicy.for_precision("fp16", "cpu")

    with pytest.raises(ConfigError, match="does not train with the fp16 grad scaler"):
        _strategy(Fp16(CpuConfig(type="cpu"))).setup()


def test_without_torchrun_it_says_how_to_launch():
    with pytest.raises(ConfigError, match="needs a torchrun launch"):
        _strategy(env=DistEnv()).setup()


def test_the_timeout_is_configurable_with_a_stated_default(monkeypatch):
    monkeypatch.delenv("PGMM_DIST_TIMEOUT", raising=False)
    assert group_timeout().total_seconds() == DEFAULT_TIMEOUT_S == 1800
    monkeypatch.setenv("PGMM_DIST_TIMEOUT", "60")
    assert group_timeout().total_seconds() == 60
    assert group_timeout(5).total_seconds() == 5  # strategy.timeout_s wins
    with pytest.raises(ValueError):
        Fsdp2StrategyConfig(timeout_s=0)


def _wait_for_a_silent_peer() -> tuple[str, float, str | None]:
    """Rank 1 joins and then never takes part; rank 0's all-reduce must fail after timeout_s."""
    import torch

    strategy = _strategy(env=DistEnv.from_environ(), timeout_s=2)
    strategy.setup()
    if strategy.rank == 1:
        time.sleep(6)
        return ("silent", 0.0, None)
    started = time.monotonic()
    try:
        strategy.collectives.all_reduce(torch.ones(2))
    except Exception as exc:  # what the waiting rank sees is the point
        return (type(exc).__name__, time.monotonic() - started, strategy.lost_peer(exc))
    return ("no error", time.monotonic() - started, None)


def test_a_collective_with_a_silent_peer_fails_after_the_timeout():
    (outcome, waited, what), _ = run_ranks(_wait_for_a_silent_peer, 2, timeout=60)
    assert outcome != "no error"
    assert 1.5 <= waited < 6, waited
    # recognised as a lost peer: the run ends with one message, not a traceback (test_lost_peer.py)
    assert what is not None and "stopped answering (Timed out waiting 2000ms" in what, what
    assert "A collective waits at most 2 s for the other ranks" in what
