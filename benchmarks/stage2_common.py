"""Shared pieces of the stage-2 benchmarks: model sizes, data, the three candidates, measurements.

Imported by ``train_step.py``, ``bf16_loss.py``, ``vocab_memory.py``, ``generation.py``,
``machine_limit.py`` and ``scaling.py`` (run them as ``python benchmarks/<name>.py``; this file is
not a benchmark itself).

The candidates compute the same stage-2 step — frozen vision tower, trained ln_vision + Q-Former +
mlp2x_gelu projector, frozen Llama-layout LLM with attention biases, captioning loss on
``[BOS] caption [EOS]`` after 32 visual tokens — from the same weights:

* ``pgmm``: :func:`pgmm_core.build_model` from a validated config (pgmm's own factories; the LLM is a
  randomly initialised openPangu-layout Llama registered by an in-process benchmark plugin, because
  a SentencePiece vocabulary of tens of thousands of pieces cannot be trained offline here). Its
  loss runs the LM head only at target positions; frozen towers run under ``no_grad``; SDPA.
* ``lavis``: what LAVIS' ``Blip2OPT.forward`` (and the original project, its fork) computes, built
  from copies of the same modules with LAVIS' explicit attention everywhere (``fused_attn=False`` in
  the EVA tower, ``eager`` in the Q-Former and the LLM) and the LLM called as
  ``LlamaForCausalLM(inputs_embeds=..., attention_mask=..., labels=...)``: logits over every
  position, transformers' shifted cross-entropy. One deliberate difference from LAVIS: the BOS
  label is masked as pgmm (and the original project with its prompt) does, so that the loss is the
  same number.
* ``hf``: transformers' ``Blip2ForConditionalGeneration`` with the same sizes (Llama text model with
  ``attention_bias=True``), ``language_projection`` replaced by the mlp2x_gelu ``nn.Sequential``,
  ``post_layernorm`` eps set to ln_vision's 1e-5, vision model and LLM frozen the same way
  (``requires_grad_(False)``; vision in eval mode). Default attention (SDPA).
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace  # noqa: F401  (asdict: the scripts record their sizes)
from pathlib import Path
from typing import Any, Callable

RESULTS_DIR = Path(__file__).resolve().parent / "results"
IGNORE_INDEX = -100


# --- sizes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    image_size: int
    patch_size: int
    vit_width: int
    vit_depth: int
    vit_heads: int
    vit_mlp: int
    qf_width: int
    qf_layers: int
    qf_heads: int
    qf_ffn: int
    queries: int
    llm_hidden: int
    llm_layers: int
    llm_heads: int
    llm_kv_heads: int
    llm_ffn: int
    vocab: int
    max_text_len: int = 32

    def describe(self) -> str:
        return (f"ViT {self.vit_depth}x{self.vit_width} (heads {self.vit_heads}, MLP {self.vit_mlp}, "
                f"{(self.image_size // self.patch_size) ** 2 + 1} tokens); Q-Former {self.qf_layers}x{self.qf_width} "
                f"(FFN {self.qf_ffn}, {self.queries} queries); mlp2x_gelu {self.qf_width}->{self.llm_hidden}; "
                f"LLM {self.llm_layers}x{self.llm_hidden} (heads {self.llm_heads}/{self.llm_kv_heads} KV, "
                f"FFN {self.llm_ffn}, vocab {self.vocab:,}, vocab/hidden {self.vocab / self.llm_hidden:.1f})")


# The released model (EVA-ViT-g, bert-base Q-Former, openPangu-Embedded-7B): used for the FLOP model only.
FULL = Sizes(image_size=224, patch_size=14, vit_width=1408, vit_depth=39, vit_heads=16, vit_mlp=6144,
             qf_width=768, qf_layers=12, qf_heads=12, qf_ffn=3072, queries=32,
             llm_hidden=4096, llm_layers=34, llm_heads=32, llm_kv_heads=8, llm_ffn=12800, vocab=153_376)
# Every width divided by 8; depths, head dims (ViT 88, LLM 128), token counts, the GQA ratio and
# vocab/hidden (37.4) kept, so each part's share of the FLOPs and of the activation memory is the
# full model's (attention, which scales with width and not width squared, excepted).
PROPORTIONAL = Sizes(image_size=224, patch_size=14, vit_width=176, vit_depth=39, vit_heads=2, vit_mlp=768,
                     qf_width=96, qf_layers=12, qf_heads=2, qf_ffn=384, queries=32,
                     llm_hidden=512, llm_layers=34, llm_heads=4, llm_kv_heads=1, llm_ffn=1600, vocab=19_172)
# The proportional body with openPangu's real vocabulary.
REAL_VOCAB = replace(PROPORTIONAL, vocab=153_376)
# Seconds on a CPU: for --smoke runs (the smoke test) only.
SMOKE = Sizes(image_size=32, patch_size=8, vit_width=32, vit_depth=1, vit_heads=2, vit_mlp=64,
              qf_width=32, qf_layers=2, qf_heads=2, qf_ffn=64, queries=4,
              llm_hidden=32, llm_layers=1, llm_heads=2, llm_kv_heads=1, llm_ffn=64, vocab=600)
PRESETS = {"proportional": PROPORTIONAL, "real_vocab": REAL_VOCAB, "full": FULL, "smoke": SMOKE}


# --- tokenizer and data ------------------------------------------------------------------------------

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "star")
PLACES = ("top left", "top right", "bottom left", "bottom right", "center")
CLAUSES = (
    "on a light grey background",
    "with a few dark speckles",
    "drawn by a program",
    "filled with one flat colour",
)
SPECIALS = ("<unk>", "<s>", "[unused10]", "<image>")  # pad/unk 0, BOS 1, EOS 2, BLIP-2 image token 3


def caption_words() -> list[str]:
    words = {"a", "photo", "of", "in", "the", "picture", "small", "large"}
    words.update(COLOURS)
    words.update(SHAPES)
    for text in PLACES + CLAUSES:
        words.update(text.split())
    return sorted(words)


class WordTokenizer:
    """Word-level tokenizer with openPangu's special-token roles (implements pgmm's ``Tokenizer``).

    Ids beyond the caption words exist in the model's vocabulary and decode as ``w<id>``: a random
    frozen LLM generates them.
    """

    bos_token_id, eos_token_id, pad_token_id, image_token_id = 1, 2, 0, 3

    def __init__(self, vocab_size: int) -> None:
        self.words = list(SPECIALS) + caption_words()
        if vocab_size < len(self.words):
            raise ValueError(f"vocab_size {vocab_size} < {len(self.words)} words")
        self.vocab_size = vocab_size
        self.ids = {w: i for i, w in enumerate(self.words)}

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = [self.ids.get(word, 0) for word in text.split()]
        return [self.bos_token_id, *ids] if add_bos else ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        out = []
        for i in ids:
            if skip_special_tokens and i < len(SPECIALS):
                continue
            out.append(self.words[i] if i < len(self.words) else f"w{i}")
        return " ".join(out)


def caption_for(index: int, colour: str, shape: str, place: str, seed: int = 0) -> str:
    """About 20 tokens with BOS and EOS (13..25): a template naming the image's three facts, and
    0-3 optional clauses so that rows differ in length and batches carry padding."""
    rng = random.Random(f"caption:{seed}:{index}")
    size = rng.choice(("small", "large"))
    words = f"a photo of a {size} {colour} {shape} in the {place}"
    clauses = rng.sample(CLAUSES, rng.randint(0, 3))
    return " ".join([words, *clauses])


@dataclass
class Data:
    images: Any  # N×3×H×W float tensor (blip_image_eval: resize + CLIP normalisation)
    captions: list[str]

    def batch(self, step: int, batch_size: int) -> tuple[Any, list[str]]:
        n = len(self.captions)
        idx = [(step * batch_size + j) % n for j in range(batch_size)]
        return self.images[idx], [self.captions[i] for i in idx]


def make_data(count: int, image_size: int, seed: int = 0, split: str = "train") -> Data:
    """Procedural images (pgmm-data's ``synthetic_shapes``) with ~20-token captions naming them."""
    import torch
    from pgmm_data.processors import blip_image_eval
    from pgmm_data.synthetic import render

    transform = blip_image_eval(image_size)
    images, captions = [], []
    for index in range(count):
        image, (colour, shape, place) = render(seed, split, index, image_size)
        images.append(transform(image))
        captions.append(caption_for(index, colour, shape, place, seed))
    return Data(torch.stack(images), captions)


# --- pgmm, through its config and build path --------------------------------------------------------


def _bench_llm_config_model():
    from typing import Literal

    from pydantic import Field

    from pgmm_core.config.sections import ComponentConfig
    from pgmm_pangu.configs import LoraSettings

    class BenchLlamaConfig(ComponentConfig):
        """A random openPangu-layout Llama (attention biases, untied head) with a word tokenizer."""

        type: Literal["bench_llama"] = "bench_llama"
        hidden_size: int = Field(..., gt=0)
        intermediate_size: int = Field(..., gt=0)
        num_layers: int = Field(..., gt=0)
        num_heads: int = Field(..., gt=0)
        num_kv_heads: int = Field(..., gt=0)
        vocab_size: int = Field(..., gt=0)
        freeze: bool = True
        grad_checkpointing: bool = False
        lora: LoraSettings | None = None

    return BenchLlamaConfig


def build_bench_llama(config: Any) -> Any:
    import torch
    from transformers import LlamaForCausalLM

    from pgmm_pangu.backend import CausalLMBackend
    from pgmm_pangu.checkpoint import llama_config_from_release

    release = {"vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
               "intermediate_size": config.intermediate_size, "num_hidden_layers": config.num_layers,
               "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
               "bias": True, "eos_token_id": WordTokenizer.eos_token_id, "bos_token_id": 1, "pad_token_id": 0}
    model = LlamaForCausalLM(llama_config_from_release(release))
    with torch.no_grad():  # non-zero biases and norm weights (as make_tiny does): every parameter matters
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0.0, 0.02)
            elif "norm" in name:
                param.normal_(1.0, 0.1)
    return CausalLMBackend(model.eval(), WordTokenizer(config.vocab_size), frozen=config.freeze,
                           grad_checkpointing=config.grad_checkpointing, lora=config.lora)


