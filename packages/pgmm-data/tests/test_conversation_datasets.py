"""LLaVA conversation JSON and conversation JSONL: turns, the <image> marker, bad conversations."""

from __future__ import annotations

import json
import logging

import pytest

from pgmm_core.errors import DataError
from pgmm_core.preprocessing import clip_spec
from pgmm_data.conversations import build_jsonl_conversations, build_llava_conversations
from pgmm_data.testing_vqa import llava_conversation, write_conversation_jsonl, write_llava_tree
from pgmm_data.vqa_configs import JsonlConversationsConfig, LlavaConversationsConfig

SPEC = clip_spec(32)


def _turns(*pairs):
    return [{"from": who, "value": text} for who, text in pairs]


BAD_LLAVA = [  # entries 3.. of the file; each breaks one rule
    {"id": "no-marker", "image": "coco/train2017/000000033471.jpg",
     "conversations": _turns(("human", "What is it?"), ("gpt", "A thing."))},
    {"id": "two-markers", "image": "coco/train2017/000000033471.jpg",
     "conversations": _turns(("human", "<image>\nAnd <image>?"), ("gpt", "Two."))},
    {"id": "empty-answer", "image": "coco/train2017/000000033471.jpg",
     "conversations": _turns(("human", "<image>\nWhat?"), ("gpt", "  "))},
    {"id": "marker-in-answer", "image": "coco/train2017/000000033471.jpg",
     "conversations": _turns(("human", "Look."), ("gpt", "<image> here"))},
    {"id": "ends-with-question", "image": "coco/train2017/000000033471.jpg",
     "conversations": _turns(("human", "<image>\nWhat?"), ("gpt", "A cat."), ("human", "And?"))},
    {"id": "text-only", "conversations": _turns(("human", "Hi"), ("gpt", "Hello."))},
    {"id": "no-marker-2", "image": "coco/train2017/000000033471.jpg",
     "conversations": _turns(("human", "Colour?"), ("gpt", "Red."))},
]


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return write_llava_tree(tmp_path_factory.mktemp("llava"), conversations=3, size=(40, 32), extra=BAD_LLAVA)


def test_llava_turns_become_user_and_assistant_with_the_marker_kept(llava):
    dataset = build_llava_conversations(LlavaConversationsConfig(path=str(llava.annotation_files["train"])),
                                        split="train", image_spec=SPEC)
    assert len(dataset) == 3
    entries = json.loads(llava.annotation_files["train"].read_text())
    for index in range(3):
        item = dataset[index]
        expected = [{"role": {"human": "user", "gpt": "assistant"}[t["from"]], "content": t["value"]}
                    for t in entries[index]["conversations"]]
        assert item["conversation"] == expected and item["id"] == entries[index]["id"]
        assert tuple(item["image"].shape) == (3, 32, 32)
    multi = dataset[2]["conversation"]  # three question/answer pairs in one conversation
    assert len(multi) == 6 and multi[0]["content"].startswith("<image>\n") and "<image>" not in multi[2]["content"]
    assert multi == [{"role": r, "content": t["value"]} for r, t in zip(["user", "assistant"] * 3, llava_conversation(2, 3))]


def test_bad_conversations_are_skipped_counted_and_logged(llava, caplog):
    with caplog.at_level(logging.WARNING, logger="pgmm_data.conversations"):
        dataset = build_llava_conversations(LlavaConversationsConfig(path=str(llava.annotation_files["train"])),
                                            split="val", image_spec=SPEC)
    assert dataset.skipped == {"no <image> marker": 2, "2 <image> markers": 1, "empty assistant turn": 1,
                               "<image> marker in an assistant turn": 1, "ends with a user turn": 1,
                               "without an image": 1}
    assert [dataset[i]["id"] for i in range(len(dataset))] == [e["id"] for e in
                                                               json.loads(llava.annotation_files["train"].read_text())[:3]]
    message = caplog.text
    assert "skipped 7 conversation(s)" in message and "2 no <image> marker (entry 3, entry 9)" in message
    assert "llava_instruct.json" in message


@pytest.mark.parametrize(("bad", "problem"), [(0, "no <image> marker"), (1, "2 <image> markers"),
                                              (2, "empty assistant turn")])
