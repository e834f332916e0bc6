"""``fsdp2`` across real processes (gloo on CPU): it trains like ``ddp``, shards what it should, and
its checkpoints resume exactly — under ``fsdp2`` and under the other strategies, both ways.

The runs: ``ddp`` and ``fsdp2`` on 2 ranks with the same global batch, seed and data (2 micro-batches
per step, clipping on, the LLM's activation checkpointing on), 4 steps with checkpoints at 2 and 4;
``fsdp2`` on 4 ranks for steps 1-2, on one node and on two (c10d rendezvous). Every resume starts from a step-2 checkpoint copied into a fresh
run directory and trains steps 3-4.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pgmm_ascend.testing.ranks import free_port, run_ranks
from pgmm_core.testing import final_weights, log_records, no_dropout_config, run_train, write_config

STEPS = 4


def _launcher(ranks: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]


def _config(out: Path, strategy: dict, *, ranks: int) -> dict:
    """Global batch 8 per step whatever the rank count: 8 / ranks / 2 micro-batches per rank."""
    config = no_dropout_config(out, strategy=strategy,
                               train={"log_every": 1, "max_steps": STEPS, "save_every": 2, "accum_steps": 2,
                                      "grad_clip": 0.05})
    config["model"]["vision"]["depth"] = 2  # two blocks per tower: sharded one by one
    config["model"]["llm"].update({"num_layers": 2, "grad_checkpointing": True})
    config["data"].update({"batch_size": 8 // ranks // 2, "val": []})
    return config


def _train(config: dict, tmp: Path, name: str, *extra: str, ranks: int = 2) -> Path:
    launcher = _launcher(ranks) if ranks > 1 else None
    result = run_train(config, tmp, *extra, name=name, launcher=launcher)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return Path(config["train"]["output_dir"])


def _resume_from_step_2(source: Path, config: dict, tmp: Path, name: str, *, ranks: int = 2) -> Path:
    """Train steps 3-4 from ``source``'s step-2 checkpoint, in a new run directory."""
    out = Path(config["train"]["output_dir"])
    shutil.copytree(source / "checkpoints" / "step-000002", out / "checkpoints" / "step-000002")
    return _train(config, tmp, name, "--resume", "auto", ranks=ranks)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp2")
    ddp = _train(_config(tmp / "ddp", {"type": "ddp"}, ranks=2), tmp, "ddp.json")
    fsdp2 = _train(_config(tmp / "fsdp2", {"type": "fsdp2"}, ranks=2), tmp, "fsdp2.json")
    return tmp, ddp, fsdp2


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in log_records(run_dir)}


def _assert_same_weights(a: dict, b: dict, *, exact: bool, atol: float = 1e-6) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)


def test_fsdp2_follows_ddps_loss_curve(runs):
    _, ddp, fsdp2 = runs
    one, two = log_records(ddp), log_records(fsdp2)
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, STEPS + 1))
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)  # the global norm of sharded grads
        assert a["grad_norm"] > 0.05  # so clipping was applied in both
    _assert_same_weights(final_weights(ddp), final_weights(fsdp2), exact=False)