class BenchPlugin:
    """Registers ``bench_llama`` through pgmm's own registration hook (as any third-party plugin)."""

    def __init__(self) -> None:
        from pgmm_core.hookspecs import hookimpl

        config_model = _bench_llm_config_model()

        @hookimpl
        def pgmm_register_llm_backends(registrar):
            registrar.add("bench_llama", build_bench_llama, config_model,
                          description="random openPangu-layout Llama for the benchmarks")

        self.pgmm_register_llm_backends = pgmm_register_llm_backends


def pgmm_config(sizes: Sizes, precision: str = "fp32", llm_checkpointing: bool = False,
                lora: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "model": {
            "vision": {"type": "eva_vit_g", "image_size": sizes.image_size, "patch_size": sizes.patch_size,
                       "embed_dim": sizes.vit_width, "depth": sizes.vit_depth, "num_heads": sizes.vit_heads,
                       "mlp_dim": sizes.vit_mlp},
            "connector": {"type": "qformer", "num_query_tokens": sizes.queries, "hidden_size": sizes.qf_width,
                          "num_layers": sizes.qf_layers, "num_heads": sizes.qf_heads,
                          "intermediate_size": sizes.qf_ffn},
            "projector": {"type": "mlp2x_gelu"},
            "llm": {"type": "bench_llama", "hidden_size": sizes.llm_hidden, "intermediate_size": sizes.llm_ffn,
                    "num_layers": sizes.llm_layers, "num_heads": sizes.llm_heads,
                    "num_kv_heads": sizes.llm_kv_heads, "vocab_size": sizes.vocab,
                    "grad_checkpointing": llm_checkpointing, "lora": lora},
            "prompt": "",
            "max_text_len": sizes.max_text_len,
        },
        "data": {"train": [{"type": "synthetic_shapes", "num_samples": 8}], "batch_size": 8, "num_workers": 0},
        "train": {"output_dir": "unused"},
        "device": {"type": "cpu", "precision": precision},
    }


