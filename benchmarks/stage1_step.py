"""Stage-1 training step (``qformer_pretrain``: ITC + ITM + ITG): pgmm vs a LAVIS-style ``Blip2Qformer``.

    python benchmarks/stage1_step.py [--preset proportional] [--batch 8] [--rounds 5] [--steps 2]
                                     [--candidates pgmm lavis ...] [--no-memory] [--json OUT] [--smoke]

The conventions of ``train_step.py`` (stage 2): the candidates live in this one process and take
turns, the order rotating each round, ``--steps`` training steps per turn on the same batches; the
speed ratio is the median of the per-round ratios; time is process CPU time with one torch thread.
Memory: each candidate alone in a fresh subprocess, peak resident set size (``VmHWM`` after
``/proc/self/clear_refs``) across two steps taken after a warm-up step (AdamW state allocated);
"model+training" is that peak minus the resident size of the imported libraries.

* ``pgmm``: the trainer's step on the model ``pgmm_core.build_model`` builds from a validated
  ``qformer_pretrain`` config (vision tower and Q-Former with its text side; no projector, no LLM),
  the loss being the objective's (:class:`pgmm_vision.stage1.objective.QFormerPretrainObjective`).
  Variants: ``pgmm_bf16`` (``device.precision=bf16``), ``pgmm_ckpt`` / ``pgmm_bf16_ckpt`` (the same with
  ``model.connector.grad_checkpointing``: the Q-Former's layers recomputed in the backward).
* ``lavis``: what LAVIS' ``Blip2Qformer.forward`` computes, on copies of the same modules and
  weights: the frozen tower with explicit attention and not under ``no_grad``, eager attention in
  the Q-Former, ITC from the query and text passes, ITM as one joint pass over 3B pairs (negatives
  drawn row by row), ITG as a text pass over the query pass's cached keys and values
  (``past_key_values``), all fp32.

Text: BERT's tokenizer from a random tiny BERT at the Q-Former's sizes
(:func:`pgmm_vision.stage1.tiny_bert.ensure_tiny_bert`), its vocabulary padded with placeholder tokens
to bert-base's 30,522 scaled like the widths (3,815 at width 96: vocab/hidden kept, so the LM head's
share of the step is the full model's); captions of ``stage2_common.make_data``. ITC/ITM without image
ids (every image of a batch differs). Before timing, both candidates' three losses and trainable-gradient
norm on one batch with dropout off and the same seed (so the same ITM negatives) are reported: equal
values show that the same work is done.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stage2_common as common  # noqa: E402

BERT_BASE_VOCAB, BERT_BASE_WIDTH, BERT_BASE_EMBED_DIM = 30_522, 768, 256
# pgmm's variants as in stage 2 (common.PGMM_VARIANTS: name -> (device.precision, checkpointing)), the
# checkpointing here being the Q-Former's (model.connector.grad_checkpointing): stage 1 has no LLM.
NAMES = ("pgmm", "lavis", "pgmm_bf16", "pgmm_ckpt", "pgmm_bf16_ckpt")
EXCLUDED = -10000.0  # LAVIS' fill value (same image) before the ITM softmax, and its additive mask value


def scaled(full: int, sizes: common.Sizes) -> int:
    """A bert-base size scaled like the Q-Former's width."""
    return round(full * sizes.qf_width / BERT_BASE_WIDTH)


def bert_directory(sizes: common.Sizes, root: Path) -> Path:
    """A random BERT at the Q-Former's sizes whose ``vocab.txt`` has bert-base's vocabulary scaled to
    the width (tiny BERT's words first, placeholders after: rows beyond the tiny BERT's keep the
    connector's own initialisation, as ``[DEC]``'s row does)."""
    from pgmm_vision.stage1.tiny_bert import TinyBertSpec, ensure_tiny_bert

    spec = TinyBertSpec(hidden_size=sizes.qf_width, num_layers=sizes.qf_layers, num_heads=sizes.qf_heads,
                        intermediate_size=sizes.qf_ffn, max_position_embeddings=512)
    directory = ensure_tiny_bert(spec, root / "bert")
    vocab = directory / "vocab.txt"
    words = vocab.read_text(encoding="utf-8").split()
    words += [f"[unused{i}]" for i in range(scaled(BERT_BASE_VOCAB, sizes) - len(words))]
    vocab.write_text("\n".join(words) + "\n", encoding="utf-8")
    return directory