@pytest.mark.slow
def test_fsdp2_with_replicated_trainable_parts_follows_ddp(runs):
    tmp, ddp, _ = runs
    replicated = _train(_config(tmp / "replicated", {"type": "fsdp2", "trainable": "replicate"}, ranks=2), tmp,
                        "replicated.json")
    for a, b in zip(log_records(ddp), log_records(replicated), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
    _assert_same_weights(final_weights(ddp), final_weights(replicated), exact=False)


def test_fsdp2_checkpoint_is_one_file_of_whole_trainable_weights(runs):
    _, ddp, fsdp2 = runs
    last = sorted((fsdp2 / "checkpoints").glob("step-*"))[-1]
    assert sorted(p.name for p in last.iterdir() if p.suffix == ".safetensors") == ["model.safetensors"]
    weights = final_weights(fsdp2)
    assert {k: v.shape for k, v in weights.items()} == {k: v.shape for k, v in final_weights(ddp).items()}
    state = torch.load(last / "trainer_state.pt", map_location="cpu", weights_only=True)["optimizer"]
    # whole tensors keyed by parameter name: loadable at any world size, under any strategy
    assert set(state["state"]) == {f"model.{k}" for k in weights}
    for name, value in state["state"].items():
        assert value["exp_avg"].shape == weights[name.removeprefix("model.")].shape


def test_fsdp2_resume_is_bitwise(runs):
    tmp, _, fsdp2 = runs
    config = _config(tmp / "fsdp2-resumed", {"type": "fsdp2"}, ranks=2)
    resumed = _resume_from_step_2(fsdp2, config, tmp, "fsdp2-resumed.json")
    assert _losses(resumed) == {s: v for s, v in _losses(fsdp2).items() if s > 2}
    _assert_same_weights(final_weights(fsdp2), final_weights(resumed), exact=True)


@pytest.fixture(scope="module")
def four_ranks(runs):
    """``fsdp2`` on 4 ranks (the same global batch), steps 1-2."""
    tmp = runs[0]
    config = _config(tmp / "fsdp2-4", {"type": "fsdp2"}, ranks=4)
    config["train"]["max_steps"] = 2
    return _train(config, tmp, "fsdp2-4.json", ranks=4)


def test_fsdp2_checkpoint_resumes_under_ddp_and_back(runs, four_ranks):
    """fsdp2 on 4 ranks -> ddp on 2; ddp on 2 -> fsdp2 on 2. Per-rank means of other sizes differ a
    little, and AdamW magnifies that in weights whose gradients are near zero."""
    tmp, ddp, fsdp2 = runs
    for step, loss in _losses(four_ranks).items():
        assert loss == pytest.approx(_losses(ddp)[step], rel=2e-3)
    as_ddp = _resume_from_step_2(four_ranks, _config(tmp / "to-ddp", {"type": "ddp"}, ranks=2), tmp, "to-ddp.json")
    _assert_same_weights(final_weights(ddp), final_weights(as_ddp), exact=False, atol=2e-3)
    as_fsdp2 = _resume_from_step_2(ddp, _config(tmp / "to-fsdp2", {"type": "fsdp2"}, ranks=2), tmp,
                                   "to-fsdp2.json")
    _assert_same_weights(final_weights(fsdp2), final_weights(as_fsdp2), exact=False)  # same world size
    for run, rel in ((as_ddp, 2e-3), (as_fsdp2, 1e-5)):
        assert sorted(_losses(run)) == [3, 4]
        for step, loss in _losses(run).items():
            assert loss == pytest.approx(_losses(ddp)[step], rel=rel)


def test_fsdp2_checkpoint_resumes_in_one_process(runs, four_ranks):
    """fsdp2 on 4 ranks -> one process, the same global batch."""
    tmp, ddp, _ = runs
    single = _resume_from_step_2(four_ranks, _config(tmp / "to-single", {"type": "single"}, ranks=1), tmp,
                                 "to-single.json", ranks=1)
    for step, loss in _losses(single).items():
        assert loss == pytest.approx(_losses(ddp)[step], rel=2e-3)
    _assert_same_weights(final_weights(ddp), final_weights(single), exact=False, atol=2e-3)
    last = sorted((single / "checkpoints").glob("step-*"))[-1]
    state = torch.load(last / "trainer_state.pt", map_location="cpu", weights_only=True)["optimizer"]
    assert set(state["state"]) == set(range(len(final_weights(single))))  # renumbered for one process
    assert all(int(s["step"]) == STEPS for s in state["state"].values())  # went on from fsdp2's AdamW state


def _sharding_report(config_path: str) -> dict:
    """Wrap the tiny model with fsdp2 on this rank; report how its parameters are held."""
    import pgmm_core
    from pgmm_core.model import build_model
    from pgmm_core.objectives.base import ObjectiveModule

    config = pgmm_core.load_config(config_path)
    strategy = config.host.build("strategy", config.strategy, device_backend=_cpu_backend())
    strategy.setup()
    try:
        model = build_model(config)
        total = {name: p.numel() for name, p in model.named_parameters()}
        strategy.wrap(ObjectiveModule(model, config.host.build("objective", config.objective)))
        held = {name: p.to_local().numel() for name, p in model.named_parameters()}
        kinds = {name: type(p).__name__ for name, p in model.named_parameters()}
        units = sorted(f"{p.name}:{len(p.blocks)}" for p in strategy.parts)
        return {"total": total, "held": held, "kinds": kinds, "units": units}
    finally:
        strategy.teardown()


def _cpu_backend():
    from pgmm_core.devices.configs import CpuConfig
    from pgmm_core.devices.cpu import CpuBackend

    return CpuBackend(CpuConfig(type="cpu"))


def test_every_block_of_the_frozen_towers_is_sharded(tmp_path):
    config = _config(tmp_path / "unused", {"type": "fsdp2"}, ranks=2)
    path = write_config(tmp_path / "config.json", config)
    ranks = run_ranks(_sharding_report, 2, args=(str(path),), timeout=120)
    report = ranks[0]
    # the parts found from the module tree, with their block counts (no component is named in the code)
    assert report["units"] == ["model.connector:2", "model.llm:2", "model.ln_vision:0", "model.projector:0",
                               "model.vision:2"]
    assert set(report["kinds"].values()) == {"DTensor"}
    for name, total in report["total"].items():
        assert ranks[0]["held"][name] + ranks[1]["held"][name] == total, name  # each element on one rank
    frozen = [n for n in report["total"] if n.startswith(("vision.", "llm."))]
    frozen_total = sum(report["total"][n] for n in frozen)
    largest = max(report["total"][n] for n in frozen)
    for rank in ranks:
        assert sum(rank["held"][n] for n in frozen) <= 1.1 * frozen_total / 2 + largest


def _node(config_path: Path, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=2",
               "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=pgmm-two-nodes",
               "-m", "pgmm_core.train", "--config", str(config_path)]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_two_nodes_follow_the_one_node_loss_curve(runs, four_ranks):
    """2 "nodes" x 2 processes meeting through a c10d rendezvous on localhost = 4 ranks on one node."""
    tmp = runs[0]
    config = _config(tmp / "two-nodes", {"type": "fsdp2", "timeout_s": 60}, ranks=4)
    config["train"]["max_steps"] = 2
    path = write_config(tmp / "two-nodes.json", config)
    port = free_port()
    nodes = [_node(path, port, tmp / f"node{i}.log") for i in range(2)]
    for i, node in enumerate(nodes):
        assert node.wait(timeout=240) == 0, (tmp / f"node{i}.log").read_text()[-4000:]
    assert "world size 4" in (tmp / "node0.log").read_text() + (tmp / "node1.log").read_text()
    assert _losses(tmp / "two-nodes") == _losses(four_ranks)
    _assert_same_weights(final_weights(four_ranks), final_weights(tmp / "two-nodes"), exact=True)