def build_pgmm(sizes: Sizes, precision: str = "fp32", seed: int = 0,
               llm_checkpointing: bool = False, lora: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """pgmm's model exactly as the trainer builds it: validated config and ``build_model``, which
    applies the device's precision policy (frozen towers stored in its dtype). Returns (model, policy)."""
    import torch

    from pgmm_core.config.loading import validate_config
    from pgmm_core.devices.base import PrecisionPolicy
    from pgmm_core.model import build_model
    from pgmm_core.plugins import PluginHost

    host = PluginHost(environ={})
    host.register(BenchPlugin(), name="pgmm-benchmarks")
    config = validate_config(pgmm_config(sizes, precision, llm_checkpointing, lora), host)
    torch.manual_seed(seed)
    policy = PrecisionPolicy.for_precision(precision, "cpu")
    model = build_model(config, policy=policy)
    return model, policy


# --- the baselines -----------------------------------------------------------------------------------


def _disabled_train(self, mode: bool = True):
    """LAVIS' ``disabled_train``: the frozen tower stays in eval mode."""
    return self


def lavis_visual_encoder(pgmm_model: Any) -> Any:
    """A copy of pgmm's frozen tower as LAVIS runs it: explicit attention (``fused_attn=False``: q @ k^T,
    softmax, @ v), parameters frozen by ``requires_grad=False`` only (no ``no_grad`` around it), kept in
    eval mode (``disabled_train``)."""
    encoder = copy.deepcopy(pgmm_model.vision.model)
    for sub in encoder.modules():
        if hasattr(sub, "fused_attn"):
            sub.fused_attn = False  # LAVIS' explicit q @ k^T softmax
    encoder.requires_grad_(False)
    encoder.eval()
    encoder.train = _disabled_train.__get__(encoder)
    return encoder


class LavisStyle:
    """LAVIS ``Blip2OPT.forward`` with an openPangu-layout LLM, from copies of pgmm's modules."""

    def __init__(self, pgmm_model: Any) -> None:
        import torch
        from torch import nn

        self.module = nn.Module()
        m = self.module
        m.visual_encoder = lavis_visual_encoder(pgmm_model)
        m.ln_vision = copy.deepcopy(pgmm_model.ln_vision)
        m.Qformer = copy.deepcopy(pgmm_model.connector.qformer)
        m.Qformer.config._attn_implementation = "eager"
        m.query_tokens = nn.Parameter(pgmm_model.connector.query_tokens.detach().clone())
        m.opt_proj = copy.deepcopy(pgmm_model.projector)
        m.llm_model = copy.deepcopy(pgmm_model.llm.model)
        m.llm_model.config._attn_implementation = "eager"
        m.llm_model.requires_grad_(False)  # LAVIS freezes the LLM's parameters (and leaves its mode)
        self.tokenizer = pgmm_model.llm.tokenizer
        self.max_txt_len = pgmm_model.max_text_len
        self.torch = torch

    def loss(self, image: Any, captions: list[str]) -> Any:
        torch = self.torch
        m = self.module
        image_embeds = m.ln_vision(m.visual_encoder.forward_features(image))
        image_atts = torch.ones(image_embeds.size()[:-1], dtype=torch.long)
        query_tokens = m.query_tokens.expand(image_embeds.shape[0], -1, -1)
        query_output = m.Qformer(query_embeds=query_tokens, encoder_hidden_states=image_embeds,
                                 encoder_attention_mask=image_atts, return_dict=True)
        inputs_llm = m.opt_proj(query_output.last_hidden_state)
        atts_llm = torch.ones(inputs_llm.size()[:-1], dtype=torch.long)
        ids, attention = pad_right(self.tokenizer, captions, self.max_txt_len)
        targets = ids.masked_fill(ids == self.tokenizer.pad_token_id, IGNORE_INDEX)
        targets[:, :1] = IGNORE_INDEX  # the BOS "prompt" (see the module docstring)
        empty_targets = torch.full(atts_llm.size(), IGNORE_INDEX, dtype=torch.long)
        targets = torch.cat([empty_targets, targets], dim=1)
        inputs_embeds = m.llm_model.get_input_embeddings()(ids)
        inputs_embeds = torch.cat([inputs_llm, inputs_embeds], dim=1)
        attention_mask = torch.cat([atts_llm, attention], dim=1)
        outputs = m.llm_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, return_dict=True,
                              labels=targets)
        return outputs.loss


