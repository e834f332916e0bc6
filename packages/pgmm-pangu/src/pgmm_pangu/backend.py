"""The LLM backend protocol on a transformers causal LM, and the openPangu factories.

:class:`CausalLMBackend` is what the multimodal model drives: token embeddings, a captioning loss that
runs the LM head only at target positions (:mod:`pgmm_pangu.loss`), and generation from
``inputs_embeds`` with explicitly given decoding settings that returns only the new tokens.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from pgmm_core.errors import CheckpointError
from pgmm_pangu.checkpoint import DTYPES, load_llama, read_release_config
from pgmm_pangu.loss import IGNORE_INDEX, target_cross_entropy
from pgmm_pangu.tokenizer import PanguTokenizer

# Config attributes of transformers models whose forward transforms the LM head's output (Gemma 2
# soft-capping, Cohere/Granite scaling): their loss must come from the model's own forward.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


class CausalLMBackend(nn.Module):
    """A transformers causal LM (``get_decoder()`` + ``get_output_embeddings()``) and its tokenizer."""

    def __init__(self, model: Any, tokenizer: Any, *, frozen: bool, grad_checkpointing: bool = False,
                 loss_chunk_tokens: int = 0, follows_precision_policy: bool = True, lora: Any = None,
                 source_path: Path | None = None) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.frozen = frozen
        self.follows_precision_policy = follows_precision_policy
        self.hidden_size = int(model.config.hidden_size)
        self.loss_chunk_tokens = loss_chunk_tokens
        self.lora = lora  # model.llm.lora settings; the adapters come with add_adapters()
        self.source_path = source_path  # the release-layout directory the weights came from
        # With adapters, frozen and trained weights share the decoder layers: the fsdp2 strategy then
        # shards this backend as one part (pgmm_core.strategies.sharding_plan).
        self.sharding_part = False
        _check_special_ids(tokenizer, model.get_output_embeddings().weight.shape[0])
        self._neutralise_generation_defaults()
        self._head_transforms_logits = any(getattr(model.config, name, None) for name in LOGIT_TRANSFORMS)
        if grad_checkpointing:
            _checkpoint_each_layer(model)

    def add_adapters(self) -> int:
        """Add the LoRA adapters of ``model.llm.lora`` (none when it is null); returns their parameter count.

        ``build_model`` calls this after it froze the LLM, recorded the frozen weights' fingerprint
        and stored them in the precision policy's dtype, so the adapters alone train, in float32,
        and the fingerprint describes the base weights (:mod:`pgmm_pangu.lora`).
        """
        if self.lora is None:
            return 0
        from pgmm_pangu.lora import add_lora, has_lora

        if has_lora(self.model):
            raise RuntimeError("add_adapters called twice: the LLM already has LoRA adapters")
        self.sharding_part = True
        return add_lora(self.model, self.lora)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def _neutralise_generation_defaults(self) -> None:
        """Forget ``generation_config.json``: transformers fills every setting a caller leaves unset
        from it, and openPangu's says ``do_sample: true, top_p: 0.8`` — greedy and beam search would
        silently sample. pgmm passes every decoding setting explicitly."""
        from transformers import GenerationConfig

        tok = self.tokenizer
        self.model.generation_config = GenerationConfig(
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def caption_loss(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                     labels: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over the labelled positions (Hugging Face label convention)."""
        inputs_embeds = inputs_embeds.to(self.dtype)
        if self._head_transforms_logits:
            logits = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False).logits
            targets = labels[:, 1:]
            return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                                               ignore_index=IGNORE_INDEX)
        hidden = self.model.get_decoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                          use_cache=False).last_hidden_state
        return target_cross_entropy(hidden, labels, self.model.get_output_embeddings(),
                                    chunk_tokens=self.loss_chunk_tokens)

    def sequence_loss(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
        """Per row (B), the summed next-token cross-entropy over its labelled positions: what losses that
        weigh samples (VQA answers by their annotators' share) are built from."""
        inputs_embeds = inputs_embeds.to(self.dtype)
        targets = labels[:, 1:]
        if self._head_transforms_logits:
            logits = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False).logits
            hidden_logits = logits[:, :-1].float()
        else:
            hidden = self.model.get_decoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                              use_cache=False).last_hidden_state
            mask = targets != IGNORE_INDEX
            losses = hidden.new_zeros(labels.shape[0], dtype=torch.float32)
            if not bool(mask.any()):
                return losses + hidden.sum() * 0.0
            logits = self.model.get_output_embeddings()(hidden[:, :-1][mask]).float()
            token_losses = nn.functional.cross_entropy(logits, targets[mask], reduction="none")
            rows = torch.arange(labels.shape[0], device=labels.device)[:, None].expand_as(targets)[mask]
            return losses.index_add(0, rows, token_losses)
        token_losses = nn.functional.cross_entropy(hidden_logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                                   reduction="none")
        return token_losses.sum(dim=1)

    @torch.no_grad()
    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, settings: Any,
                 streamer: Any = None) -> list[list[int]]:
        """New token ids only (``B * num_return_sequences`` rows), cut before the first EOS.

        ``streamer`` (optional): an object with ``put(ids)`` and ``end()`` (transformers' streamer
        interface, e.g. :class:`pgmm_core.streaming.TextPieces`) that receives each new token as it is
        chosen; greedy and sampled decoding of one row only (transformers refuses beam search).

        ``settings`` carries num_beams, max_new_tokens, min_new_tokens, do_sample, top_p, temperature,
        repetition_penalty, length_penalty and num_return_sequences (``GenerationSection``). From
        ``inputs_embeds`` alone, transformers returns only the generated tokens, so nothing is sliced
        off (slicing off the prompt length again is what dropped the start of every caption).
        """
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
        # Ranks caption different images and stop at different lengths: never wait for the others.
        # (transformers would, seeing a sharded model; pgmm's sharding strategy gathers the weights
        # whole for evaluation, so every rank generates on its own.)
        output = self.model.generate(inputs_embeds=inputs_embeds.to(self.dtype), attention_mask=attention_mask,
                                     generation_config=config, synced_gpus=False, streamer=streamer)
        rows = []
        for row in output.tolist():
            rows.append(row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row)
        return rows


