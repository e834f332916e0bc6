"""HCCL-safe collectives and the trainer across two real processes, against a strict fake HCCL.

The fake (``pgmm_ascend.testing.fake_hccl``) moves data with gloo and enforces torch_npu's HCCL dtype
and reduce-op checks. First, every collective is run twice on each rank: the plain
``torch.distributed`` call (which must fail exactly as on an Ascend host) and the ``npu`` backend's
``Collectives`` (which must succeed with the right values). Then the real trainer runs two steps
with the ``hccl_cpu`` test backend — CPU compute, HCCL's rules, the fake HCCL underneath — so DDP's
gradient all-reduce, the per-step loss/grad-norm reduction (``reduce_scalars``), RNG-state gathering
(``all_gather_object``) and the checkpoint all pass HCCL's checks. Both ranks do both in one launch to
keep the suite fast. This proves the casting logic and the trainer's communication; it says nothing
about NPU kernels, memory or HCCL performance.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from pgmm_ascend.testing.ranks import run_ranks
from pgmm_core.testing import tiny_config, write_config


def _outcome(action):
    """Run ``action``; return ``("ok", value)`` or ``("error", "ExcType: message")``."""
    try:
        value = action()
    except Exception as exc:  # the point is to record what each rank saw
        return ("error", f"{type(exc).__name__}: {exc}")
    if hasattr(value, "tolist"):
        return ("ok", (str(value.dtype), value.tolist()))
    return ("ok", value)


def _collective_scenarios(store_file: str):
    """Every collective once plain and once through the npu backend's rules.

    Rendezvous through a file store: the trainer afterwards uses torchrun's MASTER_ADDR/MASTER_PORT,
    and a rank that re-initialised early must not find this group's store still alive there.
    """
    import torch
    import torch.distributed as dist

    from pgmm_ascend.backend import HCCL_RULES
    from pgmm_ascend.testing import fake_hccl
    from pgmm_core.devices.collectives import Collectives, to_serializable

    fake_hccl.register_fake_hccl()
    dist.init_process_group("hccl", init_method=f"file://{store_file}", rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]))
    rank = dist.get_rank()
    safe = Collectives(HCCL_RULES, device=torch.device("cpu"))
    f64 = torch.tensor([0.5, 1.25], dtype=torch.float64) * (rank + 1)  # ranks: [.5, 1.25], [1, 2.5]

    def plain_all_reduce(tensor, op=dist.ReduceOp.SUM):
        work = tensor.clone()
        dist.all_reduce(work, op=op)
        return work

    def plain_reduce(tensor):
        work = tensor.clone()
        dist.reduce(work, dst=0)
        return work

    def plain_reduce_scatter(tensor):
        out = torch.empty(1, dtype=tensor.dtype)
        dist.reduce_scatter(out, list(tensor.clone().chunk(2)))
        return out

    results = {
        "backend": dist.get_backend(),
        "plain_all_reduce_f64": _outcome(lambda: plain_all_reduce(f64)),
        "plain_reduce_f64": _outcome(lambda: plain_reduce(f64)),
        "plain_reduce_scatter_f64": _outcome(lambda: plain_reduce_scatter(f64)),
        "plain_all_reduce_f32": _outcome(lambda: plain_all_reduce(f64.float())),
        "plain_avg": _outcome(lambda: plain_all_reduce(f64.float(), dist.ReduceOp.AVG)),
        "plain_band": _outcome(lambda: plain_all_reduce(torch.tensor([3]), dist.ReduceOp.BAND)),
        "plain_bool": _outcome(lambda: plain_all_reduce(torch.tensor([rank == 0, False]))),
        "plain_broadcast_f64": _outcome(lambda: (lambda t: (dist.broadcast(t, src=1), t)[1])(f64.clone())),
        "safe_all_reduce_f64": _outcome(lambda: safe.all_reduce(f64)),
        "safe_avg_f64": _outcome(lambda: safe.all_reduce(f64, op="avg")),
        "safe_max_f64": _outcome(lambda: safe.all_reduce(f64, op="max")),
        "safe_reduce_f64": _outcome(lambda: safe.reduce(f64, dst=0)),
        "safe_reduce_scatter_f64": _outcome(lambda: safe.reduce_scatter(f64)),
        "safe_avg_int": _outcome(lambda: safe.all_reduce(torch.tensor([1, 2]) + torch.tensor([rank, 3 * rank]), op="avg")),
        "safe_sum_bool": _outcome(lambda: safe.all_reduce(torch.tensor([rank == 0, False, True]))),
        "safe_avg_bool": _outcome(lambda: safe.all_reduce(torch.tensor([rank == 0, True]), op="avg")),
        "safe_max_uint8": _outcome(lambda: safe.all_reduce(torch.tensor([200, 3], dtype=torch.uint8) if rank == 0
                                                           else torch.tensor([100, 7], dtype=torch.uint8), op="max")),
        "safe_band": _outcome(lambda: safe.all_reduce(torch.tensor([3]), op="band")),
        "safe_broadcast_f64": _outcome(lambda: safe.broadcast(f64, src=1)),
        "safe_all_gather_f64": _outcome(lambda: [t.tolist() for t in safe.all_gather(f64)]),
        "reduce_scalars": _outcome(lambda: safe.reduce_scalars({"loss": 1.0 + rank, "grad_norm": 4.0 * rank})),
        "rng_gather": _outcome(lambda: [sorted(s) for s in safe.all_gather_object(
            to_serializable({"torch": torch.random.get_rng_state(), "x": torch.ones(2, dtype=torch.float64)}))]),
        "fake_calls": dict(fake_hccl.calls),
    }
    dist.destroy_process_group()
    return results


def _train(config_path: str):
    """Two trainer steps with the hccl_cpu test backend."""
    import torch.distributed as dist

    import pgmm_core
    from pgmm_ascend.testing import fake_hccl, hccl_cpu
    from pgmm_core.plugins import PluginHost

    host = PluginHost()
    host.register(hccl_cpu, name="hccl-cpu-test")
    config = pgmm_core.load_config(config_path, host=host)
    seen = {}
    original_init = dist.init_process_group

    def init_and_note(*args, **kwargs):
        original_init(*args, **kwargs)
        seen["backend"] = dist.get_backend()

    dist.init_process_group = init_and_note
    before = dict(fake_hccl.calls)
    summary = pgmm_core.train(config)
    calls = {k: v - before.get(k, 0) for k, v in fake_hccl.calls.items()}
    return {"summary": summary, "backend": seen.get("backend"), "calls": calls}


def _on_each_rank(config_path: str, store_file: str):
    return {"collectives": _collective_scenarios(store_file), "training": _train(config_path)}


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fake-hccl")
    config = tiny_config(tmp / "run", device={"type": "hccl_cpu", "threads": 1},
                         train={"max_steps": 2, "log_every": 1, "save_every": 2})
    config["data"]["val"] = []  # evaluation gathers with all_gather_object, exercised by the RNG states
    path = write_config(tmp / "config.json", config)
    return tmp / "run", run_ranks(_on_each_rank, 2, args=(str(path), str(tmp / "store")), timeout=240)


@pytest.fixture(scope="module")
def ranks(launch):
    return [result["collectives"] for result in launch[1]]


HCCL_DOUBLE = "RuntimeError: HCCL {}: Unsupported data type at::kDouble"


def test_the_fake_is_what_ran(ranks):
    for result in ranks:
        assert result["backend"] == "hccl"
        assert result["fake_calls"]["allreduce"] >= 10 and result["fake_calls"]["reduce"] >= 2


def test_plain_reductions_of_float64_fail_like_hccl(ranks):
    for result in ranks:
        assert result["plain_all_reduce_f64"] == ("error", HCCL_DOUBLE.format("allreduce"))
        assert result["plain_reduce_f64"] == ("error", HCCL_DOUBLE.format("reduce"))
        assert result["plain_reduce_scatter_f64"] == ("error", HCCL_DOUBLE.format("reduce_scatter"))
        assert result["plain_band"] == ("error", "RuntimeError: Cannot use ReduceOp.BAND with HCCL")
        assert result["plain_avg"][0] == "error"


def test_the_fake_accepts_what_hccl_accepts(ranks):
    for result in ranks:
        assert result["plain_all_reduce_f32"] == ("ok", ("torch.float32", [1.5, 3.75]))
        assert result["plain_bool"] == ("ok", ("torch.bool", [True, False]))  # widened to int32, as torch_npu does
        assert result["plain_broadcast_f64"] == ("ok", ("torch.float64", [1.0, 2.5]))  # broadcast takes float64


def _check(result, key, expected):
    assert result[key] == expected, f"{key}: got {result[key]!r}, expected {expected!r}"


def test_safe_reductions_of_float64_succeed_and_keep_the_dtype(ranks):
    for rank, result in enumerate(ranks):
        _check(result, "safe_all_reduce_f64", ("ok", ("torch.float64", [1.5, 3.75])))
        _check(result, "safe_avg_f64", ("ok", ("torch.float64", [0.75, 1.875])))
        _check(result, "safe_max_f64", ("ok", ("torch.float64", [1.0, 2.5])))
        _check(result, "safe_reduce_scatter_f64", ("ok", ("torch.float64", [[1.5], [3.75]][rank])))
    _check(ranks[0], "safe_reduce_f64", ("ok", ("torch.float64", [1.5, 3.75])))  # meaningful on dst only
    assert ranks[1]["safe_reduce_f64"][0] == "ok", ranks[1]["safe_reduce_f64"]


def test_integer_and_bool_reductions_are_exact(ranks):
    for result in ranks:
        _check(result, "safe_avg_int", ("ok", ("torch.float32", [1.5, 3.5])))  # SUM [3, 7], true division
        _check(result, "safe_sum_bool", ("ok", ("torch.bool", [True, False, True])))
        _check(result, "safe_avg_bool", ("ok", ("torch.float32", [0.5, 1.0])))
        _check(result, "safe_max_uint8", ("ok", ("torch.uint8", [200, 7])))


def test_unsupported_ops_are_refused_before_reaching_hccl(ranks):
    for result in ranks:
        status, message = result["safe_band"]
        assert status == "error" and message.startswith("PgmmError: reduce op BAND is not supported by the hccl")


def test_data_movement_and_trainer_paths(ranks):
    for result in ranks:
        assert result["safe_broadcast_f64"] == ("ok", ("torch.float64", [1.0, 2.5]))
        assert result["safe_all_gather_f64"] == ("ok", [[0.5, 1.25], [1.0, 2.5]])
        assert result["reduce_scalars"] == ("ok", {"grad_norm": 2.0, "loss": 1.5})
        assert result["rng_gather"] == ("ok", [["torch", "x"], ["torch", "x"]])


def test_trainer_ranks_communicated_through_the_fake_hccl(launch):
    for result in (r["training"] for r in launch[1]):
        assert result["backend"] == "hccl"
        assert result["summary"]["steps"] == 2
        # DDP gradients, loss/grad-norm and sample counts all went through the strict all-reduce
        assert result["calls"]["allreduce"] >= 4


def test_trainer_logs_values_reduced_across_ranks(launch):
    out, ranks = launch
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    summaries = [r["training"]["summary"] for r in ranks]
    assert summaries[0]["first_loss"] != summaries[1]["first_loss"]  # each rank saw different data ...
    for record, key in zip(records, ("first_loss", "last_loss")):  # ... and the log holds their mean
        assert record["loss"] == pytest.approx((summaries[0][key] + summaries[1][key]) / 2, rel=1e-6)
        assert record["grad_norm"] > 0


def test_trainer_checkpoint_holds_both_ranks_rng_and_no_float64(launch):
    out, _ = launch
    (checkpoint,) = sorted((out / "checkpoints").glob("step-*"))
    state = torch.load(checkpoint / "trainer_state.pt", map_location="cpu", weights_only=True)
    assert len(state["rng"]) == 2 and state["rng"][0]["torch"].dtype == torch.uint8
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # per-rank streams kept apart

    def tensors(obj):
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, dict):
            for value in obj.values():
                yield from tensors(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                yield from tensors(value)

    found = list(tensors(state))
    assert found and all(t.dtype != torch.float64 and t.device.type == "cpu" for t in found)