def pad_right(tokenizer: Any, captions: list[str], max_len: int) -> tuple[Any, Any]:
    """``[BOS] caption [EOS]`` truncated to ``max_len`` (EOS kept), right-padded to the longest."""
    import torch

    rows = [tokenizer.encode(c, add_bos=True)[: max_len - 1] + [tokenizer.eos_token_id] for c in captions]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
    return ids, attention


def hf_blip2_config(sizes: Sizes) -> Any:
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig, LlamaConfig

    vision = Blip2VisionConfig(hidden_size=sizes.vit_width, intermediate_size=sizes.vit_mlp,
                               num_hidden_layers=sizes.vit_depth, num_attention_heads=sizes.vit_heads,
                               image_size=sizes.image_size, patch_size=sizes.patch_size, hidden_act="gelu",
                               layer_norm_eps=1e-6, attention_dropout=0.0, qkv_bias=True)
    qformer = Blip2QFormerConfig(hidden_size=sizes.qf_width, num_hidden_layers=sizes.qf_layers,
                                 num_attention_heads=sizes.qf_heads, intermediate_size=sizes.qf_ffn,
                                 hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                                 layer_norm_eps=1e-12, cross_attention_frequency=2,
                                 encoder_hidden_size=sizes.vit_width, use_qformer_text_input=False)
    text = LlamaConfig(vocab_size=sizes.vocab, hidden_size=sizes.llm_hidden, intermediate_size=sizes.llm_ffn,
                       num_hidden_layers=sizes.llm_layers, num_attention_heads=sizes.llm_heads,
                       num_key_value_heads=sizes.llm_kv_heads, max_position_embeddings=32768,
                       rms_norm_eps=1e-5, rope_theta=16_000_000.0, attention_bias=True, mlp_bias=False,
                       tie_word_embeddings=False, bos_token_id=1, eos_token_id=WordTokenizer.eos_token_id,
                       pad_token_id=0)
    return Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                       text_config=text.to_dict(), num_query_tokens=sizes.queries,
                       image_token_index=WordTokenizer.image_token_id)


