"""Asking a model about an image: the VQA loss, batched answers, streaming, the Assistant and `ask`."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from pgmm_core.captioner import Captioner
from pgmm_core.config.loading import validate_config
from pgmm_core.devices.base import PrecisionPolicy
from pgmm_core.model import build_model
from pgmm_core.objectives.sequences import IGNORE_INDEX, IMAGE_SLOT, TokenRow, assemble
from pgmm_core.objectives.vqa import VqaBatch
from pgmm_core.testing import run_train, tiny_config

VQA_DATA = {"train": [{"type": "synthetic_shapes_vqa", "num_samples": 8, "seed": 0}],
            "val": [{"type": "synthetic_shapes_vqa", "num_samples": 2, "seed": 0}], "batch_size": 4,
            "num_workers": 0}
CHAT_DATA = {"train": [{"type": "synthetic_shapes_chat", "num_samples": 8, "seed": 0}],
             "val": [{"type": "synthetic_shapes_chat", "num_samples": 2, "seed": 0}], "batch_size": 4,
             "num_workers": 0}


@pytest.fixture(scope="module")
def host():
    from pgmm_core.plugins import PluginHost

    return PluginHost(environ={})


def built(host, tmp_path, objective, data):
    config = validate_config(tiny_config(tmp_path / "run", objective=objective, data=data), host, source="test")
    torch.manual_seed(0)
    model = build_model(config).eval()
    return config, model, host.build("objective", config.objective)


def assistant_for(host, tmp_path, objective, data, mode):
    from pgmm_core.assistant import Assistant

    config, model, built_objective = built(host, tmp_path, objective, data)
    captioner = Captioner(model, device=torch.device("cpu"), policy=PrecisionPolicy.for_precision("fp32", "cpu"),
                          generation=config.eval.generation)
    return Assistant(captioner, mode=mode, objective=None if mode == "caption" else built_objective)


def images(count):
    from pgmm_data.synthetic import render

    return [render(0, "val", i, 32)[0] for i in range(count)]


def test_vqa_loss_weighs_each_answers_summed_loss_like_blip(host, tmp_path):
    _, model, objective = built(host, tmp_path, {"type": "vqa"}, VQA_DATA)
    pixels = torch.randn(2, 3, 32, 32)
    batch = VqaBatch(images=pixels, questions=["what colour is it?", "where is it?"],
                     answers=[["red"], ["top left", "upper left"]], answer_weights=[[1.0], [0.7, 0.3]],
                     question_ids=[0, 1])
    output = objective.loss(model, batch)
    assert output.num_targets == 2
    tok = model.llm.tokenizer
    visual = model.encode_image(pixels).llm_embeds
    expected = torch.zeros(())
    for q, (question, answers, weights) in enumerate(zip(batch.questions, batch.answers, batch.answer_weights)):
        prompt = tok.encode(f"Question: {question} Short answer:", add_bos=True)
        for answer, weight in zip(answers, weights):
            target = tok.encode(answer, add_bos=False) + [tok.eos_token_id]
            row = TokenRow([IMAGE_SLOT, *prompt, *target], [IGNORE_INDEX] * (len(prompt) + 1) + target)
            alone = assemble(model.llm, visual[q : q + 1], [row])
            logits = model.llm.model(inputs_embeds=alone.inputs_embeds, attention_mask=alone.attention_mask).logits
            summed = F.cross_entropy(logits[0, :-1], alone.labels[0, 1:], ignore_index=IGNORE_INDEX, reduction="sum")
            assert int((alone.labels != IGNORE_INDEX).sum()) == len(target)
            expected = expected + weight * summed
    torch.testing.assert_close(output.loss, expected / 2, atol=1e-4, rtol=1e-4)


def test_answers_are_truncated_and_counted(host, tmp_path):
    _, model, objective = built(host, tmp_path, {"type": "vqa", "max_answer_len": 2, "max_question_len": 6},
                                VQA_DATA)
    tok = model.llm.tokenizer
    batch = VqaBatch(images=torch.randn(1, 3, 32, 32), questions=["what colour is the big shape?"],
                     answers=[["a large red circle"]], answer_weights=[[1.0]], question_ids=[0])
    rows, counts, weights = objective.answer_rows(tok, batch)
    assert counts == [1] and weights == [1.0]
    targets = [label for label in rows[0].labels if label != IGNORE_INDEX]
    assert targets == tok.encode("a large red circle", add_bos=False)[:2] + [tok.eos_token_id]
    assert len(rows[0].ids) == 1 + 6 + 3
    assert objective.answer_cuts.truncated == 1 and objective.question_cuts.truncated == 1


@pytest.mark.parametrize("mode", ["vqa", "instruct"])
def test_ask_many_equals_asking_one_by_one(host, tmp_path, mode):
    objective = {"type": mode, "generation": {"num_beams": 3, "max_new_tokens": 5, "min_new_tokens": 2}}
    assistant = assistant_for(host, tmp_path, objective, VQA_DATA if mode == "vqa" else CHAT_DATA, mode)
    questions = ["what colour is it?", "where is the shape in the picture?", "what shape?"]
    history = [{"role": "user", "content": "what colour is it?"}, {"role": "assistant", "content": "red"}]
    histories = [None, history, None]
    pictures = images(3)
    together = assistant.ask_many(pictures, questions, histories=histories)
    alone = [assistant.ask(p, q, history=h) for p, q, h in zip(pictures, questions, histories)]
    assert together == alone and all(isinstance(a, str) for a in together)
    greedy = [assistant.ask(p, q, history=h, num_beams=1) for p, q, h in zip(pictures, questions, histories)]
    assert assistant.ask_many(pictures, questions, histories=histories, num_beams=1) == greedy


@pytest.mark.parametrize("mode", ["vqa", "instruct"])
def test_stream_yields_the_answer_piece_by_piece(host, tmp_path, mode):
    objective = {"type": mode, "generation": {"num_beams": 1, "max_new_tokens": 6, "min_new_tokens": 6}}
    assistant = assistant_for(host, tmp_path, objective, VQA_DATA if mode == "vqa" else CHAT_DATA, mode)
    picture = images(1)[0]
    pieces = list(assistant.stream(picture, "what shape is it?"))
    assert len(pieces) > 1, "greedy decoding streams more than one piece"
    assert "".join(pieces).strip() == assistant.ask(picture, "what shape is it?")
    beam = list(assistant.stream(picture, "what shape is it?", num_beams=2))
    assert beam == [assistant.ask(picture, "what shape is it?", num_beams=2)], "beam search answers in one piece"


def test_vqa_history_goes_before_the_question_in_the_prompt_format(host, tmp_path):
    assistant = assistant_for(host, tmp_path, {"type": "vqa"}, VQA_DATA, "vqa")
    history = [{"role": "user", "content": "what colour?"}, {"role": "assistant", "content": "red"}]
    assert assistant.vqa_text("where?", history) == "Question: what colour? Short answer: red Question: where? Short answer:"
    assistant = assistant_for(host, tmp_path, {"type": "instruct"}, CHAT_DATA, "instruct")
    assert assistant.conversation("where?", history) == [
        {"role": "user", "content": "<image>\nwhat colour?"}, {"role": "assistant", "content": "red"},
        {"role": "user", "content": "where?"}]


def test_caption_run_says_so_and_answers_with_its_caption(host, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="pgmm_core.assistant"):
        assistant = assistant_for(host, tmp_path, {"type": "caption"}, {}, "caption")
    assert any("trained for captions only" in r.getMessage() for r in caplog.records)
    picture = images(1)[0]
    assert assistant.mode == "caption"
    assert assistant.ask(picture, "what colour is it?") == assistant.captioner.caption([picture])[0]


@pytest.fixture(scope="module")
def vqa_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vqa_run")
    config = tiny_config(tmp / "run", objective={"type": "vqa", "generation": {"num_beams": 1, "max_new_tokens": 4,
                                                                             "min_new_tokens": 1}},
                         data=VQA_DATA, train={"max_steps": 2, "eval_every": 2, "best_metric": "vqa_accuracy"})
    result = run_train(config, tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run"


def ask_cli(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "pgmm_core", "ask", *args], input=stdin, capture_output=True,
                          text=True, timeout=300)


def test_ask_cli_streams_one_answer_and_chats_from_stdin(vqa_run, tmp_path, capsys):
    from pgmm_core.assistant import Assistant
    from pgmm_core.cli import main

    picture = tmp_path / "shape.png"
    images(1)[0].save(picture)
    assistant = Assistant.from_run(vqa_run, checkpoint="last")
    assert assistant.mode == "vqa"
    assert main(["ask", "--run", str(vqa_run), "--checkpoint", "last", str(picture), "what colour is it?"]) == 0
    assert capsys.readouterr().out == assistant.ask(picture, "what colour is it?") + "\n"
    assert main(["ask", "--run", str(vqa_run), "--checkpoint", "last", str(picture)]) != 0
    assert "needs a question" in capsys.readouterr().err
    chat = ask_cli("--run", str(vqa_run), "--checkpoint", "last", "--chat", str(picture),
                   stdin="what colour is it?\nwhere is it?\n\nnot asked\n")
    assert chat.returncode == 0, chat.stderr[-2000:]
    first = assistant.ask(picture, "what colour is it?")
    second = assistant.ask(picture, "where is it?", history=[{"role": "user", "content": "what colour is it?"},
                                                              {"role": "assistant", "content": first}])
    assert chat.stdout.splitlines() == [first, second], "the history is kept; an empty line ends the chat"
