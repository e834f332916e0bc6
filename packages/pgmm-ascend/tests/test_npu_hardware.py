"""On a real Ascend host: the tiny demo trains on the NPU, HCCL behaves as the fakes assume.

Marked ``npu`` and skipped unless torch_npu imports and ``torch.npu.is_available()``; the skip reason
is the backend's own explanation of why not. Run them on an Ascend host with
``python -m pytest -m npu packages/pgmm-ascend``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from pgmm_ascend.configs import NpuConfig
from pgmm_ascend.testing.ranks import run_ranks
from pgmm_core.testing import tiny_config, write_config


def _why_no_npu() -> str | None:
    from pgmm_ascend.backend import NpuBackend

    return NpuBackend(NpuConfig()).unavailable_reason()


_REASON = _why_no_npu()
pytestmark = [pytest.mark.npu, pytest.mark.skipif(_REASON is not None, reason=f"needs a real Ascend NPU: {_REASON}")]


def _train(tmp_path, *, precision="fp32", launcher=(), steps=4):
    run_dir = tmp_path / f"run-{precision}"
    config = tiny_config(run_dir, device={"type": "npu", "precision": precision},
                         train={"max_steps": steps, "log_every": 1, "save_every": steps})
    config["data"]["val"] = []
    path = write_config(tmp_path / f"{precision}.json", config)
    result = subprocess.run([sys.executable, *launcher, "-m", "pgmm_core.train", "--config", str(path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir, result


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_tiny_demo_trains_in_fp32_on_one_npu(tmp_path):
    import torch

    run_dir, result = _train(tmp_path)
    assert "device: npu (npu:0)" in result.stdout + result.stderr and "torch_npu" in result.stdout + result.stderr
    losses = _losses(run_dir)
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    (checkpoint,) = sorted((run_dir / "checkpoints").glob("step-*"))
    state = torch.load(checkpoint / "trainer_state.pt", map_location="cpu", weights_only=True)
    assert state["rng"][0]["device"] is not None


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_tiny_demo_is_finite_in_mixed_precision(tmp_path, precision):
    import torch
    import torch_npu  # noqa: F401  (registers torch.npu)

    if precision == "bf16" and not torch.npu.is_bf16_supported():
        pytest.skip(f"{torch.npu.get_device_name(0)} does not support bf16")
    run_dir, _ = _train(tmp_path, precision=precision)
    assert all(math.isfinite(x) for x in _losses(run_dir))


def test_tiny_demo_on_two_npus_with_hccl(tmp_path):
    import torch
    import torch_npu  # noqa: F401

    if torch.npu.device_count() < 2:
        pytest.skip("needs two visible NPUs")
    run_dir, _ = _train(tmp_path, launcher=("-m", "torch.distributed.run", "--nproc_per_node=2"))
    assert all(math.isfinite(x) for x in _losses(run_dir))


def _hccl_behaviour():
    import torch
    import torch.distributed as dist

    from pgmm_ascend.backend import NpuBackend

    backend = NpuBackend(NpuConfig())
    device = backend.setup(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("hccl", device_id=device)
    f64 = torch.tensor([0.5, 1.25], dtype=torch.float64, device=device) * (dist.get_rank() + 1)
    try:
        dist.all_reduce(f64.clone())
        torch.npu.synchronize()
        plain = "ok"
    except RuntimeError as exc:
        plain = str(exc)
    safe = backend.collectives.all_reduce(f64)
    ints = backend.collectives.all_reduce(torch.tensor([1, 2], device=device) + dist.get_rank() * 2, op="avg")
    dist.destroy_process_group()
    return {"plain": plain, "safe": [str(safe.dtype), safe.cpu().tolist()], "ints": ints.cpu().tolist()}


def test_real_hccl_rejects_float64_and_the_safe_collectives_do_not():
    import torch
    import torch_npu  # noqa: F401

    if torch.npu.device_count() < 2:
        pytest.skip("needs two visible NPUs")
    for result in run_ranks(_hccl_behaviour, 2, timeout=300):
        # Ascend 950 and newer reduce float64 natively; 910/910B/910C refuse it as the fake does.
        assert result["plain"] == "ok" or "Unsupported data type at::kDouble" in result["plain"]
        assert result["safe"] == ["torch.float64", [1.5, 3.75]]
        assert result["ints"] == [2.0, 3.0]