def stage1_config(sizes: common.Sizes, bert: Path, precision: str = "fp32",
                  checkpointing: bool = False) -> dict[str, Any]:
    config = common.pgmm_config(sizes, precision)
    model = config["model"]
    model.pop("llm")
    model.pop("projector")
    model["connector"].update({"text_side": True, "bert_init": str(bert), "max_text_len": sizes.max_text_len,
                               "embed_dim": scaled(BERT_BASE_EMBED_DIM, sizes), "grad_checkpointing": checkpointing})
    config["objective"] = {"type": "qformer_pretrain", "same_image_by_id": False}
    return config


def build_pgmm(sizes: common.Sizes, bert: Path, precision: str = "fp32", checkpointing: bool = False,
               seed: int = 0) -> tuple[Any, Any, Any]:
    """pgmm's stage-1 model from a validated config, as the trainer builds it (the precision policy
    applied), its objective and the policy."""
    import torch

    from pgmm_core.config.loading import validate_config
    from pgmm_core.devices.base import PrecisionPolicy
    from pgmm_core.model import build_model
    from pgmm_core.plugins import PluginHost
    from pgmm_vision.stage1.objective import QFormerPretrainObjective

    config = validate_config(stage1_config(sizes, bert, precision, checkpointing), PluginHost(environ={}))
    torch.manual_seed(seed)
    policy = PrecisionPolicy.for_precision(precision, "cpu")
    model = build_model(config, policy=policy)
    return model, QFormerPretrainObjective(config.objective), policy


class PgmmStep:
    """The objective's loss on a batch of pairs (image ids: the pairs' positions, all distinct)."""

    def __init__(self, model: Any, objective: Any) -> None:
        self.model = model
        self.objective = objective
        self.parts: dict[str, float] = {}

    def loss(self, images: Any, captions: list[str]) -> Any:
        from pgmm_vision.stage1.objective import PairBatch

        out = self.objective.loss(self.model, PairBatch(images, list(range(len(captions))), captions))
        self.parts = out.parts
        return out.loss


