"""Stage-2 training step: pgmm vs a LAVIS-style baseline vs transformers' BLIP-2, same weights.

    python benchmarks/train_step.py [--preset proportional] [--batch 8] [--rounds 5] [--steps 2]
                                    [--candidates pgmm lavis hf pgmm_bf16 ...] [--no-memory] [--json OUT]

Speed: every candidate lives in this one process and they take turns (the order rotates each
round), ``--steps`` training steps per turn on the same batches, so that load from other jobs on the
machine hits all of them alike; the speed ratio is the median over rounds of the per-round ratio.
Time is process CPU time with one torch thread by default: on cores shared with other jobs, wall
time of a multi-threaded run measures the neighbours (a descheduled OpenMP thread stalls every op).
Memory: each candidate runs alone in a fresh subprocess; after a warm-up step (AdamW's state
allocated), the peak resident set size is reset (``/proc/self/clear_refs``) and read back
(``VmHWM``) across two more steps — so the peak includes the weights, the optimizer state and the
step's activations, and nothing from building the other candidates. "model+training" memory is that
peak minus the resident size of the imported libraries before any model exists (what an
accelerator's allocator would report as its peak); the total peak RSS is shown as well.
Candidates: ``pgmm`` (device.precision fp32), ``pgmm_bf16`` (bf16 policy: frozen towers stored in
bf16, autocast), ``pgmm_ckpt``/``pgmm_bf16_ckpt`` (the same with ``model.llm.grad_checkpointing``),
``lavis`` and ``hf`` (the baselines, fp32; see ``stage2_common.py``).
Before timing, each candidate's loss and trainable-gradient norm on one batch with dropout off are
reported: equal values show that the same work is done. FLOPs come from ``torch.utils.flop_counter``
(plus the CPU flash-attention kernels it does not know).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stage2_common as common  # noqa: E402

BASELINES = ("lavis", "hf")


def measure_memory(preset: str, name: str, batch: int) -> dict:
    runtime = common.import_runtime()
    sizes = common.PRESETS[preset]
    candidate = common.build_candidates(sizes, (name,))[name]
    return common.step_memory(candidate, common.make_data(3 * batch, sizes.image_size), batch, runtime)


def run(args: argparse.Namespace) -> dict:
    import torch

    sizes = common.PRESETS[args.preset]
    names = tuple(args.candidates)
    info = common.machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, load {info['load_average']}",
          flush=True)
    print(f"model ({args.preset}): {sizes.describe()}", flush=True)
    candidates = common.build_candidates(sizes, names)
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
    for name, c in candidates.items():  # warm-up
        c.step(*data.batch(0, args.batch))

    turns = common.take_turns(candidates, data, args.batch, args.rounds, args.steps)
    rate = turns.rates(args.steps * args.batch)
    wall_rate = turns.rates(args.steps * args.batch, wall=True)
    losses = turns.losses
    memory = {}
    if not args.no_memory:
        for name in names:
            memory[name] = common.memory_in_subprocess(__file__, args.preset, name, args.batch, args.threads)
            print(f"memory {name}: peak {memory[name]['peak_rss_mib']:.0f} MiB", flush=True)

    baselines = [b for b in BASELINES if b in names]
    best = max(baselines, key=lambda b: common.median(rate[b])) if baselines else None
    rows = {}
    for name in names:
        row = {"samples_per_s": common.median(rate[name]), "samples_per_s_all": rate[name],
               "wall_samples_per_s": common.median(wall_rate[name]),
               "gflop_per_sample": flops[name] / args.batch / 1e9, "same_work": same_work[name],
               "train_losses": losses[name], "precision": candidates[name].precision}
        if best is not None:
            row["speed_vs_best_baseline"] = common.median([a / b for a, b in zip(rate[name], rate[best])])
        if memory:
            row["memory"] = memory[name]
            if best is not None:
                row["peak_vs_best_baseline"] = memory[name]["peak_rss_mib"] / memory[best]["peak_rss_mib"]
                row["model_training_vs_best_baseline"] = (memory[name]["model_training_peak_mib"]
                                                          / memory[best]["model_training_peak_mib"])
        rows[name] = row
    return {"benchmark": "train_step", "machine": info, "preset": args.preset, "sizes": common.asdict(sizes),
            "batch": args.batch, "rounds": args.rounds, "steps_per_round": args.steps, "best_baseline": best,
            "candidates": rows, "torch_threads": torch.get_num_threads()}


def table(result: dict) -> str:
    best = result["best_baseline"]
    headers = ["candidate", f"speed vs {best}", f"model+training memory vs {best}", f"peak RSS vs {best}",
               "samples per CPU-s", "model+training peak", "peak RSS", "GFLOP/sample", "loss (dropout off)",
               "grad norm"]
    rows = []
    for name, r in result["candidates"].items():
        mem = r.get("memory")
        rows.append([
            f"{name} ({r['precision']})",
            f"**{r['speed_vs_best_baseline']:.2f}x**" if "speed_vs_best_baseline" in r else "-",
            f"**{r['model_training_vs_best_baseline']:.2f}x**" if "model_training_vs_best_baseline" in r else "-",
            f"{r['peak_vs_best_baseline']:.2f}x" if "peak_vs_best_baseline" in r else "-",
            f"{r['samples_per_s']:.2f}",
            f"{mem['model_training_peak_mib']:,.0f} MiB" if mem else "-",
            f"{mem['peak_rss_mib']:,.0f} MiB" if mem else "-",
            f"{r['gflop_per_sample']:.2f}",
            f"{r['same_work']['loss']:.6f}",
            f"{r['same_work']['grad_norm']:.6f}",
        ])
    return common.markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(common.PRESETS), default="proportional")
    common.add_step_arguments(parser, common.CANDIDATES, "train_step")
    args = parser.parse_args(argv)
    if common.start_step_benchmark(args, measure_memory):
        return 0
    if args.smoke:
        args.preset, args.batch, args.rounds, args.steps = "smoke", 2, 1, 1
    result = run(args)
    path = common.write_json("train_step" + ("_smoke" if args.smoke else ""), result, args.json)
    print(table(result))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
