"""BERT's tokenizer as LAVIS' ``Blip2Base.init_tokenizer`` makes it: bert-base-uncased plus ``[DEC]``.

``[DEC]`` is added as the bos token; image-grounded generation (ITG) starts every caption with it
in place of ``[CLS]``. The word embeddings get one row per token of ``len(tokenizer)`` (30523 for
bert-base-uncased), as LAVIS' ``resize_token_embeddings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgmm_core.errors import CheckpointError

DEC_TOKEN = "[DEC]"
BERT_URL = "https://huggingface.co/google-bert/bert-base-uncased"


def load_tokenizer(directory: str | Path) -> Any:
    """transformers' ``BertTokenizer`` from a local directory holding ``vocab.txt`` (its
    ``tokenizer_config.json``, if any, is honoured), with ``[DEC]`` added as bos. Never downloads."""
    from transformers import BertTokenizer

    directory = Path(directory).expanduser()
    if not (directory / "vocab.txt").is_file():
        raise CheckpointError(
            f"{directory} has no vocab.txt: the Q-Former's text side needs BERT's tokenizer. Download "
            f"bert-base-uncased from {BERT_URL} (config.json, vocab.txt, model.safetensors) into one directory "
            "and set model.connector.bert_init to it")
    tokenizer = BertTokenizer.from_pretrained(str(directory), local_files_only=True)
    tokenizer.add_special_tokens({"bos_token": DEC_TOKEN})
    return tokenizer
