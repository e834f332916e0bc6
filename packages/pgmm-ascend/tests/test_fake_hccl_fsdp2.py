"""``fsdp2`` under HCCL's rules: the strict fake HCCL checks the tensor collectives FSDP2 issues
(all-gather of parameters into one flat tensor, reduce-scatter of gradients) like the others, and a
two-rank ``fsdp2`` training run with the ``hccl_cpu`` test backend finishes, evaluates (ranks with
different numbers of batches) and checkpoints.

What it proves: every collective the strategy issues — FSDP2's own, the gradient norm, checkpoint
gathers — passes HCCL's dtype and reduce-op checks (no float64 reduction, no ReduceOp.AVG). Not
what FSDP2 does on NPU memory or kernels; ``@pytest.mark.npu`` tests cover hardware.
"""

from __future__ import annotations

import os

import pytest
import torch

from pgmm_ascend.testing.ranks import run_ranks
from pgmm_core.testing import tiny_config, write_config


def _outcome(action):
    try:
        return ("ok", action().tolist())
    except Exception as exc:  # what each rank saw is the point
        return ("error", f"{type(exc).__name__}: {exc}")


def _tensor_collectives(store_file: str) -> dict:
    import torch.distributed as dist

    from pgmm_ascend.testing import fake_hccl

    fake_hccl.register_fake_hccl()
    dist.init_process_group("hccl", init_method=f"file://{store_file}", rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]))
    rank = dist.get_rank()

    def gather(dtype):
        out = torch.empty(4, dtype=dtype)
        dist.all_gather_into_tensor(out, torch.tensor([rank, rank + 0.5], dtype=dtype))
        return out

    def reduce_scatter(dtype, op=dist.ReduceOp.SUM):
        out = torch.empty(2, dtype=dtype)
        dist.reduce_scatter_tensor(out, torch.arange(4, dtype=dtype) * (rank + 1), op=op)
        return out

    results = {
        "gather_f64": _outcome(lambda: gather(torch.float64)),
        "gather_bf16": _outcome(lambda: gather(torch.bfloat16).float()),
        "reduce_scatter_f32": _outcome(lambda: reduce_scatter(torch.float32)),
        "reduce_scatter_f64": _outcome(lambda: reduce_scatter(torch.float64)),
        "reduce_scatter_avg": _outcome(lambda: reduce_scatter(torch.float32, dist.ReduceOp.AVG)),
    }
    dist.destroy_process_group()
    return results


def _train(config_path: str) -> dict:
    import pgmm_core
    from pgmm_ascend.testing import fake_hccl, hccl_cpu
    from pgmm_core.plugins import PluginHost

    host = PluginHost()
    host.register(hccl_cpu, name="hccl-cpu-test")
    config = pgmm_core.load_config(config_path, host=host)
    before = dict(fake_hccl.calls)
    summary = pgmm_core.train(config)
    return {"summary": summary, "calls": {k: v - before.get(k, 0) for k, v in fake_hccl.calls.items()}}


def _on_each_rank(config_path: str, store_file: str) -> dict:
    return {"collectives": _tensor_collectives(store_file), "training": _train(config_path)}


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fake-hccl-fsdp2")
    config = tiny_config(tmp / "run", device={"type": "hccl_cpu", "threads": 1}, strategy={"type": "fsdp2"},
                         train={"max_steps": 2, "log_every": 1, "save_every": 2, "accum_steps": 2,
                                "grad_clip": 1.0})
    config["model"]["llm"]["num_layers"] = 2
    # 5 eval images over 2 ranks in batches of 2: rank 0 captions 2 batches, rank 1 one batch
    config["data"].update({"batch_size": 4, "eval_batch_size": 2,
                           "val": [{"type": "synthetic_shapes", "num_samples": 5, "seed": 0}]})
    config["train"]["eval_every"] = 2
    path = write_config(tmp / "config.json", config)
    return tmp / "run", run_ranks(_on_each_rank, 2, args=(str(path), str(tmp / "store")), timeout=240)


def test_fake_hccl_checks_the_tensor_collectives_fsdp2_uses(launch):
    for rank, result in enumerate(r["collectives"] for r in launch[1]):
        assert result["gather_f64"] == ("ok", [0.0, 0.5, 1.0, 1.5])  # all-gather takes float64, as HCCL does
        assert result["gather_bf16"] == ("ok", [0.0, 0.5, 1.0, 1.5])
        assert result["reduce_scatter_f32"] == ("ok", [[0.0, 3.0], [6.0, 9.0]][rank])
        assert result["reduce_scatter_f64"] == ("error", "RuntimeError: HCCL _reduce_scatter_base: Unsupported "
                                                         "data type at::kDouble")
        assert result["reduce_scatter_avg"][0] == "error"


def test_fsdp2_trains_and_checkpoints_through_the_fake_hccl(launch):
    out, ranks = launch
    for result in (r["training"] for r in ranks):
        assert result["summary"]["steps"] == 2
        calls = result["calls"]
        assert calls["all_gather_single"] > 0  # parameters gathered per unit (and for the checkpoint)
        # gradients: one reduce-scatter per trainable unit (2 Q-Former layers, the rest of the Q-Former,
        # ln_vision, projector) per optimizer step — not per micro-batch (that would be 20)
        assert calls["_reduce_scatter_base"] == 5 * 2
        assert calls["allreduce"] >= 2  # the global gradient norm and the logged values
    metrics = [r["training"]["summary"]["metrics"] for r in ranks]
    assert metrics[0] and metrics[0] == metrics[1]  # both ranks finished the evaluation, same result
    results = sorted((out / "results").glob("*"))
    assert results, "the evaluation's captions were written"
    (checkpoint,) = sorted((out / "checkpoints").glob("step-*"))
    assert (checkpoint / "model.safetensors").is_file()
