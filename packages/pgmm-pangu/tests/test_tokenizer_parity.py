"""PanguTokenizer reproduces the release's tokenizer id for id and character for character.

Goldens: ``data/tokenizer_goldens.json`` (40 Chinese/English texts, raw-id decodes, chat
conversations, batch padding), made by the release's ``tokenization_openpangu.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgmm_core.errors import CheckpointError
from pgmm_pangu.tokenizer import PanguTokenizer

DATA = Path(__file__).parent / "data"
GOLDENS = json.loads((DATA / "tokenizer_goldens.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return PanguTokenizer(tokenizer_dir)


def test_special_tokens_and_sizes(tok):
    meta = GOLDENS["meta"]
    assert (tok.bos_token, tok.bos_token_id) == tuple(meta["bos"])
    assert (tok.eos_token, tok.eos_token_id) == tuple(meta["eos"]) == ("[unused10]", 45892)
    assert (tok.pad_token, tok.pad_token_id) == tuple(meta["pad"])
    assert (tok.unk_token, tok.unk_token_id) == tuple(meta["unk"])
    assert tok.all_special_ids == set(meta["all_special_ids"])
    assert {content: t.id for content, t in tok.added.items()} == meta["added_tokens_encoder"]
    assert tok.vocab_size == meta["sp_vocab_size"] and len(tok) == meta["len_tokenizer"]


@pytest.mark.parametrize("entry", GOLDENS["entries"], ids=lambda e: repr(e["text"])[:30])
def test_corpus_ids_tokens_and_decoding(tok, entry):
    text = entry["text"]
    assert tok.encode(text) == entry["input_ids"]
    assert tok.encode(text, add_bos=False) == entry["input_ids_no_special"]
    assert tok.tokenize(text) == entry["tokenize"]
    assert tok.convert_ids_to_tokens(entry["input_ids"]) == entry["tokens"]
    assert tok.decode(entry["input_ids"], skip_special_tokens=False) == entry["decode"]
    assert tok.decode(entry["input_ids"], skip_special_tokens=True) == entry["decode_skip_special"]
    assert tok.decode(entry["input_ids_no_special"], skip_special_tokens=False) == entry["decode_no_special_ids"]
    assert tok.decode(entry["input_ids_no_special"], skip_special_tokens=True) == \
        entry["decode_no_special_ids_skip_special"]


def test_corpus_covers_chinese_english_and_special_tokens():
    texts = [e["text"] for e in GOLDENS["entries"]]
    assert len(texts) == 40
    assert sum(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in texts) >= 20
    assert any("[unused9]" in t for t in texts) and any("<s>" in t for t in texts)


@pytest.mark.parametrize("case", GOLDENS["decode_cases"], ids=lambda c: str(c["ids"])[:30])
def test_decoding_generated_ids(tok, case):
    """Raw ids as a model emits them: byte-fallback pieces, </s>, [unusedN], incomplete UTF-8."""
    assert tok.convert_ids_to_tokens(case["ids"]) == case["tokens"]
    assert tok.decode(case["ids"], skip_special_tokens=False) == case["decode"]
    assert tok.decode(case["ids"], skip_special_tokens=True) == case["decode_skip_special"]


@pytest.mark.parametrize("name", sorted(GOLDENS["chat"]))
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_chat_template(tok, name, generation_prompt):
    chat = GOLDENS["chat"][name]
    suffix = "gen" if generation_prompt else "nogen"
    text = tok.apply_chat_template(chat["messages"], add_generation_prompt=generation_prompt, tokenize=False)
    assert text == chat[f"text_{suffix}"]
    assert tok.encode(text) == chat[f"ids_tokenizer_call_{suffix}"]  # what the release's generate.py feeds
    assert tok.encode(text, add_bos=False) == chat[f"ids_apply_chat_template_{suffix}"]
    ids = tok.apply_chat_template(chat["messages"], add_generation_prompt=generation_prompt)
    assert ids == chat[f"ids_apply_chat_template_{suffix}"]  # transformers' default: tokenize=True


def test_chat_without_system_turn_gets_an_empty_one(tok):
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text == "[unused9]系统：[unused10][unused9]用户：hi[unused10][unused9]助手："


def test_defaults_are_transformers_defaults(tok):
    """decode keeps special tokens and apply_chat_template adds no generation prompt and returns ids,
    as ``PreTrainedTokenizer`` (the reference tokenizer's base class) does."""
    ids = tok.encode("a cat")
    assert tok.decode(ids) == tok.decode(ids, skip_special_tokens=False) == "<s>a cat"
    assert tok.decode(ids, skip_special_tokens=True) == "a cat"
    conversation = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(conversation, tokenize=False) == "[unused9]系统：[unused10][unused9]用户：hi[unused10]"
    assert tok.apply_chat_template(conversation) == tok.encode(
        tok.apply_chat_template(conversation, tokenize=False), add_bos=False)


@pytest.mark.parametrize("side", ["right", "left"])
def test_batch_padding(tok, side):
    batch = GOLDENS["batch_padding"]
    assert tok(batch["texts"], padding_side=side) == batch[side]


def test_missing_tokenizer_model_is_a_clear_error(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"tokenizer\.model not found in .*release"):
        PanguTokenizer(tmp_path)


def test_git_lfs_pointer_instead_of_the_model_is_a_clear_error(tmp_path):
    (tmp_path / "tokenizer.model").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:6b16f155\nsize 2477809\n")
    with pytest.raises(CheckpointError, match="not a SentencePiece model"):
        PanguTokenizer(tmp_path)
