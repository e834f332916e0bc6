"""Conversations in openPangu's chat format: the instruct objective's rows and label masks, token by token.

Uses the tiny openPangu checkpoint's tokenizer (SentencePiece with openPangu's special tokens and its
chat template), so the rows are exactly those the ``instruct`` objective trains on.
"""

from __future__ import annotations

import logging

import pytest
import torch

from pgmm_core.objectives.chat import conversation_row
from pgmm_core.objectives.sequences import IGNORE_INDEX, IMAGE_SLOT, TokenRow, TruncationCount, assemble

IMG = "<image-slot>"
# (token, supervised) for the known conversation below: the template's system turn, the user turn
# with the image slot, the assistant prompt "[unused9]助手：", then "red" + end of turn as targets ...
KNOWN = [
    ("<s>", 0), ("[unused9]", 0), ("▁系", 0), ("统", 0), ("<0xEF>", 0), ("<0xBC>", 0), ("<0x9A>", 0),
    ("[unused10]", 0),
    ("[unused9]", 0), ("▁用", 0), ("户", 0), ("<0xEF>", 0), ("<0xBC>", 0), ("<0x9A>", 0), (IMG, 0),
    ("▁", 0), ("<0x0A>", 0), ("t", 0), ("he", 0), ("▁c", 0), ("o", 0), ("l", 0), ("o", 0), ("u", 0), ("r", 0),
    ("[unused10]", 0),
    ("[unused9]", 0), ("▁助", 0), ("手", 0), ("<0xEF>", 0), ("<0xBC>", 0), ("<0x9A>", 0),
    ("▁red", 1), ("[unused10]", 1),
    ("[unused9]", 0), ("▁用", 0), ("户", 0), ("<0xEF>", 0), ("<0xBC>", 0), ("<0x9A>", 0),
    ("t", 0), ("he", 0), ("▁s", 0), ("h", 0), ("a", 0), ("p", 0), ("e", 0), ("[unused10]", 0),
    ("[unused9]", 0), ("▁助", 0), ("手", 0), ("<0xEF>", 0), ("<0xBC>", 0), ("<0x9A>", 0),
    ("▁a", 1), ("▁circle", 1), ("[unused10]", 1),
]
CONVERSATION = [{"role": "user", "content": "<image>\nthe colour"}, {"role": "assistant", "content": "red"},
                {"role": "user", "content": "the shape"}, {"role": "assistant", "content": "a circle"}]


@pytest.fixture(scope="module")
def tokenizer():
    from pgmm_pangu.make_tiny import TinySpec, ensure_tiny_checkpoint
    from pgmm_pangu.tokenizer import PanguTokenizer

    return PanguTokenizer(ensure_tiny_checkpoint(TinySpec(hidden_size=32, intermediate_size=64, num_layers=1,
                                                          num_heads=2, num_kv_heads=1)))


def tokens(tokenizer, row):
    return [IMG if i == IMAGE_SLOT else tokenizer.convert_ids_to_tokens([i])[0] for i in row.ids]


def test_known_conversation_is_masked_token_by_token(tokenizer):
    rendered = conversation_row(tokenizer, CONVERSATION)
    row = rendered.row
    assert list(zip(tokens(tokenizer, row), [int(label != IGNORE_INDEX) for label in row.labels])) == KNOWN
    for token_id, label in zip(row.ids, row.labels):
        assert label in (IGNORE_INDEX, token_id), "a target is the token at its own position"
    assert [label for label in row.labels if label != IGNORE_INDEX].count(tokenizer.eos_token_id) == 2
    assert not (rendered.truncated or rendered.marker_added or rendered.markers_removed)
    # the row is the template's rendering: the same text, the image marker where the slot is (pieces
    # are encoded apart, so each starts with SentencePiece's dummy-prefix space: spaces are not compared)
    text = tokenizer.decode([t for t in row.ids if t != IMAGE_SLOT][1:])
    rendered_text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False).replace("<image>", "")
    assert text.replace(" ", "") == rendered_text.replace(" ", "")


def test_generation_prompt_row_is_the_training_row_up_to_the_reply(tokenizer):
    """What the model is trained to produce after a prompt is what it generates after the same prompt."""
    full = conversation_row(tokenizer, CONVERSATION).row
    for turns in (1, 3):
        prompt = conversation_row(tokenizer, CONVERSATION[:turns], add_generation_prompt=True).row
        assert full.ids[: len(prompt.ids)] == prompt.ids
        assert prompt.labels == full.labels[: len(prompt.ids)], "earlier replies train in the same row"
        assert all(label == IGNORE_INDEX for label in prompt.labels[-6:]), "the generation prompt trains nothing"
        assert tokens(tokenizer, prompt)[-6:] == ["[unused9]", "▁助", "手", "<0xEF>", "<0xBC>", "<0x9A>"]
        rest = full.labels[len(prompt.ids):]
        reply = rest[: rest.index(tokenizer.eos_token_id) + 1]
        assert all(label != IGNORE_INDEX for label in reply), "the reply right after the prompt is the target"
        assert tokenizer.decode(reply, skip_special_tokens=True).strip() == CONVERSATION[turns]["content"]


