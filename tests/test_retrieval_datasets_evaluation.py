"""pgmm-data's retrieval test sets feed pgmm-vision's retrieval evaluation: a Flickr30k test file in
LAVIS' format with a broken photo, a text-side Q-Former at tiny sizes in front of a fixed random 'tower'."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from pgmm_core.preprocessing import clip_spec
from pgmm_data.configs import Flickr30kRetrievalConfig
from pgmm_data.retrieval import build_retrieval
from pgmm_data.testing import write_flickr30k_tree
from pgmm_vision.configs import QFormerConfig
from pgmm_vision.stage1.retrieval import evaluate_retrieval
from pgmm_vision.stage1.retrieval_settings import RetrievalSettings
from pgmm_vision.stage1.retrieval_testing import ThreadRankContext

WORDS = ("a an the of on in with and photo photograph picture cup coffee saucer cat tabby looking side astronaut "
         "white suit standing next to flag rocket launch pad there is this seen up close again").split()
SIDE, TOKENS, WIDTH = 8, 5, 16


class TinyModel(torch.nn.Module):
    def __init__(self, connector: torch.nn.Module) -> None:
        super().__init__()
        self.connector = connector
        self.tower = torch.nn.Linear(3 * SIDE * SIDE, TOKENS * WIDTH)

    def vision_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.tower(pixel_values.flatten(1))).view(-1, TOKENS, WIDTH)


def tiny_model(bert_dir) -> TinyModel:
    from pgmm_vision.stage1.text_side import QFormerWithTextSide
    from pgmm_vision.stage1.tokenizer import load_tokenizer

    (bert_dir / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    config = QFormerConfig(num_query_tokens=4, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                           dropout=0.0, attention_dropout=0.0, text_side=True, bert_init=str(bert_dir),
                           max_text_len=16, embed_dim=8, max_position_embeddings=32)
    torch.manual_seed(0)
    return TinyModel(QFormerWithTextSide(config, WIDTH, load_tokenizer(bert_dir))).eval()


def test_flickr30k_test_file_with_an_unreadable_image(tmp_path):
    tree = write_flickr30k_tree(tmp_path / "flickr30k", train=0, val=0, test=3, size=(24, 20),
                                broken={1: "truncated"})
    (tmp_path / "bert").mkdir()
    data = build_retrieval(Flickr30kRetrievalConfig(root=str(tree.root)), split="test", image_spec=clip_spec(SIDE))
    context = ThreadRankContext(device=torch.device("cpu"), policy=None, collectives=None, batch_size=2,
                                num_workers=0, eval=SimpleNamespace(max_images=None))
    output = evaluate_retrieval(tiny_model(tmp_path / "bert"), data, context, RetrievalSettings())
    # The truncated photo (index 1) and its five captions (texts 5-9) are counted and left out.
    assert output.bad_images == 1 and output.name == "flickr30k_retrieval[test]"
    good_ids = [int(tree.images["test"][i].stem) for i in (0, 2)]
    kept = [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]
    images, texts = output.results[:2], output.results[2:]
    assert [r["image_id"] for r in images] == good_ids
    assert [r["text_id"] for r in texts] == kept and [r["text"] for r in texts] == [data.texts[j] for j in kept]
    assert all(sorted(r["image_ids"]) == sorted(good_ids) for r in texts)
    assert all(sorted(r["text_ids"]) == kept for r in images)
    # Two candidate images: every text's own image is within the top 5 (and 10).
    assert output.metrics["img_r5"] == output.metrics["img_r10"] == 100.0
    assert 0 <= output.metrics["r_mean"] <= 100
