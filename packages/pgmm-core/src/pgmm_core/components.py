"""The protocols components implement, and helpers they share.

These are structural (``typing.Protocol``): a plugin's class needs no pgmm base class, only these
attributes and methods. :mod:`pgmm_core.testing` checks them for every registered component. Every
attribute the core reads from a component is declared here.

**Freezing has one owner: :func:`pgmm_core.build_model`.** Vision and LLM config models must have
a ``freeze: bool`` field (the contract suites check it; a connector's config may have one). A
component whose config says ``freeze: true`` declares ``frozen = True`` and does nothing else about
it; ``build_model`` then freezes it with :func:`freeze` (no gradients, eval mode that ``train()``
cannot undo). Factories never call :func:`freeze` themselves. What follows from ``frozen``:

* the part's parameters are not given to the optimizer and are left out of checkpoints
  (``MultimodalModel.trainable_state_dict``); their fingerprint is recorded in the run's
  ``frozen_weights.json`` instead, so the part must be rebuilt from its own files;
* a frozen vision tower runs under ``torch.no_grad``; a frozen LLM does not, because gradients must
  still reach its ``inputs_embeds`` (the projector before it trains);
* a frozen vision tower or LLM that ``follows_precision_policy`` is stored in the run's precision
  policy's dtype (bf16/fp16); one whose config pins its own dtype says
  ``follows_precision_policy = False`` and is left as it is;
* a frozen part may still train small adapters inside itself (LoRA on the LLM): it defines
  ``add_adapters()``, which ``build_model`` calls last, after freezing, fingerprinting and the
  precision cast, so the adapters alone have ``requires_grad`` (float32, in the trainable-only
  checkpoint) and the fingerprint describes the frozen weights only. Such a part sets
  ``sharding_part = True`` so that the ``fsdp2`` strategy shards it as one part although it mixes
  frozen and trained parameters.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from pgmm_core.preprocessing import ImageSpec


@runtime_checkable
class VisionEncoder(Protocol):
    """An image tower. ``forward(pixel_values: B×3×H×W) -> B×N×out_features`` (all tokens, float32).

    ``image_spec`` is the preprocessing its pixels need (size, mean/std, interpolation, crop), as the
    tower was trained: datasets, the evaluator and the Captioner prepare images by it.
    ``image_size`` equals ``image_spec.size``. Its config model gives the same spec without building
    the tower (``config.image_spec()``).
    ``frozen``: the config's required ``freeze`` field (``build_model`` freezes the tower and runs it
    under ``no_grad``; see the module docstring); ``follows_precision_policy``: a frozen tower may be
    stored in the run's precision (false when its config pins a dtype), so it must accept float32
    pixels whatever its own dtype.
    """

    out_features: int
    image_size: int
    image_spec: ImageSpec
    frozen: bool
    follows_precision_policy: bool

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Connector(Protocol):
    """Turns vision tokens into a fixed number of query tokens: ``B×N×D -> B×Q×out_features``.

    ``vision_embeds`` is ``B×N×D`` float32 (the tower's tokens after the model's ``ln_vision``; ``D``
    is the ``encoder_width`` the factory received). ``vision_mask`` is ``B×N`` — one row per image,
    one entry per vision token — of integers or bools: **1 / True = attend to the token, 0 / False
    = ignore it** (the Q-Former hands it to transformers as ``encoder_attention_mask``, which means
    the same). Masked tokens must not change the output, and ``None`` (every token is real) must give
    what an all-ones mask gives. :class:`pgmm_core.MultimodalModel` passes no mask today (every image
    gives the same number of tokens); a connector honours one all the same, for a tower whose images
    give different numbers of tokens (padded, the padding masked) or an objective that calls the
    connector itself. The connector contract checks this.

    ``frozen``: the config's ``freeze`` where it has one, else false (``build_model`` freezes it).
    ``pretrained_vision_norm()``: the ``ln_vision`` state dict (``weight``, ``bias`` of the encoder
    width) found in the connector's checkpoint — LAVIS stores it beside the Q-Former — or ``None``;
    ``build_model`` loads it into the model's ``ln_vision``.
    """

    out_features: int
    num_query_tokens: int
    frozen: bool

    def __call__(
        self, vision_embeds: torch.Tensor, vision_mask: torch.Tensor | None = None
    ) -> torch.Tensor: ...

    def pretrained_vision_norm(self) -> dict[str, torch.Tensor] | None: ...


@runtime_checkable
class Tokenizer(Protocol):
    """What the model needs from an LLM's tokenizer."""

    bos_token_id: int
    eos_token_id: int
    pad_token_id: int
    vocab_size: int

    def encode(self, text: str, add_bos: bool = True) -> list[int]: ...

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


@runtime_checkable
class LLMBackend(Protocol):
    """A causal language model driven by ``inputs_embeds``.

    ``caption_loss`` follows the Hugging Face label convention (``labels[:, i]`` is the token at
    position ``i``; ``-100`` is ignored) and must compute logits only where a label is set: it is the
    mean over every labelled position of the batch. ``sequence_loss`` (same inputs) is each row's
    *sum* over its labelled positions (a B tensor), for losses that weigh rows (VQA answers by their
    annotators' share).
    ``generate`` returns only the new token ids (``B * num_return_sequences`` lists), without EOS or
    padding, decoding with exactly the settings given. Rows may be left-padded (attention mask 0):
    positions then count from each row's first real token. ``streamer`` (optional, keyword) is an
    object with transformers' streamer methods, ``put(ids)`` for every step's new token (one row,
    greedy or sampled decoding) and ``end()`` when generation stops (``pgmm_core.text_stream``).
    Chat needs the tokenizer's ``apply_chat_template(messages, add_generation_prompt=...,
    tokenize=False) -> str`` (transformers' signature) and an ``eos_token_id`` that ends a turn.

    ``frozen`` (the config's required ``freeze`` field) and ``follows_precision_policy`` mean what
    they mean for a :class:`VisionEncoder`, except that a frozen LLM is not run under ``no_grad``:
    its weights get no gradients, its ``inputs_embeds`` do.
    """

    hidden_size: int
    tokenizer: Tokenizer
    frozen: bool
    follows_precision_policy: bool

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor: ...

    def caption_loss(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor: ...

    def sequence_loss(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor: ...

    def generate(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, settings: Any, streamer: Any = None
    ) -> list[list[int]]: ...


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def freeze(module: nn.Module) -> nn.Module:
    """Freeze ``module``: no gradients, eval mode, and a ``train()`` that cannot switch it back.

    A frozen tower must behave identically whatever the surrounding model's mode (dropout and
    drop-path off), because its weights were trained that way and its outputs are not learned.
    """
    for param in module.parameters():
        param.requires_grad_(False)
    for sub in module.modules():
        # a partial of a module-level function (not a bound method): frozen models still pickle
        sub.train = functools.partial(_stay_in_eval, sub)  # type: ignore[method-assign]
    module.eval()
    return module


def is_frozen(module: nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters())


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return trainable, frozen