class LavisBlip2Qformer:
    """LAVIS ``Blip2Qformer.forward`` on copies of pgmm's stage-1 modules (see the module docstring)."""

    def __init__(self, pgmm_model: Any) -> None:
        import torch
        from torch import nn

        self.module = nn.Module()
        m = self.module
        m.visual_encoder = common.lavis_visual_encoder(pgmm_model)
        m.ln_vision = copy.deepcopy(pgmm_model.ln_vision)
        # LAVIS' BertLMHeadModel + query_tokens + vision_proj/text_proj/itm_head/temp, one module here
        m.Qformer = copy.deepcopy(pgmm_model.connector)
        m.Qformer.qformer.config._attn_implementation = "eager"
        self.parts: dict[str, float] = {}
        self.torch = torch

    def _query_pass(self, image_embeds: Any) -> tuple[Any, list[dict[str, Any]]]:
        """``Qformer.bert(query_embeds=..., use_cache=True)``: the last hidden state and every layer's
        self-attention keys and values of the queries (LAVIS' ``past_key_values``)."""
        q = self.module.Qformer
        cache: list[dict[str, Any]] = []
        hooks = []
        for layer in q.qformer.encoder.layer:
            entry: dict[str, Any] = {}
            cache.append(entry)
            attention = layer.attention.attention
            for name in ("key", "value"):
                hooks.append(getattr(attention, name).register_forward_hook(
                    lambda module, args, out, entry=entry, name=name: entry.__setitem__(name, out)))
        try:
            image_atts = self.torch.ones(image_embeds.shape[:2], dtype=self.torch.long)
            out = q.qformer(query_embeds=q.query_tokens.expand(image_embeds.shape[0], -1, -1),
                            encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts)
        finally:
            for hook in hooks:
                hook.remove()
        return out.last_hidden_state, cache

    def _lm_loss(self, input_ids: Any, text_mask: Any, cache: list[dict[str, Any]]) -> Any:
        """``Qformer(decoder_input_ids, attention_mask=[queries | text], past_key_values=cache, labels)``:
        BERT's decoder layers with eager attention over [cached query keys; text keys], the text FFN,
        the LM head at every position, shifted cross-entropy with label smoothing 0.1."""
        torch = self.torch
        F = torch.nn.functional
        q = self.module.Qformer
        decoder_ids = input_ids.clone()
        decoder_ids[:, 0] = q.tokenizer.bos_token_id
        labels = decoder_ids.masked_fill(decoder_ids == q.tokenizer.pad_token_id, -100)
        batch, length = decoder_ids.shape
        queries = cache[0]["key"].shape[1]
        mask = torch.cat([torch.ones(batch, queries, dtype=text_mask.dtype), text_mask], dim=1)
        causal = torch.cat([torch.ones(length, queries), torch.ones(length, length).tril()], dim=1)
        extended = (1.0 - causal[None, None] * mask[:, None, None, :].float()) * EXCLUDED
        hidden = q.qformer.dropout(q.qformer.layernorm(q.embeddings(input_ids=decoder_ids)))
        for layer, past in zip(q.qformer.encoder.layer, cache):
            attention = layer.attention.attention
            size = attention.attention_head_size

            def heads(x: Any, size: int = size) -> Any:
                return x.view(x.shape[0], x.shape[1], -1, size).permute(0, 2, 1, 3)

            key = torch.cat([heads(past["key"]), heads(attention.key(hidden))], dim=2)
            value = torch.cat([heads(past["value"]), heads(attention.value(hidden))], dim=2)
            scores = torch.matmul(heads(attention.query(hidden)), key.transpose(-1, -2)) / math.sqrt(size)
            probs = F.dropout(F.softmax(scores + extended, dim=-1), attention.attention_dropout, attention.training)
            context = torch.matmul(probs, value).permute(0, 2, 1, 3).reshape(batch, length, -1)
            hidden = layer.feed_forward_chunk(layer.attention.output(context, hidden))
        scores = q.cls(hidden)[:, :-1, :].contiguous()
        return F.cross_entropy(scores.view(-1, scores.shape[-1]), labels[:, 1:].contiguous().view(-1),
                               label_smoothing=0.1)

    def loss(self, image: Any, captions: list[str]) -> Any:
        torch = self.torch
        F = torch.nn.functional
        m = self.module
        q = m.Qformer
        image_embeds = m.ln_vision(m.visual_encoder.forward_features(image))
        query_output, cache = self._query_pass(image_embeds)
        image_feats = F.normalize(q.vision_proj(query_output), dim=-1)
        text = q.tokenize(captions, device=image.device)
        text_feat = F.normalize(q.text_proj(q.text_hidden(text.input_ids, text.attention_mask)[:, 0, :]), dim=-1)
        # ITC: concat_all_gather under a process group gives constants
        image_feats_all, text_feat_all = image_feats.detach(), text_feat.detach()
        sim_i2t = torch.matmul(image_feats.unsqueeze(1), text_feat_all.unsqueeze(-1)).squeeze(-1).max(-1).values / q.temp
        sim_t2i = torch.matmul(text_feat.unsqueeze(1).unsqueeze(1),
                               image_feats_all.permute(0, 2, 1)).squeeze(2).max(-1).values / q.temp
        bs = image.shape[0]
        targets = torch.arange(bs)
        loss_itc = (F.cross_entropy(sim_i2t, targets, label_smoothing=0.1)
                    + F.cross_entropy(sim_t2i, targets, label_smoothing=0.1)) / 2
        # ITM: hard negatives drawn row by row, one joint pass over [pos; neg image; neg text]
        with torch.no_grad():
            own = torch.eye(bs, dtype=torch.bool)
            weights_t2i = F.softmax(sim_t2i.masked_fill(own, EXCLUDED), dim=1)
            weights_i2t = F.softmax(sim_i2t.masked_fill(own, EXCLUDED), dim=1)
        image_embeds_neg = torch.stack([image_embeds[torch.multinomial(weights_t2i[b], 1).item()] for b in range(bs)])
        text_neg = [torch.multinomial(weights_i2t[b], 1).item() for b in range(bs)]
        ids_all = torch.cat([text.input_ids, text.input_ids, text.input_ids[text_neg]], dim=0)
        atts_all = torch.cat([text.attention_mask, text.attention_mask, text.attention_mask[text_neg]], dim=0)
        logits = q.itm_logits(torch.cat([image_embeds, image_embeds_neg, image_embeds], dim=0), ids_all, atts_all)
        itm_labels = torch.cat([torch.ones(bs, dtype=torch.long), torch.zeros(2 * bs, dtype=torch.long)])
        loss_itm = F.cross_entropy(logits, itm_labels)
        loss_lm = self._lm_loss(text.input_ids, text.attention_mask, cache)
        self.parts = {"itc": float(loss_itc.detach()), "itm": float(loss_itm.detach()), "itg": float(loss_lm.detach())}
        return loss_itc + loss_itm + loss_lm


