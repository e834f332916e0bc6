"""Any local transformers causal LM as the LLM backend (Llama, Qwen2, OPT, …), for third-party LLMs.

The directory is loaded with ``AutoModelForCausalLM`` / ``AutoTokenizer`` from local files only and
without remote code, then driven through the same :class:`~pgmm_pangu.backend.CausalLMBackend` as
openPangu (target-only loss, explicit generation settings, new tokens only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgmm_core.errors import CheckpointError
from pgmm_pangu.backend import CausalLMBackend
from pgmm_pangu.checkpoint import DTYPES


class HfTokenizer:
    """Adapts a transformers tokenizer to pgmm's tokenizer protocol.

    ``encode(text, add_bos=True)`` starts with BOS exactly when the tokenizer itself adds one
    (Llama, OPT) and not for tokenizers that define no BOS or never prepend it (Qwen2, GPT-2), so
    captions look like what the model was trained on.
    """

    def __init__(self, tokenizer: Any, eos_token: str | None = None) -> None:
        self.tokenizer = tokenizer
        if eos_token:
            if eos_token not in tokenizer.get_vocab():
                raise CheckpointError(f"eos_token {eos_token!r} is not a token of this tokenizer")
            eos = tokenizer.convert_tokens_to_ids(eos_token)
        else:
            eos = tokenizer.eos_token_id
        if eos is None:
            raise CheckpointError("the tokenizer defines no EOS token; set \"eos_token\" in the llm config")
        self.eos_token_id = int(eos)
        self.pad_token_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_id)
        bos = tokenizer.bos_token_id
        probe = "a"
        self.adds_bos = bos is not None and tokenizer(probe)["input_ids"][:1] == [bos] \
            and tokenizer(probe, add_special_tokens=False)["input_ids"][:1] != [bos]
        self.bos_token_id = int(bos if bos is not None else self.eos_token_id)
        self.vocab_size = len(tokenizer)

    def encode(self, text: str, add_bos: bool | None = True) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return [self.bos_token_id] + ids if add_bos is not False and self.adds_bos else ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> Any:
        """The model's own chat template (the ``instruct`` objective and chat with ``ask``)."""
        return self.tokenizer.apply_chat_template(conversation, **kwargs)


def _dtype_argument(dtype_name: str | None) -> dict[str, Any]:
    """``dtype=`` (transformers >= 4.56) or ``torch_dtype=`` (older); default: as stored."""
    import transformers
    from packaging.version import Version

    value = DTYPES[dtype_name] if dtype_name else "auto"
    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {key: value}


def build_hf_causal_lm(config: Any) -> CausalLMBackend:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(config.path).expanduser()
    if not path.is_dir():
        what = "is a file, not a model directory" if path.is_file() else "model directory not found"
        raise CheckpointError(f"{path}: {what} (hf_causal_lm loads local directories only)")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is not a transformers model directory (no config.json); "
                              "save one with model.save_pretrained() and tokenizer.save_pretrained()")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot load the tokenizer of {path}: {exc}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True,
                                                     **_dtype_argument(config.dtype))
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot load {path} with AutoModelForCausalLM: {exc}") from None
    model.eval()
    return CausalLMBackend(model, HfTokenizer(tokenizer, config.eos_token), frozen=config.freeze,
                           grad_checkpointing=config.grad_checkpointing,
                           loss_chunk_tokens=config.loss_chunk_tokens,
                           follows_precision_policy=config.dtype is None)
