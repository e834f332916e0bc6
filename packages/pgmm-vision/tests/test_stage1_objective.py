"""The ``qformer_pretrain`` objective: its config, its loss weights, the bad inputs it refuses or counts
(its contract: test_contract_objectives.py)."""

from __future__ import annotations

import logging

import pytest
import torch

from pgmm_core.config.loading import validate_config
from pgmm_core.errors import ConfigError
from pgmm_vision.stage1 import parity
from pgmm_vision.stage1.configs import QFormerPretrainConfig
from pgmm_vision.stage1.losses import Negatives
from pgmm_vision.stage1.objective import QFormerPretrainObjective

@pytest.fixture(scope="module")
def run_config(stage1_config, host, tmp_path_factory):
    return validate_config(stage1_config(tmp_path_factory.mktemp("run")), host)


@pytest.fixture(scope="module")
def tiny_model(run_config):
    from pgmm_core.model import build_model

    torch.manual_seed(0)
    return build_model(run_config).eval()


def pairs(captions, image_ids=None, size=32):
    from pgmm_vision.stage1.objective import collate_pairs

    generator = torch.Generator().manual_seed(3)
    return collate_pairs([{"image": torch.randn(3, size, size, generator=generator), "caption": caption,
                     "image_id": image_ids[i] if image_ids else f"img{i}"} for i, caption in enumerate(captions)])


# --- config and bad input ---------------------------------------------------------------------------


def test_a_global_batch_of_one_is_refused_naming_the_field(run_config, monkeypatch):
    single = run_config.model_copy(update={"data": run_config.data.model_copy(update={"batch_size": 1})})
    problems = single.objective.config_problems(single, world_size=1)
    assert len(problems) == 1 and problems[0].startswith("data.batch_size: 1 per process x 1 process(es) is a "
                                                         "global batch of 1 pair(s)")
    assert "ITC and ITM" in problems[0]
    assert single.objective.config_problems(single, world_size=2) == []  # 1 pair on each of 2 ranks: 2 pairs
    assert run_config.objective.config_problems(run_config, world_size=1) == []
    monkeypatch.setenv("WORLD_SIZE", "4")  # validate under torchrun counts the launch's processes
    assert single.objective.config_problems(single) == []
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert single.objective.config_problems(single) == problems


def test_the_loss_refuses_a_step_with_one_pair(tiny_model):
    objective = QFormerPretrainObjective(QFormerPretrainConfig())
    with pytest.raises(ConfigError, match=r"data\.batch_size: 1 per process x 1 process\(es\) is a global batch of 1"):
        objective.loss(tiny_model, pairs(["a dog on the street"]))


def test_long_captions_are_truncated_as_lavis_and_counted(tiny_model, caplog):
    objective = QFormerPretrainObjective(QFormerPretrainConfig())
    long = " ".join(["a small red dog"] * 6)  # 24 words, limit 12 tokens with [CLS] and [SEP]
    text = tiny_model.connector.tokenize([long, "a cat"])
    assert text.truncated == 1 and text.input_ids.shape == (2, 12)
    assert text.input_ids[0, -1] == tiny_model.connector.tokenizer.sep_token_id  # LAVIS keeps [SEP]
    with caplog.at_level(logging.INFO, logger="pgmm_vision.stage1.objective"):
        objective.loss(tiny_model, pairs([long, "a cat", long]))
    assert objective.truncation.truncated == 2 and objective.truncation.seen == 3
    assert "2 of 3 caption(s) so far were longer than 12 tokens and were truncated" in caplog.text


def test_weights_scale_the_logged_parts(tiny_model):
    captions = ["a dog", "two cats on a table", "a man", "the red ball"]
    forced = parity.forced(Negatives(torch.tensor([1, 0, 3, 2]), torch.tensor([2, 3, 0, 1])))
    outputs = []
    for weights in ({}, {"itc": 2.0, "itm": 0.0, "itg": 0.5}):
        objective = QFormerPretrainObjective(QFormerPretrainConfig(**weights))
        objective.sampler = forced
        outputs.append(objective.loss(tiny_model, pairs(captions)))
    plain, weighted = outputs
    assert set(plain.parts) == {"itc", "itm", "itg"} and plain.num_targets == 4
    assert plain.parts == weighted.parts  # the parts are the unweighted losses
    assert plain.loss.item() == pytest.approx(sum(plain.parts.values()), rel=1e-6)
    expected = 2.0 * plain.parts["itc"] + 0.5 * plain.parts["itg"]
    assert weighted.loss.item() == pytest.approx(expected, rel=1e-6)


def test_all_weights_zero_is_refused():
    with pytest.raises(ValueError, match="itc, itm and itg are all 0"):
        QFormerPretrainConfig(itc=0, itm=0, itg=0)


def test_a_connector_without_text_side_is_refused_naming_the_field(host, stage1_config, tmp_path):
    from pgmm_core.model import build_model

    data = stage1_config(tmp_path)
    data["model"]["connector"]["text_side"] = False
    model = build_model(validate_config(data, host))
    with pytest.raises(ConfigError, match="model.connector.text_side"):
        QFormerPretrainObjective(QFormerPretrainConfig()).loss(model, pairs(["a", "b"]))


def test_same_image_pairs_are_never_drawn_as_negatives(tiny_model):
    """Image ids shared by pairs 0 and 1 (two captions of one image): zero ITM weight both ways."""
    seen = {}

    def record(weights_t2i, weights_i2t):
        seen.update(t2i=weights_t2i, i2t=weights_i2t)
        return Negatives(torch.tensor([2, 2, 0, 0]), torch.tensor([3, 2, 1, 0]))

    objective = QFormerPretrainObjective(QFormerPretrainConfig())
    objective.sampler = record
    objective.loss(tiny_model, pairs(["a dog", "a small dog", "a cat", "a ball"], image_ids=[7, 7, 8, 9]))
    for weights in seen.values():
        excluded = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
        assert torch.all(weights[excluded] == 0) and torch.all(weights[~excluded] > 0)
        assert torch.allclose(weights.sum(1), torch.ones(4))


def test_a_step_runs_the_query_pass_once_and_itg_reads_it(tiny_model):
    """As LAVIS (ITG over the query pass's ``past_key_values``): the Q-Former runs the queries alone
    once per step — for ITC and ITG both — beside the text pass and ITM's joint pass; and ITG's loss
    is the one over a query pass of the same vision embeddings."""

    connector = tiny_model.connector
    batch = pairs(["a dog", "two cats on a table", "a man", "the red ball"])
    calls = []

    def record(module, args, kwargs, output):
        calls.append("text" if kwargs.get("encoder_hidden_states") is None
                     else "itm" if kwargs.get("query_length") else "query")

    hook = connector.qformer.register_forward_hook(record, with_kwargs=True)
    try:
        objective = QFormerPretrainObjective(QFormerPretrainConfig())
        objective.sampler = parity.forced(Negatives(torch.tensor([1, 0, 3, 2]), torch.tensor([2, 3, 0, 1])))
        output = objective.loss(tiny_model, batch)
    finally:
        hook.remove()
    assert sorted(calls) == ["itm", "query", "text"]
    with torch.no_grad():
        vision_embeds = tiny_model.vision_embeddings(batch.images)
        assert torch.equal(vision_embeds, tiny_model.encode_image(batch.images).vision_embeds)
        text = connector.tokenize(batch.captions)
        itg = connector.itg_loss(vision_embeds, text.input_ids, text.attention_mask)  # its own query pass
    assert output.parts["itg"] == pytest.approx(itg.item(), rel=1e-6)
