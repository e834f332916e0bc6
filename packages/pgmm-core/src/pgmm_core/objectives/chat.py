"""Conversations rendered by the LLM tokenizer's chat template, as one token row with its labels.

The template is the tokenizer's own (openPangu's ``[unused9]用户：…[unused10][unused9]助手：…``),
applied with transformers' signature ``apply_chat_template(messages, add_generation_prompt=...,
tokenize=False)``. A conversation is cut into the template's pieces by rendering it turn by turn:

* an assistant turn ``i`` is what ``render(turns[:i+1])`` adds to
  ``render(turns[:i], add_generation_prompt=True)`` — its content and the template's end of turn
  (openPangu: ``[unused10]``, its EOS): those tokens are the targets, everything else is context;
* the generation prompt (``[unused9]助手：``) and the other turns are context.

Each piece is encoded on its own (the assistant content never merges with the prompt before it), so
the tokens a model is trained to produce are exactly those it generates after the generation prompt
at inference, which is rendered the same way. ``<image>`` in a user turn becomes the image slot
(:data:`~pgmm_core.objectives.sequences.IMAGE_SLOT`); a conversation without one gets it at the start
of its first user turn (``<image>\\n`` + text, LLaVA's placement); further markers are removed (the
datasets refuse such conversations; both cases are counted by the objective). BOS starts the row
(when the tokenizer has one), as openPangu's own inference does (``tokenizer(text)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pgmm_core.objectives.sequences import IGNORE_INDEX, IMAGE_SLOT, TokenRow

IMAGE_MARKER = "<image>"
ROLES = ("system", "user", "assistant")


@dataclass
class ChatRow:
    """A rendered conversation: the row, whether the image marker had to be added or removed, and
    whether the text was truncated."""

    row: TokenRow
    marker_added: bool = False
    markers_removed: int = 0
    truncated: bool = False


def render(tokenizer: Any, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = False) -> str:
    if not hasattr(tokenizer, "apply_chat_template"):
        raise TypeError(f"{type(tokenizer).__name__} has no chat template (apply_chat_template): chat needs an "
                        "LLM whose tokenizer renders conversations")
    return tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=False)


def place_image_marker(conversation: Sequence[dict[str, str]]) -> tuple[list[dict[str, str]], bool, int]:
    """The conversation with exactly one ``<image>``: (turns, marker added, extra markers removed)."""
    turns = [{"role": t["role"], "content": t["content"]} for t in conversation]
    seen, removed = False, 0
    for turn in turns:
        count = turn["content"].count(IMAGE_MARKER)
        if not count:
            continue
        if seen:
            removed += count
            turn["content"] = turn["content"].replace(IMAGE_MARKER, "")
        else:
            seen = True
            if count > 1:
                head, _, tail = turn["content"].partition(IMAGE_MARKER)
                removed += count - 1
                turn["content"] = head + IMAGE_MARKER + tail.replace(IMAGE_MARKER, "")
    if seen:
        return turns, False, removed
    for turn in turns:
        if turn["role"] == "user":
            turn["content"] = f"{IMAGE_MARKER}\n{turn['content']}"
            return turns, True, removed
    raise ValueError("a conversation needs a user turn for the image")


def _encode(tokenizer: Any, text: str) -> list[int]:
    """``text``'s ids, ``<image>`` replaced by the image slot."""
    ids: list[int] = []
    for i, part in enumerate(text.split(IMAGE_MARKER)):
        if i:
            ids.append(IMAGE_SLOT)
        if part:
            ids.extend(tokenizer.encode(part, add_bos=False))
    return ids


def conversation_row(tokenizer: Any, conversation: Sequence[dict[str, str]], *, max_text_len: int | None = None,
                     add_generation_prompt: bool = False) -> ChatRow:
    """The token row of ``conversation`` (targets: every assistant turn's content and end of turn).

    ``add_generation_prompt`` appends the assistant prompt (for generating the next turn; a
    conversation ending with an assistant turn then trains nothing more). ``max_text_len`` limits the
    text tokens (the visual tokens are not counted): the row is cut at the end, the image slot kept.
    """
    for turn in conversation:
        if turn.get("role") not in ROLES:
            raise ValueError(f"unknown role {turn.get('role')!r} (roles: {', '.join(ROLES)})")
    turns, added, removed = place_image_marker(conversation)
    ids: list[int] = tokenizer.encode("", add_bos=True)  # BOS, or nothing for a model without one
    labels: list[int] = [IGNORE_INDEX] * len(ids)
    done = ""

    def extend(text: str, target: bool) -> None:
        piece = _encode(tokenizer, text)
        ids.extend(piece)
        labels.extend(t if target and t != IMAGE_SLOT else IGNORE_INDEX for t in piece)

    for i, turn in enumerate(turns):
        if turn["role"] == "assistant":
            prompt = render(tokenizer, turns[:i], add_generation_prompt=True)
            full = render(tokenizer, turns[: i + 1])
            _check_prefix(done, prompt, i)
            _check_prefix(prompt, full, i)
            extend(prompt[len(done):], target=False)
            extend(full[len(prompt):], target=True)
        else:
            full = render(tokenizer, turns[: i + 1])
            _check_prefix(done, full, i)
            extend(full[len(done):], target=False)
        done = full
    if add_generation_prompt:
        prompt = render(tokenizer, turns, add_generation_prompt=True)
        _check_prefix(done, prompt, len(turns))
        extend(prompt[len(done):], target=False)
    truncated = False
    if max_text_len is not None and len(ids) - 1 > max_text_len:  # the slot is not a text token
        keep = max_text_len + 1
        if IMAGE_SLOT not in ids[:keep]:
            keep -= 1
            ids, labels = ids[:keep] + [IMAGE_SLOT], labels[:keep] + [IGNORE_INDEX]
        else:
            ids, labels = ids[:keep], labels[:keep]
        truncated = True
    return ChatRow(TokenRow(ids, labels), added, removed, truncated)


def _check_prefix(prefix: str, text: str, turn: int) -> None:
    if not text.startswith(prefix):
        raise ValueError(f"the chat template renders turn {turn} differently once more turns follow; "
                         "pgmm cuts conversations by rendering them turn by turn and needs a template whose "
                         "rendering of a conversation starts with that of its first turns")
