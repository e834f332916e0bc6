"""Stage-2 training step with LoRA on the LLM vs the frozen-LLM step, same weights, same run.

    python benchmarks/lora_step.py [--preset proportional] [--batch 8] [--rounds 3] [--steps 2]
                                   [--rank 16] [--dropout 0.05] [--candidates frozen lora frozen_bf16 lora_bf16
                                   frozen_ckpt lora_ckpt]
                                   [--no-memory] [--json OUT]

What LoRA costs per step: ``frozen`` is pgmm's stage-2 step (LLM frozen, gradients only flow through
it to the visual tokens); ``lora`` is the same model with ``model.llm.lora`` (adapters of rank
``--rank`` on all seven attention and MLP projections, alpha = 2 x rank, dropout 0.05), built through
the same config path, so the adapters also train (their weight gradients, AdamW state). ``_bf16``:
``device.precision=bf16`` (frozen weights stored in bf16, autocast; adapters float32); ``_ckpt``:
``model.llm.grad_checkpointing`` (not run by default). Each LoRA candidate is compared with the frozen
candidate of the same precision and checkpointing.
Timing and memory as ``train_step.py`` (see ``stage2_common.py``): candidates take turns in one process
(order rotating each round), process CPU time with one torch thread, ratio = median of per-round
ratios; peak memory of each alone in a fresh subprocess, after a warm-up step. The proportional model's
LLM is 34 x 512 (openPangu-7B's widths / 8): rank 16 there is rank 128 at full width (LLaVA-1.5's
LoRA recipe), in proportion.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stage2_common as common  # noqa: E402

# name -> (device.precision, LoRA on?, model.llm.grad_checkpointing)
VARIANTS = {"frozen": ("fp32", False, False), "lora": ("fp32", True, False),
            "frozen_bf16": ("bf16", False, False), "lora_bf16": ("bf16", True, False),
            "frozen_ckpt": ("fp32", False, True), "lora_ckpt": ("fp32", True, True)}
DEFAULT_CANDIDATES = ("frozen", "lora", "frozen_bf16", "lora_bf16")
RANK = 16
DROPOUT = 0.05


def lora_settings(rank: int, dropout: float = DROPOUT) -> dict:
    return {"rank": rank, "alpha": 2 * rank, "dropout": dropout}


def build(sizes: common.Sizes, names: tuple[str, ...], rank: int, dropout: float = DROPOUT,
          seed: int = 0) -> dict[str, common.Candidate]:
    """Each candidate from the same seed: identical base weights (adapters are added last)."""
    out = {}
    for name in names:
        precision, with_lora, checkpointing = VARIANTS[name]
        model, policy = common.build_pgmm(sizes, precision, seed, checkpointing,
                                          lora=lora_settings(rank, dropout) if with_lora else None)
        out[name] = common.Candidate(name, model, lambda x, c, m=model: m(x, c).loss, policy.autocast, precision)
    for candidate in out.values():
        candidate.module.train()
        candidate.make_optimizer()
    return out


def counts(candidate: common.Candidate) -> dict[str, int]:
    params = list(candidate.module.named_parameters())
    return {"trainable": sum(p.numel() for _, p in params if p.requires_grad),
            "adapters": sum(p.numel() for n, p in params if p.requires_grad and (".lora_A." in n or ".lora_B." in n)),
            "frozen": sum(p.numel() for _, p in params if not p.requires_grad)}


def measure_memory(preset: str, name: str, batch: int) -> dict:
    runtime = common.import_runtime()
    sizes = common.PRESETS[preset]
    name, rank, dropout = (name.split(":") + [str(RANK), str(DROPOUT)])[:3]
    candidate = build(sizes, (name,), int(rank), float(dropout))[name]
    return common.step_memory(candidate, common.make_data(3 * batch, sizes.image_size), batch, runtime)


def run(args: argparse.Namespace) -> dict:
    import torch

    sizes = common.PRESETS[args.preset]
    names = tuple(args.candidates)
    info = common.machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, load {info['load_average']}",
          flush=True)
    print(f"model ({args.preset}): {sizes.describe()}; LoRA rank {args.rank}, dropout {args.dropout}", flush=True)
    candidates = build(sizes, names, args.rank, args.dropout)
    data = common.make_data(max(64, args.batch * 4), sizes.image_size)
    check_images, check_captions = data.batch(0, args.batch)
    same_work = common.same_work_check(candidates, check_images, check_captions)
    flops = {}
    for name, c in candidates.items():
        def forward_backward(c=c):
            with c.autocast():
                c.loss_fn(check_images, check_captions).backward()
        flops[name], _ = common.flops_of(forward_backward)
        c.module.zero_grad(set_to_none=True)
    for c in candidates.values():  # warm-up
        c.step(*data.batch(0, args.batch))
    turns = common.take_turns(candidates, data, args.batch, args.rounds, args.steps)
    rate = turns.rates(args.steps * args.batch)
    memory = {}
    if not args.no_memory:
        for name in names:
            memory[name] = common.memory_in_subprocess(__file__, args.preset, f"{name}:{args.rank}:{args.dropout}", args.batch,
                                                       args.threads)
            print(f"memory {name}: peak {memory[name]['peak_rss_mib']:.0f} MiB", flush=True)
    rows = {}
    for name in names:
        precision, with_lora, checkpointing = VARIANTS[name]
        base = next((b for b, (p, lo, ck) in VARIANTS.items()
                     if (p, lo, ck) == (precision, False, checkpointing) and b in names), None)
        row = {"samples_per_s": common.median(rate[name]), "samples_per_s_all": rate[name],
               "gflop_per_sample": flops[name] / args.batch / 1e9, "same_work": same_work[name],
               "train_losses": turns.losses[name], "precision": precision, "parameters": counts(candidates[name])}
        if base is not None and with_lora:
            row["frozen_baseline"] = base
            row["speed_vs_frozen"] = common.median([a / b for a, b in zip(rate[name], rate[base])])
            if memory:
                row["model_training_vs_frozen"] = (memory[name]["model_training_peak_mib"]
                                                   / memory[base]["model_training_peak_mib"])
                row["peak_vs_frozen"] = memory[name]["peak_rss_mib"] / memory[base]["peak_rss_mib"]
        if memory:
            row["memory"] = memory[name]
        rows[name] = row
    return {"benchmark": "lora_step", "machine": info, "preset": args.preset, "sizes": common.asdict(sizes),
            "batch": args.batch, "rounds": args.rounds, "steps_per_round": args.steps, "rank": args.rank,
            "lora": lora_settings(args.rank, args.dropout), "candidates": rows, "torch_threads": torch.get_num_threads()}


def table(result: dict) -> str:
    headers = ["candidate", "step speed vs frozen", "model+training memory vs frozen", "samples per CPU-s",
               "model+training peak", "peak RSS", "trainable params", "GFLOP/sample", "loss (dropout off)"]
    rows = []
    for name, r in result["candidates"].items():
        mem = r.get("memory")
        rows.append([
            f"{name} ({r['precision']})",
            f"**{r['speed_vs_frozen']:.2f}x**" if "speed_vs_frozen" in r else "-",
            f"**{r['model_training_vs_frozen']:.2f}x**" if "model_training_vs_frozen" in r else "-",
            f"{r['samples_per_s']:.2f}",
            f"{mem['model_training_peak_mib']:,.0f} MiB" if mem else "-",
            f"{mem['peak_rss_mib']:,.0f} MiB" if mem else "-",
            f"{r['parameters']['trainable']:,} ({r['parameters']['adapters']:,} adapter)",
            f"{r['gflop_per_sample']:.2f}",
            f"{r['same_work']['loss']:.6f}",
        ])
    return common.markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(common.PRESETS), default="proportional")
    parser.add_argument("--rank", type=int, default=RANK, help="LoRA rank (alpha = 2 x rank)")
    parser.add_argument("--dropout", type=float, default=DROPOUT, help="LoRA dropout")
    common.add_step_arguments(parser, tuple(VARIANTS), "lora_step")
    parser.set_defaults(rounds=3, candidates=list(DEFAULT_CANDIDATES))
    args = parser.parse_args(argv)
    if common.start_step_benchmark(args, measure_memory):
        return 0
    if args.smoke:
        args.preset, args.batch, args.rounds, args.steps, args.rank = "smoke", 2, 1, 1, 4
    result = run(args)
    path = common.write_json("lora_step" + ("_smoke" if args.smoke else ""), result, args.json)
    print(table(result))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