class HfBlip2:
    """transformers' ``Blip2ForConditionalGeneration`` holding pgmm's weights."""

    def __init__(self, pgmm_model: Any, sizes: Sizes) -> None:
        import torch
        from torch import nn
        from transformers import Blip2ForConditionalGeneration

        from pgmm_vision.keymap import pgmm_to_hf

        model = Blip2ForConditionalGeneration(hf_blip2_config(sizes))
        model.language_projection = nn.Sequential(nn.Linear(sizes.qf_width, sizes.llm_hidden), nn.GELU(),
                                                  nn.Linear(sizes.llm_hidden, sizes.llm_hidden))
        model.vision_model.post_layernorm.eps = pgmm_model.ln_vision.eps
        state = pgmm_to_hf(pgmm_model.state_dict())
        state.update({f"language_model.{k}": v for k, v in pgmm_model.llm.model.state_dict().items()})
        state.update({f"language_projection.{k}": v for k, v in pgmm_model.projector.state_dict().items()})
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("qformer.embeddings.")]  # text path, unused
        if missing or unexpected:
            raise RuntimeError(f"HF BLIP-2 weight transfer: missing {missing[:5]}, unexpected {unexpected[:5]}")
        model.vision_model.requires_grad_(False)
        model.vision_model.eval()
        model.vision_model.train = _disabled_train.__get__(model.vision_model)
        model.language_model.requires_grad_(False)
        model.language_model.eval()
        self.module = model
        self.tokenizer = pgmm_model.llm.tokenizer
        self.max_txt_len = pgmm_model.max_text_len
        self.queries = sizes.queries
        self.torch = torch

    def inputs(self, captions: list[str]) -> tuple[Any, Any, Any]:
        torch = self.torch
        ids, attention = pad_right(self.tokenizer, captions, self.max_txt_len)
        batch = ids.shape[0]
        image_ids = torch.full((batch, self.queries), self.tokenizer.image_token_id, dtype=torch.long)
        labels = ids.masked_fill(attention == 0, IGNORE_INDEX)
        labels[:, 0] = IGNORE_INDEX  # BOS
        labels = torch.cat([torch.full((batch, self.queries), IGNORE_INDEX), labels], dim=1)
        input_ids = torch.cat([image_ids, ids], dim=1)
        mask = torch.cat([torch.ones((batch, self.queries), dtype=torch.long), attention], dim=1)
        return input_ids, mask, labels

    def loss(self, image: Any, captions: list[str]) -> Any:
        input_ids, mask, labels = self.inputs(captions)
        return self.module(pixel_values=image, input_ids=input_ids, attention_mask=mask, labels=labels).loss


