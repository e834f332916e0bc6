"""Caption generation: pgmm's ``model.generate`` vs transformers' ``Blip2ForConditionalGeneration.generate``.

    python benchmarks/generation.py [--preset proportional] [--images 8] [--batch 4] [--rounds 3]
                                    [--max-new-tokens 20] [--json OUT]

Both hold the same weights (see ``stage2_common.py``) and decode with the same explicit settings
(no sampling, ``min_new_tokens`` 1, length penalty 1), greedy and beam search with 5 beams. They take
turns in one process (the order alternates each round) and are timed in process CPU time with one
torch thread. The captions are compared token for token: greedy decoding must give identical output.
``pgmm_bf16`` is pgmm under its bf16 policy (frozen towers stored in bf16, generation under
autocast, as its evaluation and captioner run it); its captions are compared with pgmm's fp32 ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stage2_common as common  # noqa: E402

MODES = {"greedy": 1, "beam5": 5}


def pgmm_captions(model, images, beams: int, max_new: int) -> list[str]:
    return model.generate(images, num_beams=beams, max_new_tokens=max_new, min_new_tokens=1)


def hf_captions(hf, images, beams: int, max_new: int) -> list[str]:
    tok = hf.tokenizer
    ids = hf.module.generate(pixel_values=images, num_beams=beams, max_new_tokens=max_new, min_new_tokens=1,
                             do_sample=False, length_penalty=1.0, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    prompt = hf.queries + 1  # image placeholders + BOS come back in front of the new tokens
    out = []
    for row in ids[:, prompt:].tolist():
        row = row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row
        out.append(tok.decode(row, skip_special_tokens=True).strip())
    return out


def run(args: argparse.Namespace) -> dict:
    import torch

    info = common.machine()
    sizes = common.PRESETS[args.preset]
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}", flush=True)
    print(f"model ({args.preset}): {sizes.describe()}", flush=True)
    model, _ = common.build_pgmm(sizes)
    hf = common.HfBlip2(model, sizes)
    bf16, policy = common.build_pgmm(sizes, "bf16")
    bf16.load_state_dict(model.state_dict())
    for m in (model, hf.module, bf16):
        m.eval()

    def pgmm_bf16(x, beams):
        with policy.autocast():
            return pgmm_captions(bf16, x, beams, args.max_new_tokens)

    data = common.make_data(args.images, sizes.image_size, split="val")
    runners = {"pgmm": lambda x, beams: pgmm_captions(model, x, beams, args.max_new_tokens),
               "hf": lambda x, beams: hf_captions(hf, x, beams, args.max_new_tokens),
               "pgmm_bf16": pgmm_bf16}
    results = {}
    with torch.no_grad():
        for mode, beams in MODES.items():
            seconds = {n: [] for n in runners}
            captions = {n: [] for n in runners}
            for r in range(args.rounds):
                names = list(runners)
                order = names[r % len(names):] + names[: r % len(names)]
                for name in order:
                    start = time.process_time()
                    produced = []
                    for first in range(0, args.images, args.batch):
                        produced += runners[name](data.images[first:first + args.batch], beams)
                    seconds[name].append(time.process_time() - start)
                    if r == 0:
                        captions[name] = produced
                print(f"{mode} round {r + 1}/{args.rounds}: " + ", ".join(
                    f"{n} {args.images / seconds[n][-1]:.2f} captions/s" for n in runners), flush=True)
            rate = {n: [args.images / t for t in seconds[n]] for n in runners}
            same = sum(a == b for a, b in zip(captions["pgmm"], captions["hf"]))
            bf16_same = sum(a == b for a, b in zip(captions["pgmm"], captions["pgmm_bf16"]))
            results[mode] = {
                "num_beams": beams,
                "speed_pgmm_vs_hf": common.median([a / b for a, b in zip(rate["pgmm"], rate["hf"])]),
                "speed_pgmm_bf16_vs_hf": common.median([a / b for a, b in zip(rate["pgmm_bf16"], rate["hf"])]),
                "bf16_same_as_fp32": bf16_same,
                "captions_per_s": {n: common.median(rate[n]) for n in runners},
                "captions_per_s_all": rate,
                "identical": same, "compared": len(captions["pgmm"]),
                "mean_words": sum(len(c.split()) for c in captions["pgmm"]) / max(1, len(captions["pgmm"])),
                "examples": {n: captions[n][:2] for n in runners},
            }
    return {"benchmark": "generation", "machine": info, "preset": args.preset, "sizes": common.asdict(sizes),
            "images": args.images, "batch": args.batch, "rounds": args.rounds,
            "max_new_tokens": args.max_new_tokens, "modes": results}


def table(result: dict) -> str:
    headers = ["decoding", "pgmm vs transformers", "pgmm bf16 vs transformers", "captions/CPU-s: pgmm",
               "transformers", "pgmm bf16", "pgmm = transformers", "pgmm bf16 = pgmm fp32"]
    rows = []
    for mode, r in result["modes"].items():
        rate = r["captions_per_s"]
        rows.append([f"{mode} (num_beams={r['num_beams']})", f"**{r['speed_pgmm_vs_hf']:.2f}x**",
                     f"**{r['speed_pgmm_bf16_vs_hf']:.2f}x**", f"{rate['pgmm']:.2f}", f"{rate['hf']:.2f}",
                     f"{rate['pgmm_bf16']:.2f}", f"{r['identical']}/{r['compared']}",
                     f"{r['bf16_same_as_fp32']}/{r['compared']}"])
    return common.markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(common.PRESETS), default="proportional")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="where to write the results (default benchmarks/results/generation.json)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks that it runs")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.smoke:
        args.preset, args.images, args.batch, args.rounds, args.max_new_tokens = "smoke", 2, 2, 1, 4
    result = run(args)
    path = common.write_json("generation" + ("_smoke" if args.smoke else ""), result, args.json)
    print(table(result))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
