"""pgmm's bf16 policy vs fp32 over a few hundred training steps: does the loss end up the same?

    python benchmarks/bf16_loss.py [--steps 300] [--batch 4] [--candidates pgmm pgmm_bf16 lavis]
                                   [--lr 1e-3] [--json OUT]

The original project trained in fp32 because fp16 overflowed. pgmm's bf16 policy stores the frozen
vision tower and LLM in bf16 and runs the step under bf16 autocast, with the trainable parts kept in
float32. Here every candidate starts from the same weights and takes the same batches of procedural
images with ~20-token captions (pgmm-data's ``synthetic_shapes``, captions naming shape, colour and
place), interleaved step by step with the same dropout seed per step; AdamW with LAVIS' parameter
groups, linear warm-up then cosine decay. Reported: the training loss averaged over the last 10% of
steps, and the loss on held-out images (dropout off, each under its own precision policy), with the
relative difference to pgmm's fp32 run; and samples per CPU-second over the whole run.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stage2_common as common  # noqa: E402


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def held_out_loss(candidate, data, batch: int) -> float:
    import torch

    candidate.module.eval()
    total, count = 0.0, 0
    with torch.no_grad(), candidate.autocast():
        for first in range(0, len(data.captions), batch):
            images = data.images[first:first + batch]
            captions = data.captions[first:first + batch]
            total += float(candidate.loss_fn(images, captions)) * len(captions)
            count += len(captions)
    candidate.module.train()
    return total / count


def run(args: argparse.Namespace) -> dict:
    import torch

    info = common.machine()
    sizes = common.PRESETS[args.preset]
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}", flush=True)
    print(f"model ({args.preset}): {sizes.describe()}", flush=True)
    candidates = common.build_candidates(sizes, tuple(args.candidates))
    for c in candidates.values():
        c.make_optimizer(lr=args.lr)
    train = common.make_data(args.images, sizes.image_size, seed=0, split="train")
    held_out = common.make_data(args.held_out, sizes.image_size, seed=0, split="val")
    start_loss = {n: held_out_loss(c, held_out, args.batch) for n, c in candidates.items()}
    losses = {n: [] for n in candidates}
    cpu = {n: 0.0 for n in candidates}
    warmup = max(1, args.steps // 10)
    for step in range(args.steps):
        images, captions = train.batch(step, args.batch)
        lr = lr_at(step, args.steps, args.lr, warmup)
        for name, c in candidates.items():
            for group in c.optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(1000 + step)  # the same dropout stream for every candidate
            start = time.process_time()
            losses[name].append(c.step(images, captions))
            cpu[name] += time.process_time() - start
        if (step + 1) % args.log_every == 0:
            print(f"step {step + 1}/{args.steps}: " + ", ".join(
                f"{n} {sum(losses[n][-args.log_every:]) / args.log_every:.4f}" for n in candidates), flush=True)
    tail = max(1, args.steps // 10)
    end_loss = {n: held_out_loss(c, held_out, args.batch) for n, c in candidates.items()}
    reference = "pgmm" if "pgmm" in candidates else next(iter(candidates))
    rows = {}
    for name in candidates:
        final = sum(losses[name][-tail:]) / tail
        ref_final = sum(losses[reference][-tail:]) / tail
        rows[name] = {
            "precision": candidates[name].precision,
            "train_loss_last": final, "train_loss_rel_diff": final / ref_final - 1,
            "held_out_start": start_loss[name], "held_out_end": end_loss[name],
            "held_out_rel_diff": end_loss[name] / end_loss[reference] - 1,
            "samples_per_cpu_s": args.steps * args.batch / cpu[name],
            "losses": losses[name],
        }
    return {"benchmark": "bf16_loss", "machine": info, "preset": args.preset, "sizes": common.asdict(sizes),
            "steps": args.steps, "batch": args.batch, "lr": args.lr, "train_images": args.images,
            "held_out_images": args.held_out, "reference": reference, "tail_steps": tail, "candidates": rows}


def table(result: dict) -> str:
    ref = result["reference"]
    headers = ["candidate", f"train loss, last {result['tail_steps']} steps", f"vs {ref}",
               "held-out loss (start -> end)", f"vs {ref}", "samples per CPU-s"]
    rows = []
    for name, r in result["candidates"].items():
        rows.append([f"{name} ({r['precision']})", f"{r['train_loss_last']:.4f}", f"**{r['train_loss_rel_diff']:+.2%}**",
                     f"{r['held_out_start']:.4f} -> {r['held_out_end']:.4f}", f"**{r['held_out_rel_diff']:+.2%}**",
                     f"{r['samples_per_cpu_s']:.2f}"])
    return common.markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(common.PRESETS), default="proportional")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--images", type=int, default=256, help="distinct training images (cycled)")
    parser.add_argument("--held-out", type=int, default=32)
    parser.add_argument("--candidates", nargs="+", default=["pgmm", "pgmm_bf16", "lavis"], choices=common.CANDIDATES)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="where to write the results (default benchmarks/results/bf16_loss.json)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few steps: checks that it runs")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.smoke:
        args.preset, args.steps, args.batch, args.images, args.held_out, args.log_every = "smoke", 4, 2, 8, 4, 2
    result = run(args)
    path = common.write_json("bf16_loss" + ("_smoke" if args.smoke else ""), result, args.json)
    print(table(result))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
