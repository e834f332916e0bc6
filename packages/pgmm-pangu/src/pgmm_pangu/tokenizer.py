"""openPangu's tokenizer: a SentencePiece model plus the special tokens of ``tokenizer_config.json``.

Conventions of the release (``tokenization_openpangu.py``): BOS ``<s>`` is added, EOS is not; EOS is
``[unused10]``; PAD and UNK are ``<unk>``; special tokens are never split by SentencePiece; decoding
puts no spaces between special tokens. The chat template is
``[unused9]系统：…[unused10][unused9]用户：…[unused10][unused9]助手：``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgmm_core.errors import CheckpointError

DEFAULT_SPECIALS = {"bos": "<s>", "eos": "[unused10]", "pad": "<unk>", "unk": "<unk>"}
TURN_START = "[unused9]"
TURN_END = "[unused10]"
ROLE_NAMES = {"system": "系统：", "user": "用户：", "assistant": "助手："}


@dataclass(frozen=True)
class AddedToken:
    id: int
    content: str
    special: bool


class PanguTokenizer:
    """SentencePiece encoding with openPangu's special-token handling."""

    def __init__(self, directory: str | Path) -> None:
        import sentencepiece as spm

        root = Path(directory)
        model_file = root / "tokenizer.model"
        if not model_file.is_file():
            raise CheckpointError(
                f"tokenizer.model not found in {root}: copy it from the openPangu-Embedded-7B release"
            )
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        config = _read_json(root / "tokenizer_config.json")
        self.add_bos = bool(config.get("add_bos_token", True))
        self.add_eos = bool(config.get("add_eos_token", False))
        self.added: dict[str, AddedToken] = {}
        for key, entry in config.get("added_tokens_decoder", {}).items():
            token = AddedToken(int(key), entry["content"], bool(entry.get("special", True)))
            self.added[token.content] = token
        self._by_id = {tok.id: tok for tok in self.added.values()}
        names = {k: _token_text(config.get(f"{k}_token"), DEFAULT_SPECIALS[k]) for k in DEFAULT_SPECIALS}
        self.bos_token, self.eos_token, self.pad_token, self.unk_token = (
            names["bos"], names["eos"], names["pad"], names["unk"]
        )
        self.bos_token_id = self.token_to_id(self.bos_token)
        self.eos_token_id = self.token_to_id(self.eos_token)
        self.pad_token_id = self.token_to_id(self.pad_token)
        self.unk_token_id = self.token_to_id(self.unk_token)
        self.vocab_size = max(self.sp.get_piece_size(), max(self._by_id, default=-1) + 1)
        self.chat_template = config.get("chat_template")
        specials = sorted(self.added, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(re.escape(s) for s in specials) + ")") if specials else None

    def token_to_id(self, token: str) -> int:
        if token in self.added:
            return self.added[token].id
        piece_id = self.sp.piece_to_id(token)
        if piece_id == self.sp.unk_id() and token != self.sp.id_to_piece(self.sp.unk_id()):
            raise CheckpointError(f"special token {token!r} is not in the tokenizer")
        return piece_id

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids; special-token strings in ``text`` map to their ids, the rest to SentencePiece."""
        ids: list[int] = []
        if self.add_bos if add_bos is None else add_bos:
            ids.append(self.bos_token_id)
        for chunk in self._split.split(text) if self._split else [text]:
            if not chunk:
                continue
            if chunk in self.added:
                ids.append(self.added[chunk].id)
            else:
                ids.extend(self.sp.encode(chunk))
        if self.add_eos:
            ids.append(self.eos_token_id)
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` as the reference decodes it (``spaces_between_special_tokens=False``).

        ``skip_special_tokens`` drops BOS, EOS, PAD and UNK only (the reference's
        ``all_special_ids``); other added tokens such as ``[unused9]`` are kept verbatim. Added tokens
        split the SentencePiece runs, each run losing its leading dummy-prefix space; skipped tokens
        do not split runs.
        """
        pieces: list[str] = []
        run: list[int] = []
        controls = {self.bos_token_id, self.eos_token_id, self.pad_token_id, self.unk_token_id}
        for token_id in ids:
            token_id = int(token_id)
            if skip_special_tokens and token_id in controls:
                continue
            added = self._by_id.get(token_id)
            if added is None and token_id not in controls:
                run.append(token_id)
                continue
            if run:
                pieces.append(self.sp.decode(run))
                run = []
            pieces.append(added.content if added is not None else self.sp.id_to_piece(token_id))
        if run:
            pieces.append(self.sp.decode(run))
        return "".join(pieces)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """openPangu's chat format as text (encode it with :meth:`encode`)."""
        parts = []
        for message in messages:
            role = ROLE_NAMES.get(message["role"])
            if role is None:
                raise ValueError(f"unknown chat role {message['role']!r} (system, user, assistant)")
            parts.append(f"{TURN_START}{role}{message['content']}{TURN_END}")
        if add_generation_prompt:
            parts.append(f"{TURN_START}{ROLE_NAMES['assistant']}")
        return "".join(parts)


def _token_text(value: Any, default: str) -> str:
    if isinstance(value, dict):
        return value.get("content", default)
    return value if isinstance(value, str) else default


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