def test_refuse_names_file_entry_and_rule(tmp_path, bad, problem):
    tree = write_llava_tree(tmp_path, conversations=2, size=(40, 32), extra=[BAD_LLAVA[bad]])
    config = LlavaConversationsConfig(path=str(tree.annotation_files["train"]), bad_conversations="refuse")
    with pytest.raises(DataError, match=rf"llava_instruct\.json: entry 2: {problem}"):
        build_llava_conversations(config, split="train", image_spec=SPEC)


def test_malformed_turns_are_always_refused(tmp_path):
    tree = write_llava_tree(tmp_path, conversations=1, size=(40, 32),
                            extra=[{"id": "x", "image": "a.jpg", "conversations": [{"from": "system", "value": "hi"}]}])
    with pytest.raises(DataError, match=r"entry 1: conversations\[0\] must be"):
        build_llava_conversations(LlavaConversationsConfig(path=str(tree.annotation_files["train"])),
                                  split="train", image_spec=SPEC)


def test_missing_llava_file_names_itself_and_the_download(tmp_path):
    with pytest.raises(DataError, match=r"not found: .*nothing\.json.*LLaVA-Instruct-150K"):
        build_llava_conversations(LlavaConversationsConfig(path=str(tmp_path / "nothing.json")), split="train",
                                  image_spec=SPEC)


def test_jsonl_items_ids_and_blank_lines(tmp_path):
    odd = {"image": "photos/chat_000.jpg", "id": "sep",
           "conversation": [{"role": "user", "content": "<image>\nline\u2028separator?"},
                            {"role": "assistant", "content": "Yes."}]}
    tree = write_conversation_jsonl(tmp_path, conversations=3, size=(40, 32),
                                    extra_lines=["", json.dumps(odd, ensure_ascii=False)])
    dataset = build_jsonl_conversations(JsonlConversationsConfig(path=str(tree.annotation_files["train"])),
                                        split="train", image_spec=SPEC)
    assert [dataset[i]["id"] for i in range(4)] == ["chat-0", "line 2", "chat-2", "sep"]
    assert dataset[3]["conversation"][0]["content"] == "<image>\nline\u2028separator?"
    assert dataset[1]["conversation"][0] == {"role": "user", "content": llava_conversation(3, 2)[0]["value"]}
    assert len(dataset[1]["conversation"]) == 4 and dataset.skipped == {}


def test_jsonl_bad_conversation_skips_or_refuses_with_its_line(tmp_path):
    no_marker = json.dumps({"image": "photos/chat_000.jpg", "conversation": [
        {"role": "user", "content": "What?"}, {"role": "assistant", "content": "That."}]})
    tree = write_conversation_jsonl(tmp_path, conversations=2, size=(40, 32), extra_lines=[no_marker])
    path = str(tree.annotation_files["train"])
    dataset = build_jsonl_conversations(JsonlConversationsConfig(path=path), split="train", image_spec=SPEC)
    assert len(dataset) == 2 and dataset.skipped == {"no <image> marker": 1}
    with pytest.raises(DataError, match=r"chat\.jsonl: line 3: no <image> marker"):
        build_jsonl_conversations(JsonlConversationsConfig(path=path, bad_conversations="refuse"), split="train",
                                  image_spec=SPEC)


def test_jsonl_invalid_json_and_bad_roles_name_the_line(tmp_path):
    tree = write_conversation_jsonl(tmp_path, conversations=1, size=(40, 32), extra_lines=["{not json"])
    with pytest.raises(DataError, match=r"chat\.jsonl: line 2: invalid JSON at column 2"):
        build_jsonl_conversations(JsonlConversationsConfig(path=str(tree.annotation_files["train"])),
                                  split="train", image_spec=SPEC)
    bad_role = json.dumps({"image": "x.jpg", "conversation": [{"role": "gpt", "content": "hi"}]})
    (tmp_path / "chat.jsonl").write_text(bad_role + "\n")
    with pytest.raises(DataError, match=r"line 1: conversation\[0\] must be"):
        build_jsonl_conversations(JsonlConversationsConfig(path=str(tmp_path / "chat.jsonl")), split="train",
                                  image_spec=SPEC)


def test_all_conversations_bad_is_an_error(tmp_path):
    tree = write_llava_tree(tmp_path, conversations=0, size=(40, 32), extra=BAD_LLAVA[:1])
    with pytest.raises(DataError, match=r"no usable conversations \(all skipped: no <image> marker\)"):
        build_llava_conversations(LlavaConversationsConfig(path=str(tree.annotation_files["train"])),
                                  split="train", image_spec=SPEC)
