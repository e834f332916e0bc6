"""The openPangu LLM backend: embeddings, target-only captioning loss and explicit-settings generation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pgmm_pangu.checkpoint import DTYPES, load_llama, read_release_config
from pgmm_pangu.loss import target_cross_entropy
from pgmm_pangu.tokenizer import PanguTokenizer


class CausalLMBackend(nn.Module):
    """Wraps a transformers causal LM (``model.model`` + ``model.lm_head``) and its tokenizer."""

    def __init__(self, model: Any, tokenizer: Any, *, frozen: bool, grad_checkpointing: bool = False,
                 loss_chunk_tokens: int = 0, follows_precision_policy: bool = True) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.frozen = frozen
        self.follows_precision_policy = follows_precision_policy
        self.hidden_size = int(model.config.hidden_size)
        self.loss_chunk_tokens = loss_chunk_tokens
        if grad_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def caption_loss(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                     labels: torch.Tensor) -> torch.Tensor:
        body = self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.model
        hidden = body(inputs_embeds=inputs_embeds.to(self.dtype), attention_mask=attention_mask,
                      use_cache=False).last_hidden_state
        return target_cross_entropy(hidden, labels, self.model.get_output_embeddings(),
                                    chunk_tokens=self.loss_chunk_tokens)

    @torch.no_grad()
    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, settings: Any) -> list[list[int]]:
        """New token ids only; decoding settings are passed explicitly so that a release's
        ``generation_config.json`` (openPangu's says ``do_sample: true``) never changes them."""
        from transformers import GenerationConfig

        tok = self.tokenizer
        sampling = {"top_p": settings.top_p, "top_k": 0, "temperature": settings.temperature} \
            if settings.do_sample else {}
        config = GenerationConfig(
            num_beams=settings.num_beams,
            max_new_tokens=settings.max_new_tokens,
            min_new_tokens=settings.min_new_tokens,
            do_sample=settings.do_sample,
            repetition_penalty=settings.repetition_penalty,
            length_penalty=settings.length_penalty,
            num_return_sequences=settings.num_return_sequences,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            use_cache=True,
            **sampling,
        )
        output = self.model.generate(inputs_embeds=inputs_embeds.to(self.dtype), attention_mask=attention_mask,
                                     generation_config=config)
        rows = []
        for row in output.tolist():
            if tok.eos_token_id in row:
                row = row[: row.index(tok.eos_token_id)]
            rows.append([t for t in row if t != tok.pad_token_id])
        return rows


def _dtype(config: Any) -> torch.dtype:
    return DTYPES[config.dtype or "fp32"]


def build_openpangu(config: Any) -> CausalLMBackend:
    path = Path(config.path).expanduser()
    read_release_config(path)  # missing directory / wrong model_type reported before anything else
    tokenizer = PanguTokenizer(path)
    model = load_llama(path, _dtype(config))
    return CausalLMBackend(model, tokenizer, frozen=config.freeze, grad_checkpointing=config.grad_checkpointing,
                           loss_chunk_tokens=config.loss_chunk_tokens, follows_precision_policy=config.dtype is None)


def build_tiny_openpangu(config: Any) -> CausalLMBackend:
    from pgmm_pangu.make_tiny import TinySpec, ensure_tiny_checkpoint

    spec = TinySpec(hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
                    num_layers=config.num_layers, num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
                    vocab_size=config.vocab_size, seed=config.seed, pretrain_steps=config.pretrain_steps)
    path = ensure_tiny_checkpoint(spec, config.path)
    tokenizer = PanguTokenizer(path)
    model = load_llama(path, _dtype(config))
    return CausalLMBackend(model, tokenizer, frozen=config.freeze, grad_checkpointing=config.grad_checkpointing,
                           loss_chunk_tokens=config.loss_chunk_tokens, follows_precision_policy=config.dtype is None)