def build_candidates(sizes: common.Sizes, bert: Path,
                     names: tuple[str, ...] = NAMES) -> tuple[dict[str, Any], dict[str, Any]]:
    """The named candidates from one set of weights (pgmm's fp32 model), and their loss objects."""
    base, _, _ = build_pgmm(sizes, bert)
    steps: dict[str, Any] = {}
    out = {}
    for name in names:
        if name == "lavis":
            steps[name] = LavisBlip2Qformer(base)
            out[name] = common.Candidate(name, steps[name].module, steps[name].loss, common._nullcontext)
            continue
        precision, checkpointing = common.PGMM_VARIANTS[name]
        model, objective, policy = build_pgmm(sizes, bert, precision, checkpointing)
        model.load_state_dict(base.state_dict())
        steps[name] = PgmmStep(model, objective)
        out[name] = common.Candidate(name, model, steps[name].loss, policy.autocast, precision)
    del base
    common.release_memory()
    for candidate in out.values():
        candidate.module.train()
        candidate.make_optimizer()
    return out, steps


def same_work(candidates: dict[str, Any], steps: dict[str, Any], images: Any, captions: list[str]) -> dict:
    """Each candidate's three losses and trainable-gradient norm on one batch, dropout off, the same
    seed before each (so ITM draws the same negatives: one multinomial draw per row either way)."""
    import torch

    out = {}
    for name, c in candidates.items():
        c.module.eval()
        torch.manual_seed(1234)
        with c.autocast():
            loss = c.loss_fn(images, captions)
        loss.backward()
        out[name] = {"loss": float(loss.detach()), **steps[name].parts,
                     "grad_norm": common.trainable_grad_norm(c.module)}
        c.module.zero_grad(set_to_none=True)
        c.module.train()
    return out


def measure_memory(preset: str, name: str, batch: int) -> dict:
    import pgmm_vision.stage1.objective  # noqa: F401  (counted with the libraries)
    import pgmm_vision.stage1.text_side  # noqa: F401

    runtime = common.import_runtime()
    sizes = common.PRESETS[preset]
    with tempfile.TemporaryDirectory(prefix="pgmm-stage1-bench-") as tmp:
        candidates, _ = build_candidates(sizes, bert_directory(sizes, Path(tmp)), (name,))
    return common.step_memory(candidates[name], common.make_data(3 * batch, sizes.image_size), batch, runtime)


