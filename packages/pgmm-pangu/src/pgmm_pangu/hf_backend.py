"""Any local transformers causal LM as the LLM backend (Llama, Qwen2, OPT, …), for third-party LLMs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgmm_core.errors import CheckpointError
from pgmm_pangu.backend import CausalLMBackend
from pgmm_pangu.checkpoint import DTYPES


class HfTokenizer:
    """Adapts a transformers tokenizer to pgmm's tokenizer protocol."""

    def __init__(self, tokenizer: Any, eos_token: str | None = None) -> None:
        self.tokenizer = tokenizer
        eos = tokenizer.convert_tokens_to_ids(eos_token) if eos_token else tokenizer.eos_token_id
        if eos is None:
            raise CheckpointError("the tokenizer defines no EOS token; set eos_token in the llm config")
        self.eos_token_id = int(eos)
        self.bos_token_id = int(tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos)
        self.pad_token_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)
        self.vocab_size = len(tokenizer)
        self._has_bos = tokenizer.bos_token_id is not None

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ([self.bos_token_id] if add_bos and self._has_bos else []) + list(ids)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


def build_hf_causal_lm(config: Any) -> CausalLMBackend:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(config.path).expanduser()
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is not a local transformers model directory (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, dtype=DTYPES[config.dtype or "fp32"])
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load {path} with transformers: {exc}") from None
    model.eval()
    return CausalLMBackend(model, HfTokenizer(tokenizer, config.eos_token), frozen=config.freeze,
                           grad_checkpointing=config.grad_checkpointing,
                           loss_chunk_tokens=config.loss_chunk_tokens,
                           follows_precision_policy=config.dtype is None)