# --- candidates ----------------------------------------------------------------------------------------


@dataclass
class Candidate:
    name: str
    module: Any  # the nn.Module holding every parameter
    loss_fn: Callable[[Any, list[str]], Any]
    autocast: Callable[[], Any]
    precision: str = "fp32"
    optimizer: Any = None

    def make_optimizer(self, lr: float = 1e-4, weight_decay: float = 0.05) -> None:
        """AdamW with LAVIS' parameter groups (pgmm's ``build_optimizer``), for every candidate."""
        import torch

        from pgmm_core.train.optim import parameter_groups

        self.optimizer = torch.optim.AdamW(parameter_groups(self.module, weight_decay), lr=lr,
                                           betas=(0.9, 0.999), weight_decay=weight_decay)

    def step(self, images: Any, captions: list[str]) -> float:
        """One training step as pgmm's trainer takes it: forward under the precision policy's
        autocast, backward, AdamW step, gradients set to None."""
        with self.autocast():
            loss = self.loss_fn(images, captions)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


# pgmm variants: name -> (device.precision, model.llm.grad_checkpointing)
PGMM_VARIANTS = {"pgmm": ("fp32", False), "pgmm_bf16": ("bf16", False),
                 "pgmm_ckpt": ("fp32", True), "pgmm_bf16_ckpt": ("bf16", True)}
CANDIDATES = ("pgmm", "lavis", "hf", "pgmm_bf16", "pgmm_ckpt", "pgmm_bf16_ckpt")


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()


def build_candidates(sizes: Sizes, names: tuple[str, ...] = CANDIDATES, seed: int = 0) -> dict[str, Candidate]:
    """Build the named candidates from one set of weights (pgmm's model built with ``seed``)."""
    base, _ = build_pgmm(sizes, "fp32", seed)
    out: dict[str, Candidate] = {}
    for name in names:
        if name in PGMM_VARIANTS:
            precision, checkpointing = PGMM_VARIANTS[name]
            model, policy = build_pgmm(sizes, precision, seed, checkpointing)
            model.load_state_dict(base.state_dict())
            out[name] = Candidate(name, model, lambda x, c, m=model: m(x, c).loss, policy.autocast, precision)
        elif name == "lavis":
            lavis = LavisStyle(base)
            out[name] = Candidate(name, lavis.module, lavis.loss, _nullcontext)
        elif name == "hf":
            hf = HfBlip2(base, sizes)
            out[name] = Candidate(name, hf.module, hf.loss, _nullcontext)
        else:
            raise ValueError(f"unknown candidate {name!r}; known: {', '.join(CANDIDATES)}")
    del base
    release_memory()
    for candidate in out.values():
        candidate.module.train()
        candidate.make_optimizer()
    return out


