"""openPangu's tokenizer: a SentencePiece model plus the added tokens of ``tokenizer_config.json``.

It reproduces the release's ``PanguTokenizer`` (``tokenization_openpangu.py``, a slow transformers
tokenizer) without its remote code, id for id and character for character:

* Encoding splits the text on the added tokens (``<s>``, ``[unused0..33]``, ``<|User|>:``, …), which
  map to their configured ids, and SentencePiece-encodes every chunk between them on its own — so the
  model's dummy-prefix ``▁`` appears at the start of the text *and after every added token*.
  ``add_bos_token`` (true) prepends BOS, whose id is the SentencePiece model's ``bos_id()``;
  ``add_eos_token`` (false) would append EOS.
* EOS is ``[unused10]``, PAD and UNK are ``<unk>``.
* Decoding concatenates without spaces between special tokens; every SentencePiece run between
  added tokens is decoded separately (losing its leading dummy-prefix space).
  ``skip_special_tokens`` removes only BOS, EOS and PAD/UNK — the other added tokens
  (``</s>``, ``[unused9]``, …) stay, exactly as in the reference.
* The chat template is the Jinja template of ``tokenizer_config.json``, rendered like transformers
  does (``[unused9]系统：…[unused10][unused9]用户：…[unused10][unused9]助手：``, with an empty
  system turn first when the conversation does not start with one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgmm_core.errors import CheckpointError

DEFAULT_SPECIALS = {"bos": "<s>", "eos": "[unused10]", "pad": "<unk>", "unk": "<unk>"}
# The release's template, used when a tokenizer_config.json carries none.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '[unused9]系统：[unused10]' }}{% endif %}{% if message['role'] == 'system' %}"
    "{{ '[unused9]系统：' + message['content'] + '[unused10]' }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{'[unused9]助手：' + message['content'] + '[unused10]'}}{% endif %}"
    "{% if message['role'] == 'tool' %}{{'[unused9]工具：' + message['content'] + '[unused10]'}}{% endif %}"
    "{% if message['role'] == 'function' %}{{'[unused9]方法：' + message['content'] + '[unused10]'}}{% endif %}"
    "{% if message['role'] == 'user' %}{{'[unused9]用户：' + message['content'] + '[unused10]'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '[unused9]助手：' }}{% endif %}"
)


@dataclass(frozen=True)
class AddedToken:
    """One ``added_tokens_decoder`` entry: matched verbatim in text, never split by SentencePiece."""

    id: int
    content: str
    lstrip: bool = False
    rstrip: bool = False


class PanguTokenizer:
    """openPangu's tokenizer (see the module docstring for the conventions it reproduces)."""

    def __init__(self, directory: str | Path) -> None:
        import sentencepiece as spm

        root = Path(directory)
        model_file = root / "tokenizer.model"
        if not model_file.is_file():
            raise CheckpointError(
                f"tokenizer.model not found in {root}: copy the SentencePiece model of the openPangu-Embedded-7B "
                "release into that directory (it is stored with Git LFS: run `git lfs pull` in a cloned release)"
            )
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        except (RuntimeError, OSError) as exc:
            raise CheckpointError(f"{model_file} is not a SentencePiece model ({exc}); "
                                  "a Git LFS pointer file means the real file was not downloaded") from None
        config = _read_json(root / "tokenizer_config.json")
        special_map = _read_json(root / "special_tokens_map.json")
        self.add_bos = _as_bool(config.get("add_bos_token", True))
        self.add_eos = _as_bool(config.get("add_eos_token", False))
        self.added: dict[str, AddedToken] = {}
        for key, entry in config.get("added_tokens_decoder", {}).items():
            token = AddedToken(int(key), entry["content"], bool(entry.get("lstrip")), bool(entry.get("rstrip")))
            self.added[token.content] = token
        self._added_by_id = {token.id: token for token in self.added.values()}
        names = {
            kind: _token_text(config.get(f"{kind}_token", special_map.get(f"{kind}_token")), default)
            for kind, default in DEFAULT_SPECIALS.items()
        }
        self.bos_token, self.eos_token = names["bos"], names["eos"]
        self.pad_token, self.unk_token = names["pad"], names["unk"]
        # The reference returns the SentencePiece model's BOS id, not the configured token's.
        self.bos_token_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else self.token_to_id(self.bos_token)
        self.eos_token_id = self.token_to_id(self.eos_token)
        self.pad_token_id = self.token_to_id(self.pad_token)
        self.unk_token_id = self.token_to_id(self.unk_token)
        # What skip_special_tokens removes: the ids of the special-token attributes, nothing else.
        self.all_special_ids = {self.token_to_id(names[kind]) for kind in DEFAULT_SPECIALS}
        self.vocab_size = self.sp.get_piece_size()
        self.chat_template = config.get("chat_template") or DEFAULT_CHAT_TEMPLATE
        by_length = sorted(self.added, key=len, reverse=True)  # longest match first, like transformers' trie
        self._splitter = re.compile("(" + "|".join(map(re.escape, by_length)) + ")") if by_length else None

    def __len__(self) -> int:
        """SentencePiece pieces plus added tokens beyond them (``len()`` of the reference)."""
        return self.vocab_size + sum(1 for token_id in self._added_by_id if token_id >= self.vocab_size)

    # --- encoding ---------------------------------------------------------------------------------

    def _chunks(self, text: str) -> list[tuple[str, AddedToken | None]]:
        """``text`` split into added tokens and the text between them (honouring lstrip/rstrip)."""
        parts = self._splitter.split(text) if self._splitter else [text]
        for i, part in enumerate(parts):
            token = self.added.get(part) if i % 2 else None
            if token is None:
                continue
            if token.rstrip and i + 1 < len(parts):
                parts[i + 1] = parts[i + 1].lstrip()
            if token.lstrip and i > 0:
                parts[i - 1] = parts[i - 1].rstrip()
        return [(part, self.added[part] if i % 2 else None) for i, part in enumerate(parts) if part]

    def tokenize(self, text: str) -> list[str]:
        """Token strings, without BOS (like the reference's ``tokenize``)."""
        tokens: list[str] = []
        for chunk, token in self._chunks(text):
            tokens.extend([token.content] if token else self.sp.encode(chunk, out_type=str))
        return tokens

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of ``text``.

        ``add_bos=None`` adds what the config asks for (``add_bos_token``: BOS, ``add_eos_token``: EOS),
        like the reference's ``tokenizer(text)``; ``True``/``False`` add BOS or nothing, never EOS
        (callers that need EOS, such as caption training, append it themselves).
        """
        ids = [self.bos_token_id] if (self.add_bos if add_bos is None else add_bos) else []
        for chunk, token in self._chunks(text):
            ids.extend([token.id] if token else self.sp.encode(chunk))
        if add_bos is None and self.add_eos:
            ids.append(self.eos_token_id)
        return ids

    def __call__(self, texts: Sequence[str], padding_side: str = "right") -> dict[str, list[list[int]]]:
        """Batch encoding padded to the longest row with PAD: ``input_ids`` and ``attention_mask``."""
        rows = [self.encode(text) for text in texts]
        width = max((len(row) for row in rows), default=0)
        ids, mask = [], []
        for row in rows:
            pad = [self.pad_token_id] * (width - len(row))
            ones, zeros = [1] * len(row), [0] * len(pad)
            ids.append(row + pad if padding_side == "right" else pad + row)
            mask.append(ones + zeros if padding_side == "right" else zeros + ones)
        return {"input_ids": ids, "attention_mask": mask}

    def token_to_id(self, token: str) -> int:
        if token in self.added:
            return self.added[token].id
        piece_id = self.sp.piece_to_id(token)
        if piece_id == self.sp.unk_id() and token != self.sp.id_to_piece(piece_id):
            raise CheckpointError(f"special token {token!r} is neither an added token nor a SentencePiece piece")
        return piece_id

    # --- decoding ---------------------------------------------------------------------------------

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self._added_by_id[i].content if i in self._added_by_id else self.sp.id_to_piece(i)
                for i in map(int, ids)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` as the reference decodes it (``spaces_between_special_tokens=False``).

        Like transformers' ``PreTrainedTokenizer.decode`` (and so the reference), special tokens are
        kept unless ``skip_special_tokens=True`` is asked for.

        Skipped tokens are dropped before anything else, so they do not split SentencePiece runs;
        every other added token is emitted verbatim and ends the current run.
        """
        pieces: list[str] = []
        run: list[int] = []
        for token_id in map(int, ids):
            if skip_special_tokens and token_id in self.all_special_ids:
                continue
            token = self._added_by_id.get(token_id)
            if token is None:
                run.append(token_id)
                continue
            if run:
                pieces.append(self.sp.decode(run))
                run = []
            pieces.append(token.content)
        if run:
            pieces.append(self.sp.decode(run))
        return "".join(pieces)

    # --- chat -------------------------------------------------------------------------------------

    def apply_chat_template(
        self,
        conversation: list[dict[str, str]],
        *,
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        chat_template: str | None = None,
        **template_kwargs: Any,
    ) -> str | list[int]:
        """The conversation rendered with the chat template, with transformers' signature and defaults.

        As in ``PreTrainedTokenizer.apply_chat_template``: no generation prompt unless asked for, and
        token ids (the rendered text encoded without an extra BOS, ``encode(text, add_bos=False)``)
        unless ``tokenize=False`` asks for the text. The release's ``inference/generate.py`` instead
        feeds ``tokenizer(text)`` (with BOS): use ``encode(apply_chat_template(..., tokenize=False))``.
        """
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.globals["raise_exception"] = raise_exception
        text = env.from_string(chat_template or self.chat_template).render(
            messages=conversation, add_generation_prompt=add_generation_prompt, bos_token=self.bos_token,
            eos_token=self.eos_token, pad_token=self.pad_token, unk_token=self.unk_token, **template_kwargs,
        )
        return self.encode(text, add_bos=False) if tokenize else text


def _as_bool(value: Any) -> bool:
    """The reference accepts ``"true"``/``"false"`` strings for ``add_bos_token``."""
    return value.lower() == "true" if isinstance(value, str) else bool(value)


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