def run(args: argparse.Namespace, bert: Path) -> dict:
    import torch

    sizes = common.PRESETS[args.preset]
    info = common.machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, load {info['load_average']}",
          flush=True)
    vocab = scaled(BERT_BASE_VOCAB, sizes)
    print(f"model ({args.preset}): ViT {sizes.vit_depth}x{sizes.vit_width} (frozen), Q-Former "
          f"{sizes.qf_layers}x{sizes.qf_width} (FFN {sizes.qf_ffn}, {sizes.queries} queries), BERT vocab {vocab:,} "
          f"+ [DEC], text {sizes.max_text_len} tokens", flush=True)
    candidates, steps = build_candidates(sizes, bert, tuple(args.candidates))
    data = common.make_data(max(64, args.batch * 4), sizes.image_size)
    check_images, check_captions = data.batch(0, args.batch)
    check = same_work(candidates, steps, check_images, check_captions)
    print("same work (dropout off): " + "; ".join(
        f"{n}: loss {v['loss']:.6f} (itc {v['itc']:.6f}, itm {v['itm']:.6f}, itg {v['itg']:.6f}), "
        f"grad norm {v['grad_norm']:.6f}" for n, v in check.items()), flush=True)
    flops = {}
    for name, c in candidates.items():
        torch.manual_seed(1234)
        def forward_backward(c=c):
            with c.autocast():
                loss = c.loss_fn(check_images, check_captions)
            loss.backward()
        flops[name], _ = common.flops_of(forward_backward)
        c.module.zero_grad(set_to_none=True)
    base = candidates["lavis"].module
    with torch.no_grad():  # the frozen tower's forward: the same in every candidate
        tower_flops, _ = common.flops_of(lambda: base.visual_encoder.forward_features(check_images))
    for c in candidates.values():  # warm-up
        c.step(*data.batch(0, args.batch))
    turns = common.take_turns(candidates, data, args.batch, args.rounds, args.steps)
    rate = turns.rates(args.steps * args.batch)
    memory = {}
    if not args.no_memory:
        for name in candidates:
            memory[name] = common.memory_in_subprocess(__file__, args.preset, name, args.batch, args.threads)
            print(f"memory {name}: peak {memory[name]['peak_rss_mib']:.0f} MiB", flush=True)
    rows = {}
    for name in candidates:
        row = {"samples_per_s": common.median(rate[name]), "samples_per_s_all": rate[name],
               "wall_samples_per_s": common.median(turns.rates(args.steps * args.batch, wall=True)[name]),
               "speed_vs_lavis": common.median([a / b for a, b in zip(rate[name], rate["lavis"])]),
               "gflop_per_sample": flops[name] / args.batch / 1e9,
               "same_work": check[name], "precision": candidates[name].precision,
               "train_losses": turns.losses[name]}
        if memory:
            row["memory"] = memory[name]
            row["peak_vs_lavis"] = memory[name]["peak_rss_mib"] / memory["lavis"]["peak_rss_mib"]
            row["model_training_vs_lavis"] = (memory[name]["model_training_peak_mib"]
                                              / memory["lavis"]["model_training_peak_mib"])
        rows[name] = row
    return {"benchmark": "stage1_step", "machine": info, "preset": args.preset, "sizes": common.asdict(sizes),
            "tower_gflop_per_sample": tower_flops / args.batch / 1e9, "bert_vocab": vocab, "embed_dim": scaled(BERT_BASE_EMBED_DIM, sizes), "batch": args.batch,
            "rounds": args.rounds, "steps_per_round": args.steps, "candidates": rows,
            "torch_threads": torch.get_num_threads()}


def table(result: dict) -> str:
    headers = ["candidate", "speed vs lavis", "model+training memory vs lavis", "peak RSS vs lavis",
               "samples per CPU-s", "model+training peak", "peak RSS", "GFLOP/sample"]
    rows = []
    for name, r in result["candidates"].items():
        mem = r.get("memory")
        rows.append([f"{name} ({r['precision']})", f"**{r['speed_vs_lavis']:.2f}x**",
                     f"**{r['model_training_vs_lavis']:.2f}x**" if mem else "-",
                     f"{r['peak_vs_lavis']:.2f}x" if mem else "-", f"{r['samples_per_s']:.2f}",
                     f"{mem['model_training_peak_mib']:,.0f} MiB" if mem else "-",
                     f"{mem['peak_rss_mib']:,.0f} MiB" if mem else "-", f"{r['gflop_per_sample']:.2f}"])
    return common.markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("proportional", "smoke"), default="proportional")
    common.add_step_arguments(parser, NAMES, "stage1_step")
    args = parser.parse_args(argv)
    if "lavis" not in args.candidates:
        parser.error("--candidates: the baseline 'lavis' is needed (ratios are against it)")
    if common.start_step_benchmark(args, measure_memory):
        return 0
    if args.smoke:
        args.preset, args.batch, args.rounds, args.steps = "smoke", 4, 2, 1
        args.candidates = ["pgmm", "lavis", "pgmm_bf16_ckpt"]
    with tempfile.TemporaryDirectory(prefix="pgmm-stage1-bench-") as tmp:
        result = run(args, bert_directory(common.PRESETS[args.preset], Path(tmp)))
    path = common.write_json("stage1_step" + ("_smoke" if args.smoke else ""), result, args.json)
    print(table(result))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