def trainable_grad_norm(module: Any) -> float:
    import torch

    grads = [p.grad.float().norm() for p in module.parameters() if p.requires_grad and p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def same_work_check(candidates: dict[str, Candidate], images: Any, captions: list[str]) -> dict[str, dict]:
    """Loss and trainable-gradient norm of each candidate on one batch with dropout off (eval mode):
    equal numbers show the candidates compute the same function from the same weights."""
    out = {}
    for name, c in candidates.items():
        c.module.eval()
        with c.autocast():
            loss = c.loss_fn(images, captions)
        loss.backward()
        out[name] = {"loss": float(loss.detach()), "grad_norm": trainable_grad_norm(c.module)}
        c.module.zero_grad(set_to_none=True)
        c.module.train()
    return out


# --- measurement helpers -------------------------------------------------------------------------------


@dataclass
class Turns:
    """Per-candidate, per-round process CPU seconds and wall seconds, and every step's loss."""

    seconds: dict[str, list[float]]
    wall_seconds: dict[str, list[float]]
    losses: dict[str, list[float]]

    def rates(self, samples_per_turn: int, wall: bool = False) -> dict[str, list[float]]:
        times = self.wall_seconds if wall else self.seconds
        return {name: [samples_per_turn / t for t in ts] for name, ts in times.items()}


def take_turns(candidates: dict[str, Any], data: Data, batch: int, rounds: int, steps: int) -> Turns:
    """Candidates take turns in this process, the order rotating each round, ``steps`` training steps
    each per turn on the same batches; timed in process CPU time (and wall time)."""
    names = tuple(candidates)
    turns = Turns({n: [] for n in names}, {n: [] for n in names}, {n: [] for n in names})
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            c = candidates[name]
            start, wall = time.process_time(), time.perf_counter()
            for s in range(steps):
                turns.losses[name].append(c.step(*data.batch(1 + r * steps + s, batch)))
            turns.seconds[name].append(time.process_time() - start)
            turns.wall_seconds[name].append(time.perf_counter() - wall)
        print(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{n} {steps * batch / turns.seconds[n][-1]:.2f}/s" for n in names), flush=True)
    return turns


def add_step_arguments(parser: Any, names: tuple[str, ...], results_name: str) -> None:
    """The options of the training-step benchmarks (``train_step.py``, ``stage1_step.py``)."""
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="training steps per candidate per round")
    parser.add_argument("--candidates", nargs="+", default=list(names), choices=names)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--json", help=f"where to write the results (default benchmarks/results/{results_name}.json)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks that it runs")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: timing in process CPU time stays meaningful when "
                        "other jobs share the cores)")
    parser.add_argument("--child-memory", nargs=4, metavar=("PRESET", "NAME", "BATCH", "THREADS"),
                        help=argparse.SUPPRESS)


def start_step_benchmark(args: Any, measure_memory: Callable[[str, str, int], dict]) -> bool:
    """Set the torch threads; in a ``--child-memory`` process also measure that one candidate and print
    its JSON line, and return True (the process is done)."""
    import torch

    if args.child_memory:
        preset, name, batch, threads = args.child_memory
        torch.set_num_threads(int(threads))
        print(json.dumps(measure_memory(preset, name, int(batch))))
        return True
    torch.set_num_threads(args.threads)
    return False


