"""Per-rank memory of ``ddp`` and ``fsdp2`` at 1, 2 and 4 ranks (gloo on CPU), equal global batch.

Each configuration runs in fresh processes (``pgmm_ascend.testing.ranks``): the proportional model
as the trainer builds it, wrapped by the strategy, AdamW, a warm-up step, then ``--steps`` measured
steps. Per rank it reports the bytes of frozen and trainable weights the rank holds (its shards
under ``fsdp2``), the AdamW state it holds, and the peak resident memory of the measured steps
(``VmHWM`` after resetting it) minus the resident size before the model was built.

    python benchmarks/sharding_memory.py            # proportional model (minutes)
    python benchmarks/sharding_memory.py --smoke    # tiny sizes, to check that it works
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stage2_common import PRESETS, build_pgmm, make_data  # noqa: E402

from pgmm_ascend.testing.ranks import run_ranks  # noqa: E402


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _one_configuration(preset: str, strategy_name: str, global_batch: int, steps: int) -> dict:
    import torch

    from pgmm_core.devices.configs import CpuConfig
    from pgmm_core.devices.cpu import CpuBackend
    from pgmm_core.strategies.configs import DdpStrategyConfig, Fsdp2StrategyConfig
    from pgmm_core.strategies.ddp import DdpStrategy
    from pgmm_core.strategies.fsdp2 import Fsdp2Strategy

    torch.set_num_threads(1)
    backend = CpuBackend(CpuConfig(type="cpu", threads=1))
    strategy = (Fsdp2Strategy(Fsdp2StrategyConfig(), device_backend=backend) if strategy_name == "fsdp2"
                else DdpStrategy(DdpStrategyConfig(), device_backend=backend))
    strategy.setup()
    try:
        base_kib = _rss_kib("VmRSS")
        sizes = PRESETS[preset]
        model, _ = build_pgmm(sizes)
        module = strategy.wrap(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4)
        batch = global_batch // strategy.world_size
        data = make_data(global_batch * (steps + 1), sizes.image_size)

        def step(index: int) -> None:
            images, captions = data.batch(index * strategy.world_size + strategy.rank, batch)
            with strategy.accumulation(sync=True):
                strategy.backward(module(images, captions).loss)
            strategy.clip_gradients(optimizer, trainable, 1.0)
            strategy.optimizer_step(optimizer)

        step(0)  # warm-up: AdamW state allocated
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM
        for index in range(1, steps + 1):
            step(index)
        peak_kib = _rss_kib("VmHWM")

        def held(tensor: torch.Tensor) -> int:
            local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
            return local.numel() * local.element_size()

        frozen = sum(held(p) for p in model.parameters() if not p.requires_grad)
        largest_block = max(sum(q.numel() * q.element_size() for q in b.parameters())
                            for b in model.llm.model.model.layers)
        return {
            "frozen_total": sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad),
            "frozen_held": frozen,
            "largest_block": largest_block,
            "trainable_held": sum(held(p) for p in trainable),
            "optimizer_held": sum(held(t) for s in optimizer.state.values() for t in s.values()
                                  if isinstance(t, torch.Tensor) and t.dim() > 0),
            "peak_mib": (peak_kib - base_kib) / 1024,
        }
    finally:
        strategy.teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="proportional", choices=sorted(PRESETS))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one measured step")
    parser.add_argument("--ranks", default="1,2,4")
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    preset, steps = ("smoke", 1) if args.smoke else (args.preset, args.steps)
    rows = []
    for world in (int(r) for r in args.ranks.split(",")):
        for name in ("ddp", "fsdp2"):
            per_rank = run_ranks(_one_configuration, world, args=(preset, name, args.global_batch, steps),
                                 timeout=3600)
            first = per_rank[0]
            rows.append({"ranks": world, "strategy": name, **first,
                         "peak_mib_max": max(r["peak_mib"] for r in per_rank)})
            print(f"{world} rank(s) {name}: done", file=sys.stderr)
    mib = 1024 * 1024
    print(f"| ranks | strategy | frozen held / total (MiB) | goal 1.1*total/N + block | trainable + AdamW held (MiB) "
          f"| peak RSS per rank (MiB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        goal = 1.1 * r["frozen_total"] / r["ranks"] + r["largest_block"]
        print(f"| {r['ranks']} | {r['strategy']} | {r['frozen_held'] / mib:.1f} / {r['frozen_total'] / mib:.1f} "
              f"| {goal / mib:.1f} | {(r['trainable_held'] + r['optimizer_held']) / mib:.1f} "
              f"| {r['peak_mib_max']:.0f} |")
    out = Path(__file__).resolve().parent / "results" / f"sharding_memory{'_smoke' if args.smoke else ''}.json"
    out.write_text(json.dumps({"preset": preset, "global_batch": args.global_batch, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