def _check_special_ids(tokenizer: Any, vocab_rows: int) -> None:
    """A tokenizer from another model is caught here, not as an index error inside generate."""
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        token_id = getattr(tokenizer, name)
        if not 0 <= token_id < vocab_rows:
            raise CheckpointError(
                f"the tokenizer's {name.removesuffix('_id')} has id {token_id}, outside the model's vocabulary of "
                f"{vocab_rows} tokens: tokenizer files and weights come from different models"
            )


def _checkpoint_each_layer(model: Any) -> None:
    """Recompute each decoder layer in the backward pass instead of storing its activations.

    transformers' own gradient checkpointing only acts in training mode, but a frozen LLM stays in
    eval mode (no dropout) while gradients still flow through it to the visual tokens; so the
    layers are wrapped here, active whenever gradients are enabled, whatever the mode.
    """
    layers = getattr(model.get_decoder(), "layers", None)
    if layers is None:
        raise CheckpointError(f"{type(model).__name__}: no decoder layers found for gradient checkpointing")
    for layer in layers:
        layer.forward = functools.partial(_checkpointed_forward, layer.forward)


def _checkpointed_forward(forward: Any, *args: Any, **kwargs: Any) -> Any:
    if torch.is_grad_enabled():
        return checkpoint(functools.partial(forward, **kwargs), *args, use_reentrant=False)
    return forward(*args, **kwargs)


def _dtype(config: Any) -> torch.dtype | None:
    return DTYPES[config.dtype] if config.dtype else None


def build_openpangu(config: Any) -> CausalLMBackend:
    path = Path(config.path).expanduser()
    read_release_config(path)  # missing directory / wrong model_type before anything else
    tokenizer = PanguTokenizer(path)  # missing tokenizer.model before the weights are read
    model = load_llama(path, _dtype(config))
    return CausalLMBackend(model, tokenizer, frozen=config.freeze, grad_checkpointing=config.grad_checkpointing,
                           loss_chunk_tokens=config.loss_chunk_tokens, follows_precision_policy=config.dtype is None,
                           lora=config.lora, source_path=path)


def build_tiny_openpangu(config: Any) -> CausalLMBackend:
    from pgmm_pangu.make_tiny import TinySpec, ensure_tiny_checkpoint

    spec = TinySpec(hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
                    num_layers=config.num_layers, num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
                    vocab_size=config.vocab_size, seed=config.seed, pretrain_steps=config.pretrain_steps)
    path = ensure_tiny_checkpoint(spec, config.path)
    tokenizer = PanguTokenizer(path)
    model = load_llama(path, _dtype(config))
    return CausalLMBackend(model, tokenizer, frozen=config.freeze, grad_checkpointing=config.grad_checkpointing,
                           loss_chunk_tokens=config.loss_chunk_tokens, follows_precision_policy=config.dtype is None,
                           lora=config.lora, source_path=path)
