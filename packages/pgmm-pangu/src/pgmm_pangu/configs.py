"""Config models of pgmm-pangu's LLM backends (pydantic only: importing this never imports torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pgmm_core.config.files import RequiredPath
from pgmm_core.config.sections import ComponentConfig, StrictModel

Dtype = Literal["fp32", "bf16", "fp16"]

# openPangu's attention and MLP projections, named as in its modeling code (and transformers' Llama).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraSettings(StrictModel):
    """LoRA adapters on the frozen LLM (``model.llm.lora``), through peft (:mod:`pgmm_pangu.lora`).

    The LLM's own weights stay frozen; ``W x`` becomes ``W x + (alpha / rank) B A x`` for every
    Linear whose name ends with one of ``target_modules``, and only ``A`` and ``B`` train.
    """

    rank: int = Field(16, gt=0, description="Rank r of the update B A (A: r x in, B: out x r).")
    alpha: float = Field(32.0, gt=0, description="Scale numerator: the update is multiplied by alpha / rank.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0,
                           description="Dropout on the adapters' input while training (gradients enabled).")
    target_modules: list[str] = Field(
        default_factory=lambda: list(LORA_TARGETS), min_length=1,
        description="Linear layers that get adapters, by the last part of their name (openPangu: "
        "q_proj k_proj v_proj o_proj gate_proj up_proj down_proj).",
    )


class LoraOnFrozenLLM(ComponentConfig):
    """What the LLM configs share about LoRA: adapters adapt a frozen LLM, never a trained one."""

    @model_validator(mode="after")
    def _lora_needs_frozen_llm(self):  # noqa: ANN202 - pydantic validator
        if getattr(self, "lora", None) is not None and not getattr(self, "freeze", True):
            raise ValueError("lora adapts a frozen LLM: set freeze to true, or lora to null to train the whole LLM")
        return self


class OpenPanguConfig(LoraOnFrozenLLM):
    """openPangu-Embedded loaded natively into transformers' Llama classes (no remote code)."""

    type: Literal["openpangu"] = "openpangu"
    path: str = Field(..., min_length=1, description="The release directory (config.json, shards, tokenizer.model).")
    dtype: Dtype | None = Field(
        None,
        description="Weight dtype. Default: as stored (bf16 for the release), then the device precision "
        "policy's dtype when the LLM is frozen; a value given here is kept whatever the policy.",
    )
    freeze: bool = True
    grad_checkpointing: bool = Field(
        False, description="Recompute each decoder layer in the backward pass (less memory, more compute)."
    )
    loss_chunk_tokens: int = Field(
        0, ge=0, description="Target tokens per LM-head chunk in the loss; 0 picks it from the vocab size."
    )
    lora: LoraSettings | None = Field(
        None, description="LoRA adapters on the frozen LLM (rank, alpha, dropout, target_modules); null: off."
    )


    def required_paths(self) -> list[RequiredPath]:
        """What ``validate`` checks exists (:mod:`pgmm_core.config.files`)."""
        root = Path(self.path).expanduser()
        release = "from the openPangu-Embedded-7B release"
        return [RequiredPath(root, "directory", f"the model folder {release}", "path"),
                RequiredPath(root / "config.json", "file", release, "path"),
                RequiredPath(root / "tokenizer.model", "file", release, "path")]

class TinyOpenPanguConfig(LoraOnFrozenLLM):
    """A random-weight openPangu-layout checkpoint, written on first use, then loaded like the real one.

    For demos and tests: the directory has exactly the release layout (config.json, safetensors shards
    with an index, a SentencePiece tokenizer.model, tokenizer_config.json).
    """

    type: Literal["tiny_openpangu"] = "tiny_openpangu"
    path: str | None = Field(
        None, description="Where to create/load it; default: a cache directory keyed by the sizes."
    )
    hidden_size: int = Field(64, gt=0)
    intermediate_size: int = Field(160, gt=0)
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(4, gt=0)
    num_kv_heads: int = Field(2, gt=0)
    vocab_size: int = Field(512, ge=300, description="SentencePiece vocabulary trained on a caption corpus.")
    seed: int = 0
    pretrain_steps: int = Field(
        0, ge=0, description="Train the random model on the caption corpus first (a frozen LLM must know the language)."
    )
    dtype: Dtype | None = Field(None, description="Weight dtype; default: as stored, then the precision policy's.")
    freeze: bool = True
    grad_checkpointing: bool = False
    loss_chunk_tokens: int = Field(0, ge=0, description="Target tokens per LM-head chunk in the loss; 0: automatic.")
    lora: LoraSettings | None = Field(
        None, description="LoRA adapters on the frozen LLM (rank, alpha, dropout, target_modules); null: off."
    )


class HfCausalLMConfig(ComponentConfig):
    """Any local transformers causal LM directory (Llama, Qwen2, OPT, …) via AutoModelForCausalLM."""

    type: Literal["hf_causal_lm"] = "hf_causal_lm"
    path: str = Field(..., min_length=1, description="A local model directory; nothing is downloaded.")
    dtype: Dtype | None = Field(None, description="Weight dtype; default: as stored, then the precision policy's.")
    freeze: bool = True
    grad_checkpointing: bool = False
    eos_token: str | None = Field(None, description="Override the tokenizer's EOS token (e.g. '\\n' for OPT captions).")
    loss_chunk_tokens: int = Field(0, ge=0, description="Target tokens per LM-head chunk in the loss; 0: automatic.")

    def required_paths(self) -> list[RequiredPath]:
        """What ``validate`` checks exists (:mod:`pgmm_core.config.files`)."""
        root = Path(self.path).expanduser()
        return [RequiredPath(root, "directory", "a local transformers model", "path"),
                RequiredPath(root / "config.json", "file", "a local transformers model", "path")]
