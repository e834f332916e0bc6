"""A rank that died or stopped answering is recognised from what gloo really raises (two fresh
processes; a silent peer's timeout is in test_fsdp2_setup.py), and only that: it becomes one plain message per node (exit code 7) naming the
timeout and how to go on, while any other failure keeps its traceback.

The whole story (a node SIGKILLed under torchrun, the survivor's message, ``--resume auto``) is
tests/test_node_loss.py.
"""

from __future__ import annotations

import os
import time

import pytest

from pgmm_ascend.testing.ranks import run_ranks
from pgmm_core.devices.configs import CpuConfig
from pgmm_core.devices.cpu import CpuBackend
from pgmm_core.errors import PeerLostError
from pgmm_core.guard import run_guarded
from pgmm_core.run_dir import RunDirectory
from pgmm_core.strategies import process_group
from pgmm_core.strategies.configs import DdpStrategyConfig, Fsdp2StrategyConfig
from pgmm_core.strategies.ddp import DdpStrategy
from pgmm_core.strategies.process_group import DistEnv, first_report_on_this_node, lost_peer
from pgmm_core.train import lost_peer as lost_peer_module
from pgmm_core.train.lost_peer import explain_lost_peer

GLOO_RESET = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
              "[10.0.0.2]:10159: Connection reset by peer. This is typically caused by a remote worker hanging "
              "or bugs in the application. Check the logs of the remote worker before reporting an error. GLHF!")


def _ddp(world_size: int = 2, timeout_s: float | None = 20) -> DdpStrategy:
    strategy = DdpStrategy(DdpStrategyConfig(timeout_s=timeout_s), device_backend=CpuBackend(CpuConfig(type="cpu")),
                           env=DistEnv(rank=1, local_rank=1, world_size=world_size, launched=world_size > 1))
    strategy.group_timeout = process_group.group_timeout(timeout_s)
    return strategy


def _peer_dies_during_a_collective() -> tuple[str, str | None]:
    """Rank 1 joins, then its process ends while rank 0 waits for it in an all-reduce."""
    import torch

    strategy = DdpStrategy(DdpStrategyConfig(timeout_s=30), device_backend=CpuBackend(CpuConfig(type="cpu")))
    strategy.setup()
    strategy.barrier()
    if strategy.rank == 1:
        return ("gone", None)  # its process ends now, without leaving the group: the kernel closes the connections
    started = time.monotonic()
    try:
        strategy.collectives.all_reduce(torch.ones(2))
    except Exception as exc:  # what the waiting rank sees is the point
        waited = time.monotonic() - started
        return (f"{type(exc).__name__} after {waited:.1f} s", strategy.lost_peer(exc))
    return ("no error", None)


def test_a_peer_that_dies_is_recognised_at_once():
    outcome, what = run_ranks(_peer_dies_during_a_collective, 2, timeout=60)[0]
    assert outcome.startswith("RuntimeError after")
    assert float(outcome.split()[-2]) < 30  # the closed connection, not the timeout
    assert what is not None and what.startswith("rank 0 of 2 lost contact with the other ranks: a process or node "
                                                "of this run died or stopped answering (")
    assert "A collective waits at most 30 s for the other ranks (strategy.timeout_s, else PGMM_DIST_TIMEOUT)" in what


def test_other_failures_are_not_a_lost_peer():
    assert lost_peer(RuntimeError("HCCL allreduce: Unsupported data type at::kDouble")) is None
    assert lost_peer(ValueError("Connection closed by peer")) is None  # not the backend's report
    assert lost_peer(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert _ddp().lost_peer(RuntimeError("CUDA out of memory")) is None
    assert _ddp(world_size=1).lost_peer(RuntimeError(GLOO_RESET)) is None  # one process has no peers


def test_the_backends_words_are_kept_in_one_sentence_whatever_wraps_them():
    assert lost_peer(RuntimeError(GLOO_RESET)) == "Read error [10.0.0.2]:10159: Connection reset by peer"
    try:
        try:
            raise RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 20000ms for recv "
                               "operation to complete")
        except RuntimeError as exc:
            raise KeyError("while saving") from exc
    except KeyError as wrapped:
        assert lost_peer(wrapped) == "Timed out waiting 20000ms for recv operation to complete"
    assert _ddp(timeout_s=20).lost_peer(RuntimeError(GLOO_RESET)) == (
        "rank 1 of 2 lost contact with the other ranks: a process or node of this run died or stopped answering "
        "(Read error [10.0.0.2]:10159: Connection reset by peer). A collective waits at most 20 s for the other "
        "ranks (strategy.timeout_s, else PGMM_DIST_TIMEOUT)")


def test_both_process_group_strategies_take_a_timeout():
    assert DdpStrategyConfig(timeout_s=5).timeout_s == Fsdp2StrategyConfig(timeout_s=5).timeout_s == 5
    assert DdpStrategyConfig().timeout_s is None  # PGMM_DIST_TIMEOUT, else 1800
    with pytest.raises(ValueError):
        DdpStrategyConfig(timeout_s=0)


def test_one_process_per_launch_reports(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert first_report_on_this_node("lost-peer") is True
    assert first_report_on_this_node("lost-peer") is False  # a sibling of the same launch
    assert first_report_on_this_node("other-event") is True
    (marker,) = tmp_path.glob("pgmm-lost-peer-*")
    old = time.time() - 3600
    os.utime(marker, (old, old))  # left by an earlier launch whose agent had this process id
    assert first_report_on_this_node("lost-peer") is True


def test_the_first_process_of_a_node_shows_the_message_the_others_exit_quietly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr(lost_peer_module, "QUIET_RANK_GRACE_S", 0.0)
    run_dir = RunDirectory(tmp_path / "run")

    def fails() -> int:
        with explain_lost_peer(_ddp(), run_dir):
            raise RuntimeError(GLOO_RESET)

    assert run_guarded(fails) == PeerLostError.exit_code == 7
    shown = capsys.readouterr().err
    assert shown.startswith("pgmm: error: rank 1 of 2 lost contact with the other ranks")
    assert shown.rstrip().endswith("No checkpoint was saved before it: once every node is up, start the run again.")
    assert run_guarded(fails) == 7  # the node's report is made: this process says nothing
    assert capsys.readouterr().err == ""

    def other_failure() -> int:
        with explain_lost_peer(_ddp(), run_dir):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="mat1 and mat2"):  # keeps its traceback
        run_guarded(other_failure)