def memory_in_subprocess(script: str, preset: str, name: str, batch: int, threads: int) -> dict[str, Any]:
    """``script --child-memory ...`` in a fresh process: one candidate's :func:`step_memory` alone."""
    out = subprocess.run([sys.executable, script, "--child-memory", preset, name, str(batch), str(threads)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"memory child for {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def step_memory(candidate: Any, data: Data, batch: int, runtime_mib: float) -> dict[str, Any]:
    """Peak resident memory across two training steps taken after a warm-up step (AdamW's state
    allocated), the peak reset just before them; ``runtime_mib``: :func:`import_runtime`'s figure."""
    candidate.step(*data.batch(0, batch))  # AdamW state exists from here on
    release_memory()
    reset_peak_rss()
    before = status_kib("VmRSS")
    for step in (1, 2):
        candidate.step(*data.batch(step, batch))
    peak = status_kib("VmHWM")
    return {"candidate": candidate.name, "batch": batch, "runtime_rss_mib": runtime_mib,
            "rss_before_mib": before / 1024, "peak_rss_mib": peak / 1024,
            "model_training_peak_mib": peak / 1024 - runtime_mib, "step_increase_mib": (peak - before) / 1024}


def import_runtime() -> float:
    """Import everything a candidate uses; returns the resident set size then (MiB): the runtime's
    own memory (libraries, interpreter), which no implementation choice changes."""
    import timm  # noqa: F401
    import torch  # noqa: F401
    from transformers import Blip2ForConditionalGeneration, LlamaForCausalLM  # noqa: F401

    import pgmm_core.model  # noqa: F401
    import pgmm_pangu.backend  # noqa: F401
    import pgmm_vision.eva  # noqa: F401
    import pgmm_vision.qformer  # noqa: F401

    release_memory()
    return status_kib("VmRSS") / 1024


def release_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def reset_peak_rss() -> None:
    """Peak RSS (``VmHWM``) := current RSS (Linux ``clear_refs`` 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def limit_address_space(extra_gib: float) -> None:
    """Let this process map at most ``extra_gib`` more than it has now: an allocation past that
    fails inside this process (an out-of-memory answer) instead of pressing on the machine."""
    import resource

    now = status_kib("VmSize") * 1024
    cap = now + int(extra_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _cpu_flash_formulas() -> dict:
    """``torch.utils.flop_counter`` knows the CUDA SDPA kernels but not the CPU flash-attention ones
    that SDPA dispatches to here; without these, pgmm's and transformers' attention would count as
    zero FLOPs while LAVIS' explicit ``bmm`` attention counts."""
    import torch
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    return {aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}


def flop_counter() -> Any:
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=_cpu_flash_formulas())


def flops_of(fn: Callable[[], Any]) -> tuple[int, dict[str, dict[str, int]]]:
    """FLOPs counted by ``torch.utils.flop_counter`` for one call: the total, and per module name
    (``"Global"`` included) the counts per operator."""
    counter = flop_counter()
    with counter:
        fn()
    per_module = {k: {str(op): int(n) for op, n in v.items()} for k, v in counter.get_flop_counts().items()}
    return int(counter.get_total_flops()), per_module


def machine() -> dict[str, Any]:
    import torch
    import transformers

    cpu = "unknown"
    flags: list[str] = []
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and cpu == "unknown":
            cpu = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = [f for f in line.split(":", 1)[1].split() if f.startswith(("avx512_bf16", "amx", "avx512f"))]
    family = model_no = None
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu family") and family is None:
            family = line.split(":")[1].strip()
        if line.startswith("model\t") and model_no is None:
            model_no = line.split(":")[1].strip()
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    return {
        "cpu": f"{cpu} (family {family}, model {model_no})",
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_flags": flags,
        "memory_gib": round(mem_kib / 2**20, 1),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": "none (no GPU or NPU on this machine)",
    }


def write_json(name: str, payload: dict[str, Any], path: str | None = None) -> Path:
    out = Path(path) if path else RESULTS_DIR / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    return out


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result

