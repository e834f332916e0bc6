"""Peak host memory of the stage-2 captioning loss: target-only chunked loss vs full logits.

    python benchmarks/pangu_loss_memory.py [--batch 16 32] [--json OUT]

A tiny openPangu body (2 layers, hidden 64) with the release's real vocabulary (153,376 tokens) and a
frozen LLM, as in stage 2: 32 visual tokens that need gradients, then ``BOS caption EOS`` with up to
32 text tokens and right padding. Each configuration runs forward + backward in its own subprocess,
and its peak resident set size *during the loss* is read from ``VmHWM`` after resetting it
(``/proc/self/clear_refs``), so model construction does not count. ``full`` is the plain path the
original project took (``LlamaForCausalLM(..., labels=...)``: B×T×vocab logits); ``chunked`` is
pgmm's ``CausalLMBackend.caption_loss``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RELEASE_CONFIG = Path(__file__).resolve().parents[1] / "packages/pgmm-pangu/tests/data/release/config.json"
VISUAL_TOKENS, MAX_TEXT = 32, 32


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def measure(mode: str, batch: int) -> dict:
    import torch
    from transformers import LlamaForCausalLM

    from pgmm_pangu.backend import CausalLMBackend
    from pgmm_pangu.checkpoint import llama_config_from_release

    torch.manual_seed(0)
    release = json.loads(RELEASE_CONFIG.read_text())
    release.update(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2)
    model = LlamaForCausalLM(llama_config_from_release(release)).eval().requires_grad_(False)
    tokenizer = argparse.Namespace(bos_token_id=1, eos_token_id=45892, pad_token_id=0)
    backend = CausalLMBackend(model, tokenizer, frozen=True)

    lengths = torch.randint(8, MAX_TEXT + 1, (batch,))
    ids = torch.randint(3, release["vocab_size"], (batch, MAX_TEXT))
    ids[:, 0] = 1
    labels = torch.full((batch, VISUAL_TOKENS + MAX_TEXT), -100)
    mask = torch.zeros((batch, VISUAL_TOKENS + MAX_TEXT), dtype=torch.long)
    for row, length in enumerate(lengths.tolist()):
        ids[row, length - 1] = 45892
        ids[row, length:] = 0
        labels[row, VISUAL_TOKENS + 1 : VISUAL_TOKENS + length] = ids[row, 1:length]
        mask[row, : VISUAL_TOKENS + length] = 1
    visual = torch.randn(batch, VISUAL_TOKENS, 64, requires_grad=True)
    text = backend.embed_tokens(ids)

    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = rss_kib("VmRSS")
    inputs_embeds = torch.cat([visual, text], dim=1)
    if mode == "full":
        loss = model(inputs_embeds=inputs_embeds, attention_mask=mask, labels=labels).loss
    else:
        loss = backend.caption_loss(inputs_embeds, mask, labels)
    loss.backward()
    peak = rss_kib("VmHWM")
    return {"mode": mode, "batch": batch, "vocab": release["vocab_size"], "targets": int((labels != -100).sum()),
            "loss": loss.item(), "rss_before_mib": before / 1024, "peak_rss_mib": peak / 1024,
            "peak_increase_mib": (peak - before) / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]))))
        return 0
    results = []
    for batch in args.batch:
        for mode in ("full", "chunked"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, str(batch)],
                                 capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'batch':>5} {'mode':>8} {'targets':>7} {'loss':>9} {'RSS before':>11} {'peak RSS':>9} {'increase':>9}")
    for r in results:
        print(f"{r['batch']:>5} {r['mode']:>8} {r['targets']:>7} {r['loss']:>9.5f} {r['rss_before_mib']:>8.0f} MiB"
              f" {r['peak_rss_mib']:>5.0f} MiB {r['peak_increase_mib']:>5.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
