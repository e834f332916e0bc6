"""Parameter counts, forward time and peak memory of the full-size vision front end on CPU (fp32).

EVA-ViT-g (39 blocks, 224 px) + ln_vision + Q-Former (bert-base, 32 queries) + mlp2x_gelu projector
to 4096 (openPangu-7B's width), built by pgmm's own factories with random weights (no download).
Each mode runs in a fresh process so that its peak RSS is its own:

* ``no_grad``: everything under ``torch.no_grad`` (inference, captioning);
* ``stage2``: stage-2 training forward: the frozen tower runs under ``no_grad`` (as pgmm does),
  ln_vision, Q-Former and projector record the autograd graph;
* ``all_grad``: the tower unfrozen too (``freeze: false``), so its 39 blocks record the graph.

Wall time depends on what else the machine runs; CPU time (all threads) much less so.

    python packages/pgmm-vision/tools/front_end_cpu.py            # all modes, ~5 GB RAM, a few minutes
    python packages/pgmm-vision/tools/front_end_cpu.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MODES = ("no_grad", "stage2", "all_grad")


def _rss_gib(peak: bool) -> float:
    if peak:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**30


def run_mode(mode: str, repeats: int) -> dict:
    import contextlib

    import torch
    from torch import nn

    from pgmm_core.components import freeze
    from pgmm_core.model import MultimodalModel
    from pgmm_core.plugins import PluginHost

    host = PluginHost(environ={})

    def build(kind, data, **context):
        spec = host.registry(kind).get(data["type"])
        return spec.build(spec.config_model(**data), **context)

    start = time.perf_counter()
    vision = build("vision", {"type": "eva_vit_g", "freeze": mode != "all_grad"})
    if vision.frozen:
        freeze(vision)  # what build_model does with a frozen part
    connector = build("connector", {"type": "qformer"}, encoder_width=vision.out_features)
    projector = build("projector", {"type": "mlp2x_gelu"}, in_features=connector.out_features, out_features=4096)
    model = MultimodalModel(vision, connector, projector, nn.Module())
    build_s = time.perf_counter() - start
    parts = {"vision tower": model.vision, "ln_vision": model.ln_vision, "Q-Former (+ query tokens)": model.connector,
             "projector mlp2x_gelu 768->4096": model.projector}
    counts = {name: {"trainable": sum(p.numel() for p in part.parameters() if p.requires_grad),
                     "frozen": sum(p.numel() for p in part.parameters() if not p.requires_grad)}
              for name, part in parts.items()}
    counts["total"] = model.parameter_counts()
    pixels = torch.randn(1, 3, 224, 224)
    rss_built = _rss_gib(peak=False)
    times, cpu_times = [], []
    for _ in range(repeats + 1):  # the first call warms up allocators and kernels
        with torch.no_grad() if mode == "no_grad" else contextlib.nullcontext():
            begin, cpu_begin = time.perf_counter(), time.process_time()
            encoding = model.encode_image(pixels)
            times.append(time.perf_counter() - begin)
            cpu_times.append(time.process_time() - cpu_begin)
        graph = encoding.llm_embeds.grad_fn is not None
        del encoding
    return {"mode": mode, "threads": torch.get_num_threads(), "torch": torch.__version__, "build_s": build_s,
            "forward_s": sorted(times[1:])[len(times[1:]) // 2], "forward_s_all": times,
            "forward_cpu_s": sorted(cpu_times[1:])[len(cpu_times[1:]) // 2],
            "records_graph": graph, "load_average_1min": os.getloadavg()[0],
            "rss_after_build_gib": rss_built, "peak_rss_gib": _rss_gib(peak=True),
            "parameters": counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, help="run one mode in this process (default: each in its own)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards after one warm-up (median reported)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.repeats)))
        return 0
    results = []
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--repeats", str(args.repeats)],
                             capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{mode:<9} forward {r['forward_s']:.2f} s wall, {r['forward_cpu_s']:.2f} s CPU (median of "
              f"{args.repeats}), RSS after build "
              f"{r['rss_after_build_gib']:.2f} GiB, peak {r['peak_rss_gib']:.2f} GiB, graph: {r['records_graph']}, "
              f"load average {r['load_average_1min']:.1f}",
              flush=True)
    print(f"torch {results[0]['torch']}, {results[0]['threads']} threads, fp32, one 224x224 image")
    for mode in ("stage2", "all_grad"):
        print(f"parameters ({mode}):")
        for name, count in results[MODES.index(mode)]["parameters"].items():
            print(f"  {name:<32} trainable {count['trainable']:>13,}  frozen {count['frozen']:>13,}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
