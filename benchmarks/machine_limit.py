"""How close pgmm's training step comes to this machine's peak: achieved FLOP/s over a large matmul's.

    python benchmarks/machine_limit.py [--preset proportional] [--batch 8] [--rounds 3] [--matmul 4096]
                                       [--precision fp32 bf16] [--threads 1] [--json OUT]

FLOPs of one step (forward + backward) are counted with ``torch.utils.flop_counter`` (plus the CPU
flash-attention kernels it does not know). In each round a ``--matmul``-sized square matmul of the
step's precision is timed (best of 3) right before pgmm's training steps, both in process CPU time
with the same thread count, so the fraction compares like with like under the same machine load.
A ``torch.profiler`` trace of one step then says where the time goes: matrix multiplies (and their
FLOP/s at the model's shapes) vs everything else (normalisation, activations, softmax, copies,
the optimizer, Python).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stage2_common as common  # noqa: E402

# Profiler op name -> flop-counter op name, for the ops that do matrix work.
MATRIX_OPS = {
    "aten::mm": "aten.mm", "aten::addmm": "aten.addmm", "aten::bmm": "aten.bmm", "aten::baddbmm": "aten.baddbmm",
    "aten::convolution_backward": "aten.convolution_backward",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "aten._scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward":
        "aten._scaled_dot_product_flash_attention_for_cpu_backward",
}
CONV_NAMES = ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution")
# Ordered: the first rule whose key occurs in the profiler's op name decides.
CATEGORIES = (
    ("autograd engine / Python", ("autograd::engine",)),
    ("optimizer", ("Optimizer", "_foreach", "adamw", "aten::lerp", "aten::addcdiv", "aten::addcmul", "aten::sqrt")),
    ("matrix multiplies", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "convolution",
                           "flash_attention")),
    ("softmax / loss", ("softmax", "nll_loss", "cross_entropy", "logsumexp")),
    ("normalisation", ("layer_norm", "rsqrt", "aten::pow", "aten::mean", "aten::var")),
    ("activations", ("gelu", "silu", "erf", "tanh", "sigmoid")),
    ("copies / layout", ("copy", "aten::cat", "clone", "contiguous", "index", "masked", "fill", "zero", "embedding",
                         "gather", "scatter", "empty", "stack", "where", "view", "transpose", "reshape", "permute",
                         "expand", "slice", "select", "unsqueeze", "squeeze", "as_strided", "aten::t", "detach",
                         "split", "chunk", "narrow", "unbind", "alias", "resize", "flatten", "repeat")),
    ("elementwise arithmetic", ("add", "mul", "div", "sub", "neg", "dropout", "bernoulli", "sum", "aten::ne",
                                "aten::eq", "aten::lt", "aten::gt", "aten::ge", "aten::le", "abs", "ones", "full",
                                "arange", "aten::to", "aten::any", "aten::all", "item", "_local_scalar")),
)


def categorise(op: str) -> str:
    for category, keys in CATEGORIES:
        for key in keys:
            if key == op or (key in op and not key.startswith("aten::")) or op.startswith(key + "_") \
                    or (key.startswith("aten::") and (op == key or op.startswith(key + "."))):
                return category
    return "other"


def matmul_rate(n: int, dtype, repeats: int = 3) -> float:
    import torch

    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        a @ b
        best = min(best, time.process_time() - start)
    return 2 * n**3 / best


def profile_step(candidate, images, captions) -> tuple[dict, list]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        candidate.step(images, captions)
    events = prof.key_averages()
    total_us = sum(e.self_cpu_time_total for e in events)
    by_category: dict[str, float] = defaultdict(float)
    by_op = []
    for e in events:
        by_category[categorise(e.key)] += e.self_cpu_time_total
        by_op.append((e.key, e.self_cpu_time_total, e.count))
    by_op.sort(key=lambda x: -x[1])
    shares = {k: v / total_us for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])}
    return {"total_ms": total_us / 1e3, "shares": shares}, by_op


def run(args: argparse.Namespace) -> dict:
    import torch

    info = common.machine()
    sizes = common.PRESETS[args.preset]
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, {args.threads} thread(s)",
          flush=True)
    print(f"model ({args.preset}): {sizes.describe()}", flush=True)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    names = {"fp32": "pgmm", "bf16": "pgmm_bf16"}
    candidates = common.build_candidates(sizes, tuple(names[p] for p in args.precision))
    data = common.make_data(max(32, 4 * args.batch), sizes.image_size)
    images, captions = data.batch(0, args.batch)
    results = {}
    for precision in args.precision:
        c = candidates[names[precision]]

        def forward_backward(c=c):
            with c.autocast():
                c.loss_fn(images, captions).backward()

        flops, per_module = common.flops_of(forward_backward)
        c.module.zero_grad(set_to_none=True)
        c.step(images, captions)  # warm-up
        fractions, step_rates, peaks = [], [], []
        for r in range(args.rounds):
            peak = matmul_rate(args.matmul, dtypes[precision])
            start = time.process_time()
            for s in range(args.steps):
                c.step(*data.batch(1 + r * args.steps + s, args.batch))
            seconds = (time.process_time() - start) / args.steps
            step_rate = flops / seconds
            peaks.append(peak)
            step_rates.append(step_rate)
            fractions.append(step_rate / peak)
            print(f"{precision} round {r + 1}/{args.rounds}: matmul {peak / 1e9:.1f} GFLOP/s, step "
                  f"{step_rate / 1e9:.1f} GFLOP/s ({step_rate / peak:.0%})", flush=True)
        profile, by_op = profile_step(c, images, captions)
        global_ops = per_module.get("Global", {})
        op_time = {name: us for name, us, _ in by_op}
        matrix = []
        for prof_name, counter_name in MATRIX_OPS.items():
            if counter_name in global_ops and op_time.get(prof_name):
                matrix.append({"op": prof_name, "gflop": global_ops[counter_name] / 1e9,
                               "ms": op_time[prof_name] / 1e3,
                               "gflop_per_s": global_ops[counter_name] / (op_time[prof_name] / 1e6) / 1e9})
        conv_flops = global_ops.get("aten.convolution", 0)
        conv_us = sum(op_time.get(n, 0) for n in ("aten::mkldnn_convolution",))
        if conv_flops and conv_us:
            matrix.append({"op": "aten::mkldnn_convolution", "gflop": conv_flops / 1e9, "ms": conv_us / 1e3,
                           "gflop_per_s": conv_flops / (conv_us / 1e6) / 1e9})
        matrix_flops = sum(m["gflop"] for m in matrix) * 1e9
        matrix_ms = sum(m["ms"] for m in matrix)
        results[precision] = {
            "flops_per_step": flops, "gflop_per_sample": flops / args.batch / 1e9,
            "flops_by_module": {k: sum(v.values()) for k, v in per_module.items() if k.count(".") <= 2},
            "matmul_peak_flop_s": common.median(peaks), "step_flop_s": common.median(step_rates),
            "fraction_of_peak": common.median(fractions), "fractions": fractions,
            "profile": profile, "matrix_ops": matrix,
            "matrix_gflop_per_s": matrix_flops / (matrix_ms / 1e3) / 1e9 if matrix_ms else None,
            "matrix_share_of_flops": matrix_flops / flops,
            "top_ops": [{"op": n, "ms": us / 1e3, "calls": k} for n, us, k in by_op[:15]],
        }
    return {"benchmark": "machine_limit", "machine": info, "preset": args.preset, "sizes": common.asdict(sizes),
            "batch": args.batch, "threads": args.threads, "matmul_n": args.matmul, "results": results}


def table(result: dict) -> str:
    headers = ["precision", "fraction of matmul peak", "step GFLOP/s", f"{result['matmul_n']}² matmul GFLOP/s",
               "GFLOP/sample", "matrix ops' GFLOP/s", "time in matrix ops", "time elsewhere (largest)"]
    rows = []
    for precision, r in result["results"].items():
        shares = r["profile"]["shares"]
        matrix_share = shares.get("matrix multiplies", 0.0)
        others = sorted(((k, v) for k, v in shares.items() if k != "matrix multiplies"), key=lambda kv: -kv[1])
        rows.append([precision, f"**{r['fraction_of_peak']:.0%}**", f"{r['step_flop_s'] / 1e9:.1f}",
                     f"{r['matmul_peak_flop_s'] / 1e9:.1f}", f"{r['gflop_per_sample']:.2f}",
                     f"{r['matrix_gflop_per_s']:.1f}" if r["matrix_gflop_per_s"] else "-",
                     f"{matrix_share:.0%}", ", ".join(f"{k} {v:.0%}" for k, v in others[:3])])
    return common.markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(common.PRESETS), default="proportional")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--matmul", type=int, default=4096, help="size of the square matmul that sets the peak")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="where to write the results (default benchmarks/results/machine_limit.json)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks that it runs")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.smoke:
        args.preset, args.batch, args.rounds, args.steps, args.matmul = "smoke", 2, 1, 1, 256
    result = run(args)
    path = common.write_json("machine_limit" + ("_smoke" if args.smoke else ""), result, args.json)
    print(table(result))
    for precision, r in result["results"].items():
        print(f"\n{precision}: time by category: " + ", ".join(f"{k} {v:.0%}" for k, v in r["profile"]["shares"].items()))
        print(common.markdown_table(["matrix op", "GFLOP", "ms", "GFLOP/s"],
                                    [[m["op"], f"{m['gflop']:.2f}", f"{m['ms']:.1f}", f"{m['gflop_per_s']:.1f}"]
                                     for m in r["matrix_ops"]]))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
