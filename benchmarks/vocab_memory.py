"""Peak memory vs batch size with openPangu's real vocabulary (153,376) on the proportional body.

    python benchmarks/vocab_memory.py [--batch 4 8 16 32 64] [--candidates pgmm lavis hf]
                                      [--guard-gib 6] [--budget-gib 20] [--json OUT]

Each (candidate, batch) runs in its own subprocess: build the candidate (same weights for all),
one warm-up step at batch 1 (AdamW's state exists from then on), then the peak resident set size is
reset (``/proc/self/clear_refs``) and read back (``VmHWM``) after one training step at the batch.
The subprocess may map at most ``--guard-gib`` more than it had before the step (``RLIMIT_AS``), so
an allocation past that fails inside it — reported as out of memory — and the machine, shared with
other jobs, is never exhausted. Peak memory grows linearly with the batch; a least-squares line
through the measured points gives the largest batch that fits ``--budget-gib`` (20 GiB).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stage2_common as common  # noqa: E402


def child(preset: str, name: str, batch: int, guard_gib: float, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    sizes = common.PRESETS[preset]
    candidate = common.build_candidates(sizes, (name,))[name]
    data = common.make_data(batch + 1, sizes.image_size)
    candidate.step(*data.batch(0, 1))
    images, captions = data.batch(0, batch)
    common.release_memory()
    common.limit_address_space(guard_gib)
    common.reset_peak_rss()
    before = common.status_kib("VmRSS")
    start = time.process_time()
    try:
        loss = candidate.step(images, captions)
    except (RuntimeError, MemoryError) as exc:
        if "memory" not in str(exc).lower() and not isinstance(exc, MemoryError):
            raise
        return {"candidate": name, "batch": batch, "out_of_memory": True, "guard_gib": guard_gib,
                "rss_before_mib": before / 1024, "error": str(exc).splitlines()[0][:200]}
    seconds = time.process_time() - start
    peak = common.status_kib("VmHWM")
    return {"candidate": name, "batch": batch, "out_of_memory": False, "loss": loss,
            "rss_before_mib": before / 1024, "peak_rss_mib": peak / 1024,
            "step_increase_mib": (peak - before) / 1024, "samples_per_cpu_s": batch / seconds}


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares ``y = a + b x``."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - b * mx, b


def run(args: argparse.Namespace) -> dict:
    info = common.machine()
    sizes = common.PRESETS[args.preset]
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}", flush=True)
    print(f"model ({args.preset}): {sizes.describe()}", flush=True)
    measurements: dict[str, list[dict]] = {}
    for name in args.candidates:
        measurements[name] = []
        for batch in args.batch:
            cmd = [sys.executable, __file__, "--child", args.preset, name, str(batch), str(args.guard_gib),
                   str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"{name} batch {batch} failed:\n{out.stderr[-3000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            measurements[name].append(result)
            shown = "out of memory at the guard" if result["out_of_memory"] else \
                f"peak {result['peak_rss_mib']:,.0f} MiB (+{result['step_increase_mib']:,.0f})"
            print(f"{name} batch {batch}: {shown}", flush=True)
            if result["out_of_memory"]:
                break  # larger batches need more
    budget_mib = args.budget_gib * 1024
    fits = {}
    for name, rows in measurements.items():
        points = [(r["batch"], r["peak_rss_mib"]) for r in rows if not r["out_of_memory"]]
        if len(points) >= 2:
            a, b = fit_line(points)
            fits[name] = {"fixed_mib": a, "mib_per_sample": b,
                          "max_batch_in_budget": int((budget_mib - a) // b) if b > 0 else None}
    return {"benchmark": "vocab_memory", "machine": info, "preset": args.preset, "sizes": common.asdict(sizes),
            "guard_gib": args.guard_gib, "budget_gib": args.budget_gib, "measurements": measurements,
            "fits": fits}


def table(result: dict) -> str:
    batches = sorted({r["batch"] for rows in result["measurements"].values() for r in rows})
    headers = ["candidate"] + [f"batch {b}" for b in batches] + ["MiB per sample", f"largest batch in {result['budget_gib']} GiB"]
    rows = []
    for name, measured in result["measurements"].items():
        by_batch = {r["batch"]: r for r in measured}
        cells = []
        for b in batches:
            r = by_batch.get(b)
            if r is None:
                cells.append("-")
            elif r["out_of_memory"]:
                cells.append(f"OOM at +{result['guard_gib']} GiB guard")
            else:
                cells.append(f"{r['peak_rss_mib']:,.0f} MiB")
        fit = result["fits"].get(name, {})
        rows.append([name, *cells, f"{fit.get('mib_per_sample', float('nan')):.1f}",
                     f"**{fit.get('max_batch_in_budget')}**"])
    return common.markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(common.PRESETS), default="real_vocab")
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--candidates", nargs="+", default=["pgmm", "lavis", "hf"], choices=common.CANDIDATES)
    parser.add_argument("--guard-gib", type=float, default=6.0,
                        help="most memory a measuring subprocess may add for its step (RLIMIT_AS)")
    parser.add_argument("--budget-gib", type=float, default=20.0, help="memory budget for the extrapolation")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="where to write the results (default benchmarks/results/vocab_memory.json)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, two batches: checks that it runs")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        preset, name, batch, guard, threads = args.child
        print(json.dumps(child(preset, name, int(batch), float(guard), int(threads))))
        return 0
    if args.smoke:
        args.preset, args.batch, args.candidates = "smoke", [1, 2], ["pgmm", "lavis"]
    result = run(args)
    path = common.write_json("vocab_memory" + ("_smoke" if args.smoke else ""), result, args.json)
    print(table(result))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