def test_image_marker_missing_or_repeated_is_placed_once_and_reported(tokenizer):
    bare = [{"role": "user", "content": "the colour"}, {"role": "assistant", "content": "red"}]
    rendered = conversation_row(tokenizer, bare)
    assert rendered.marker_added and rendered.row.ids.count(IMAGE_SLOT) == 1
    assert rendered.row.ids == conversation_row(tokenizer, [{"role": "user", "content": "<image>\nthe colour"},
                                                            bare[1]]).row.ids
    twice = [{"role": "user", "content": "<image>\nthe <image>colour"}, {"role": "assistant", "content": "red"},
             {"role": "user", "content": "<image> the shape"}, {"role": "assistant", "content": "a circle"}]
    rendered = conversation_row(tokenizer, twice)
    assert rendered.markers_removed == 2 and rendered.row.ids.count(IMAGE_SLOT) == 1
    with pytest.raises(ValueError, match="unknown role"):
        conversation_row(tokenizer, [{"role": "human", "content": "hi"}])


def test_truncation_keeps_the_image_and_counts(tokenizer, caplog):
    full = conversation_row(tokenizer, CONVERSATION).row
    cut = conversation_row(tokenizer, CONVERSATION, max_text_len=40)
    assert cut.truncated and len(cut.row.ids) == 41 and cut.row.ids == full.ids[:41]
    assert cut.row.labels == full.labels[:41] and cut.row.num_targets == 2  # "red" + end of turn survive
    early = conversation_row(tokenizer, CONVERSATION, max_text_len=5)
    assert early.row.ids.count(IMAGE_SLOT) == 1 and len(early.row.ids) == 6 and early.row.num_targets == 0
    assert not conversation_row(tokenizer, CONVERSATION, max_text_len=len(full.ids) - 1).truncated
    counter = TruncationCount("conversation(s)", logging.getLogger("test.truncation"))
    with caplog.at_level(logging.INFO, logger="test.truncation"):
        for truncated in (False, True, True, False, True):
            counter.add(truncated, 40)
    assert (counter.truncated, counter.seen) == (3, 5)
    assert [r.getMessage() for r in caplog.records] == [
        "1 of 2 conversation(s) so far were longer than 40 tokens and were truncated",
        "2 of 3 conversation(s) so far were longer than 40 tokens and were truncated"]


def test_assemble_puts_visual_tokens_in_the_slot_and_pads_either_side():
    class Embed:
        def embed_tokens(self, ids):
            return ids.float()[:, None].expand(-1, 2) * 10

    rows = [TokenRow([1, IMAGE_SLOT, 2, 3], [IGNORE_INDEX, IGNORE_INDEX, 2, 3]),
            TokenRow([IMAGE_SLOT, 4], [IGNORE_INDEX, 4])]
    visual = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2) * -1
    right = assemble(Embed(), visual, rows, padding="right")
    left = assemble(Embed(), visual, rows, padding="left")
    assert right.attention_mask.tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]
    assert left.attention_mask.tolist() == [[1] * 6, [0, 0, 1, 1, 1, 1]]
    assert right.labels.tolist() == [[-100, -100, -100, -100, 2, 3], [-100, -100, -100, 4, -100, -100]]
    assert right.inputs_embeds[0, :, 0].tolist() == [10, 0, -2, -4, 20, 30]
    assert left.inputs_embeds[1, 2:, 0].tolist() == [-6, -8, -10, 40]
    assert left.inputs_embeds[1, :2].abs().sum() == 0


def test_text_pieces_hold_back_partial_characters_and_stop_at_eos(tokenizer):
    from pgmm_core.text_stream import TextPieces, stream_generation

    ids = tokenizer.encode("a red circle：你好", add_bos=False)
    assert len(ids) > 5 and "<0xEF>" in tokenizer.convert_ids_to_tokens(ids), "a character made of byte tokens"
    pieces = TextPieces(tokenizer)
    pieces.put(torch.empty((1, 0), dtype=torch.long))  # transformers puts the (empty) prompt first
    for token_id in [*ids, tokenizer.eos_token_id, ids[0]]:
        pieces.put(torch.tensor([token_id]))
    pieces.end()
    out = list(pieces)
    assert "".join(out) == tokenizer.decode(ids, skip_special_tokens=True) == "a red circle：你好"
    assert not any("\ufffd" in piece for piece in out), out
    assert len(out) >= 4, "one piece per completed token, not the whole text at once"

    def failing(streamer):
        streamer.put(torch.tensor([ids[0]]))
        raise RuntimeError("device lost")

    with pytest.raises(RuntimeError, match="device lost"):
        list(stream_generation(failing, tokenizer))
