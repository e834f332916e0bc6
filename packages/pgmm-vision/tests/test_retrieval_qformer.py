"""Retrieval with the real stage-1 Q-Former (tiny sizes): the evaluation equals a brute-force LAVIS-style
computation that scores every image-text pair with the connector's own ITC and ITM."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pgmm_vision.configs import QFormerConfig
from pgmm_vision.stage1.retrieval import evaluate_retrieval
from pgmm_vision.stage1.retrieval_metrics import image_ranks, rank_all, retrieval_metrics, text_ranks
from pgmm_vision.stage1.retrieval_settings import RetrievalSettings
from pgmm_vision.stage1.retrieval_testing import TableDataset, ThreadRankContext

WORDS = "a the cat dog red blue small big sits runs on under table grass ball box".split()
WIDTH = 16  # the vision tower's width
TOKENS = 5  # vision tokens per image


class TinyStage1Model(torch.nn.Module):
    """A fixed random 'tower' (pixels -> TOKENS x WIDTH) in front of a real text-side Q-Former."""

    def __init__(self, connector: torch.nn.Module) -> None:
        super().__init__()
        self.connector = connector
        self.tower = torch.nn.Linear(3 * 2 * 2, TOKENS * WIDTH)

    def vision_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        embeds = torch.tanh(self.tower(pixel_values.flatten(1) / 10)).view(-1, TOKENS, WIDTH)
        return embeds


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from pgmm_vision.stage1.text_side import QFormerWithTextSide
    from pgmm_vision.stage1.tokenizer import load_tokenizer

    bert = tmp_path_factory.mktemp("bert")
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    config = QFormerConfig(num_query_tokens=4, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                           dropout=0.0, attention_dropout=0.0, text_side=True, bert_init=str(bert), max_text_len=8,
                           embed_dim=8, max_position_embeddings=16)
    torch.manual_seed(0)
    connector = QFormerWithTextSide(config, WIDTH, load_tokenizer(bert))
    return TinyStage1Model(connector).eval()


class CaptionedTable(TableDataset):
    """The table dataset with real words as captions."""

    @property
    def texts(self) -> list[str]:
        generator = np.random.default_rng(3)  # text 0 has more tokens than max_text_len: it is cut
        return [" ".join(generator.choice(WORDS, size=9 if j == 0 else 4)) for j in range(len(self.txt2img))]


def brute_force(model, data):
    """Every pair scored as LAVIS scores a re-ranked candidate: ITM match logit + ITC similarity."""
    with torch.no_grad():
        pixels = torch.stack([data[i]["image"] for i in range(len(data))])
        vision = model.vision_embeddings(pixels)
        _, image_feats = model.connector.image_side(vision)
        tokens = model.connector.tokenize(data.texts, "cpu")
        text_feats = model.connector.text_feature(tokens.input_ids, tokens.attention_mask)
        sims = torch.einsum("iqd,td->iqt", image_feats, text_feats).amax(dim=1)
        scores = torch.empty_like(sims)
        for i in range(len(data)):
            count = len(data.texts)
            logits = model.connector.itm_logits(vision[i:i + 1].expand(count, -1, -1), tokens.input_ids,
                                                tokens.attention_mask)
            scores[i] = logits[:, 1] + sims[i]
    return scores


def test_evaluation_equals_brute_force_with_the_stage1_connector(model, caplog):
    data = CaptionedTable(np.repeat(np.arange(4), 5), image_ids=[10, 20, 30, 40])
    context = ThreadRankContext(device=torch.device("cpu"), policy=None, collectives=None, batch_size=3,
                                num_workers=0, eval=SimpleNamespace(max_images=None))
    with caplog.at_level("INFO", logger="pgmm_vision.stage1.retrieval"):
        output = evaluate_retrieval(model, data, context, RetrievalSettings(k_test=20, itm_batch_size=7))
    assert "1 of 20 captions were longer than the text limit" in caplog.text
    scores = brute_force(model, data)
    txt2img = torch.as_tensor(data.txt2img)
    expected_text_ranks = text_ranks(rank_all(scores), torch.arange(4), txt2img)
    expected_image_ranks = image_ranks(rank_all(scores.T), torch.arange(20), txt2img)
    assert output.metrics == pytest.approx(retrieval_metrics(expected_text_ranks, expected_image_ranks))
    assert [r["rank"] for r in output.results[:4]] == [int(r) for r in expected_text_ranks]
    assert [r["text_ids"] for r in output.results[:4]] == rank_all(scores)[:, :10].tolist()
    ids = [10, 20, 30, 40]
    expected_images = [[ids[i] for i in row] for row in rank_all(scores.T).tolist()]
    assert [r["image_ids"] for r in output.results[4:]] == expected_images
