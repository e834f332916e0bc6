"""Scaling on paper: the full-size model's samples/s per accelerator, from measured per-component
costs and an analytic FLOP model.

    python benchmarks/scaling.py [--batch 8] [--reps 3] [--mfu 0.4] [--json OUT]

1. Measure, on the proportional model (every width / 8, depths and token counts kept), each part of
   the stage-2 step alone — frozen vision tower forward, ln_vision + Q-Former + projector forward and
   backward, frozen LLM body forward and backward (to the visual tokens), LM head + loss (pgmm: target
   positions only; baseline: every position + transformers' loss), AdamW — in FLOPs
   (``torch.utils.flop_counter``) and process CPU time; so each part's share of the work and its
   FLOP/s on this CPU are known.
2. An analytic FLOP model per part (matmuls and attention; what the counter counts) is checked
   against those counts on the proportional model, then evaluated at full size: EVA-ViT-g (39 x 1408,
   257 tokens), bert-base Q-Former with 32 queries, openPangu-7B (34 x 4096, FFN 12800, 32/8 heads,
   vocab 153,376) on 32 visual + 32 text tokens.
3. Predicted samples/s per device = peak FLOP/s x assumed utilisation / FLOPs per sample. The peak
   figures and the utilisation are assumptions, printed with the result (see ``DEVICES``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stage2_common as common  # noqa: E402

# Dense peak FLOP/s (no structured sparsity). Sources: NVIDIA A100 and H100 (SXM) datasheets; Huawei
# quotes the Ascend 910B family at 280-376 TFLOPS fp16/bf16 depending on the part (313 for the
# 910B3 used here). Huawei publishes no strict-fp32 matmul figure: 1/4 of bf16 is assumed (the cube
# unit's fp32 rate; HF32, torch_npu's TF32-like mode, would be about 1/2).
DEVICES = {
    "Ascend 910B, fp32": {"peak": 313e12 / 4, "dtype": "fp32", "memory_gib": 64},
    "Ascend 910B, bf16": {"peak": 313e12, "dtype": "bf16", "memory_gib": 64},
    "A100 SXM, bf16": {"peak": 312e12, "dtype": "bf16", "memory_gib": 80},
    "H100 SXM, bf16": {"peak": 989e12, "dtype": "bf16", "memory_gib": 80},
}
PARTS = ("vision", "connector", "llm_body", "head_loss", "optimizer")


# --- analytic FLOPs per sample (what torch.utils.flop_counter counts: matmuls, convolutions, attention) ----


def analytic_flops(s: common.Sizes, text_tokens: int, head_positions: float, head_passes: int = 2
                   ) -> dict[str, float]:
    """Per sample. ``head_positions``: where the LM head runs (pgmm: the targets; the baselines: every
    position); ``head_passes``: forward + input gradient = 2 (a frozen head; pgmm computes that
    gradient in the forward pass, so nothing is recomputed)."""
    n = (s.image_size // s.patch_size) ** 2 + 1
    w, m = s.vit_width, s.vit_mlp
    patch = 2 * 3 * s.patch_size**2 * w * (n - 1)
    vit_layer = 2 * n * w * 3 * w + 2 * n * w * w + 2 * 2 * n * n * w + 2 * 2 * n * w * m
    vision = patch + s.vit_depth * vit_layer
    q, h, f, e = s.queries, s.qf_width, s.qf_ffn, s.vit_width
    self_attn = 2 * q * h * 3 * h + 2 * q * h * h + 2 * 2 * q * q * h
    cross = 2 * q * h * h + 2 * 2 * n * e * h + 2 * q * h * h + 2 * 2 * q * n * h
    ffn = 2 * 2 * q * h * f
    cross_layers = (s.qf_layers + 1) // 2  # cross-attention on layers 0, 2, 4, ...
    qformer_fwd = s.qf_layers * (self_attn + ffn) + cross_layers * cross
    projector_fwd = 2 * q * (h * s.llm_hidden + s.llm_hidden * s.llm_hidden)
    connector = 3 * (qformer_fwd + projector_fwd)  # forward + gradients for inputs and weights
    t, hl, i = s.queries + text_tokens, s.llm_hidden, s.llm_ffn
    kv = hl * s.llm_kv_heads // s.llm_heads
    linear = 2 * t * hl * hl * 2 + 2 * t * hl * kv * 2 + 3 * 2 * t * hl * i
    attention = 2 * 2 * t * t * hl
    # frozen weights: backward computes input gradients only (1x the forward's linear FLOPs); the
    # attention backward recomputes scores and takes four more products (2.5x its forward)
    llm_body = s.llm_layers * (2 * linear + 3.5 * attention)
    head_loss = 2 * hl * s.vocab * head_positions * head_passes
    return {"vision": vision, "connector": connector, "llm_body": llm_body, "head_loss": head_loss}


# --- measured per-part costs ------------------------------------------------------------------------


def measure_parts(candidate, images, captions, reps: int) -> dict[str, dict]:
    """FLOPs and CPU seconds of each part of one pgmm step, each run alone on realistic inputs."""
    import torch

    from pgmm_pangu.loss import target_cross_entropy

    model = candidate.module
    llm = model.llm
    with torch.no_grad():
        features = model.vision(images)
    visual_shape = (images.shape[0], model.connector.num_query_tokens, llm.hidden_size)
    text = model.tokenize_captions(captions)
    with torch.no_grad():
        text_embeds = llm.embed_tokens(text.input_ids)
    batch, queries = visual_shape[:2]
    mask = torch.cat([torch.ones((batch, queries), dtype=torch.long), text.attention_mask], dim=1)
    labels = torch.cat([torch.full((batch, queries), -100), text.labels], dim=1)
    decoder = llm.model.get_decoder()
    with torch.no_grad():
        hidden = decoder(inputs_embeds=torch.cat([torch.randn(visual_shape) * 0.02, text_embeds], 1),
                         attention_mask=mask, use_cache=False).last_hidden_state
    grad_hidden = torch.randn_like(hidden) * 1e-3

    def vision():
        with torch.no_grad():
            model.vision(images)

    def connector():
        out = model.projector(model.connector(model.ln_vision(features)))
        out.backward(torch.ones_like(out) * 1e-3)

    def llm_body():
        x = torch.cat([torch.randn(visual_shape, requires_grad=True) * 0.02, text_embeds], 1)
        out = decoder(inputs_embeds=x, attention_mask=mask, use_cache=False).last_hidden_state
        out.backward(grad_hidden)

    def head_loss():
        h = hidden.detach().requires_grad_(True)
        target_cross_entropy(h, labels, llm.model.get_output_embeddings()).backward()

    def head_loss_full():
        h = hidden.detach().requires_grad_(True)
        logits = llm.model.get_output_embeddings()(h)
        llm.model.loss_function(logits=logits, labels=labels, vocab_size=logits.shape[-1]).backward()

    def optimizer():
        candidate.optimizer.step()

    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p) * 1e-6
    parts = {"vision": vision, "connector": connector, "llm_body": llm_body, "head_loss": head_loss,
             "head_loss_full": head_loss_full, "optimizer": optimizer}
    out = {}
    for name, fn in parts.items():
        fn()  # warm-up
        flops, _ = common.flops_of(fn)
        times = []
        for _ in range(reps):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
        out[name] = {"flops": flops, "seconds": common.median(times)}
    model.zero_grad(set_to_none=True)
    out["_text_tokens"] = int(text.input_ids.shape[1])
    out["_targets"] = int((labels[:, 1:] != -100).sum())
    return out


def run(args: argparse.Namespace) -> dict:
    import torch

    from machine_limit import matmul_rate

    info = common.machine()
    sizes = common.SMOKE if args.smoke else common.PROPORTIONAL
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, {args.threads} thread(s)",
          flush=True)
    candidate = common.build_candidates(sizes, ("pgmm",))["pgmm"]
    data = common.make_data(max(16, args.batch), sizes.image_size)
    images, captions = data.batch(0, args.batch)
    peak_cpu = matmul_rate(4096, torch.float32)
    measured = measure_parts(candidate, images, captions, args.reps)
    step_start = time.process_time()
    for s in range(args.reps):
        candidate.step(*data.batch(1 + s, args.batch))
    step_seconds = (time.process_time() - step_start) / args.reps
    b = args.batch
    text_tokens, targets = measured.pop("_text_tokens"), measured.pop("_targets")
    # analytic model at the proportional sizes vs the counter
    check = analytic_flops(sizes, text_tokens, targets / b)
    check_full_head = analytic_flops(sizes, text_tokens, sizes.queries + text_tokens)["head_loss"]
    agreement = {p: check[p] / (measured[p]["flops"] / b) for p in check}
    agreement["head_loss_full"] = check_full_head / (measured["head_loss_full"]["flops"] / b)
    parts = {}
    for p in (*PARTS, "head_loss_full"):
        m = measured[p]
        parts[p] = {"gflop_per_sample": m["flops"] / b / 1e9, "cpu_ms_per_sample": m["seconds"] / b * 1e3,
                    "cpu_gflop_s": m["flops"] / m["seconds"] / 1e9 if m["flops"] else None,
                    "cpu_utilisation": m["flops"] / m["seconds"] / peak_cpu if m["flops"] else None}
    # full size: 32 visual + 32 text tokens (BOS, 30 caption tokens, EOS), 31 targets per sample
    full_text, full_targets = 32, 31
    pgmm_full = analytic_flops(common.FULL, full_text, full_targets)
    base_full = dict(pgmm_full)
    base_full["head_loss"] = analytic_flops(common.FULL, full_text, common.FULL.queries + full_text)["head_loss"]
    pgmm_total, base_total = sum(pgmm_full.values()), sum(base_full.values())
    predictions = {}
    for device, spec in DEVICES.items():
        rate = spec["peak"] * args.mfu
        predictions[device] = {
            "peak_tflops": spec["peak"] / 1e12, "mfu": args.mfu,
            "pgmm_samples_per_s": rate / pgmm_total, "baseline_samples_per_s": rate / base_total,
            "range_samples_per_s": [spec["peak"] * u / pgmm_total for u in (0.3, 0.5)],
        }
    # this CPU, from the measured per-part FLOP/s at 1/8 width (a lower bound: wider GEMMs run faster)
    cpu_seconds = sum(pgmm_full[p] / (parts[p]["cpu_gflop_s"] * 1e9) for p in pgmm_full)
    return {
        "benchmark": "scaling", "machine": info, "batch": b, "threads": args.threads,
        "cpu_matmul_peak_gflop_s": peak_cpu / 1e9,
        "proportional_parts": parts, "parts_sum_ms_per_sample": sum(
            parts[p]["cpu_ms_per_sample"] for p in PARTS), "step_ms_per_sample": step_seconds / b * 1e3,
        "analytic_vs_counted": agreement,
        "full_size_gflop_per_sample": {"pgmm": {p: v / 1e9 for p, v in pgmm_full.items()},
                                       "baseline": {p: v / 1e9 for p, v in base_full.items()}},
        "full_size_totals_gflop": {"pgmm": pgmm_total / 1e9, "baseline": base_total / 1e9},
        "predictions": predictions, "cpu_full_size_samples_per_s": 1 / cpu_seconds,
    }


def table(result: dict) -> str:
    parts = result["proportional_parts"]
    full = result["full_size_gflop_per_sample"]
    pgmm_total = result["full_size_totals_gflop"]["pgmm"]
    rows = []
    for p in (*PARTS, "head_loss_full"):
        r = parts[p]
        fp = full["pgmm"].get(p) if p != "head_loss_full" else full["baseline"]["head_loss"]
        rows.append([p, f"{r['gflop_per_sample']:.3f}", f"{r['cpu_ms_per_sample']:.1f}",
                     f"{r['cpu_utilisation']:.0%}" if r["cpu_utilisation"] else "-",
                     f"{result['analytic_vs_counted'].get(p, float('nan')):.3f}" if p in result["analytic_vs_counted"] else "-",
                     f"{fp:,.1f}" if fp is not None else "-",
                     f"{fp / pgmm_total:.1%}" if fp is not None and p != "head_loss_full" else "-"])
    first = common.markdown_table(
        ["part", "GFLOP/sample (1/8 width)", "CPU ms/sample", "of CPU matmul peak", "analytic / counted",
         "GFLOP/sample full size", "share (pgmm)"], rows)
    rows = []
    for device, r in result["predictions"].items():
        lo, hi = r["range_samples_per_s"]
        rows.append([device, f"{r['peak_tflops']:.0f}", f"{r['mfu']:.0%}", f"**{r['pgmm_samples_per_s']:.1f}**",
                     f"{lo:.1f}-{hi:.1f}", f"{r['baseline_samples_per_s']:.1f}"])
    second = common.markdown_table(["device", "peak TFLOP/s (assumed)", "utilisation (assumed)",
                                    "pgmm samples/s", "at 30-50%", "full-logits baseline samples/s"], rows)
    return first + "\n\n" + second


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--mfu", type=float, default=0.4, help="assumed utilisation of the accelerators' peak")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="where to write the results (default benchmarks/results/scaling.json)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.smoke:
        args.batch, args.reps = 2, 1
    result = run(args)
    path = common.write_json("scaling" + ("_smoke" if args.smoke else ""), result, args.json)
    print(table(result))
    print(f"full size, GFLOP per sample: pgmm {result['full_size_totals_gflop']['pgmm']:,.0f}, "
          f"full-logits baseline {result['full_size_totals_gflop']['baseline']:,.0f}")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
