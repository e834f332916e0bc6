"""Zero-shot retrieval: LAVIS' ranks and recalls on fixed matrices worked out by hand, the ITM
re-scoring of the top k, and sharding over ranks giving the result of one rank."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pgmm_vision.stage1.retrieval import evaluate_retrieval
from pgmm_vision.stage1.retrieval_metrics import image_ranks, rank_all, retrieval_metrics, text_ranks
from pgmm_vision.stage1.retrieval_settings import RetrievalSettings
from pgmm_vision.stage1.retrieval_testing import (
    TableDataset,
    ThreadGroup,
    ThreadRankContext,
    table_model,
)

# 3 images x 15 texts, 5 captions per image (texts 0-4: image 0, 5-9: image 1, 10-14: image 2).
SIMILARITY = torch.tensor([
    [0.50, 0.40, 0.95, 0.30, 0.20, 0.10, 0.11, 0.12, 0.13, 0.14, 0.60, 0.01, 0.02, 0.03, 0.04],
    [0.90, 0.85, 0.05, 0.06, 0.07, 0.70, 0.65, 0.66, 0.67, 0.68, 0.80, 0.08, 0.09, 0.15, 0.16],
    [0.89, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.01, 0.02, 0.03, 0.04, 0.05],
])
FIVE_EACH = np.repeat(np.arange(3), 5)
# By hand. Image 0: its text 2 (0.95) is first -> rank 0. Image 1: texts 0, 1, 10 (0.90, 0.85, 0.80)
# beat its best own (text 5, 0.70) -> rank 3. Image 2: all ten other texts beat its own -> rank 10.
TEXT_RANKS = [0, 3, 10]
# Per text, its image's place among the three in the column: only text 2 has its image first.
IMAGE_RANKS = [2, 2, 0, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]
EXPECTED = {
    "txt_r1": 100 / 3, "txt_r5": 200 / 3, "txt_r10": 200 / 3, "txt_r_mean": 500 / 9,
    "img_r1": 100 / 15, "img_r5": 100.0, "img_r10": 100.0, "img_r_mean": (100 / 15 + 200) / 3,
}
EXPECTED["r_mean"] = (EXPECTED["txt_r_mean"] + EXPECTED["img_r_mean"]) / 2
EXPECTED["agg_metrics"] = EXPECTED["txt_r_mean"]


def context(max_images=None):
    return ThreadRankContext(device=torch.device("cpu"), policy=None, collectives=None, batch_size=2, num_workers=0,
                             eval=SimpleNamespace(max_images=max_images))


def dataset(txt2img, bad=()):
    return TableDataset(np.asarray(txt2img), image_ids=[391895 + 7 * i for i in range(int(max(txt2img)) + 1)],
                        bad=frozenset(bad))


def test_ranks_and_recalls_of_a_fixed_similarity_matrix():
    txt2img = torch.as_tensor(FIVE_EACH)
    assert text_ranks(rank_all(SIMILARITY), torch.arange(3), txt2img).tolist() == TEXT_RANKS
    assert image_ranks(rank_all(SIMILARITY.T), torch.arange(15), txt2img).tolist() == IMAGE_RANKS
    metrics = retrieval_metrics(torch.tensor(TEXT_RANKS, dtype=torch.float),
                                torch.tensor(IMAGE_RANKS, dtype=torch.float))
    assert metrics == pytest.approx(EXPECTED)


def test_evaluation_without_itm_preference_ranks_by_similarity():
    """k_test covering every candidate and ITM logits all equal: the ITC order, LAVIS' metrics."""
    model = table_model(SIMILARITY, torch.zeros(3, 15))
    output = evaluate_retrieval(model, dataset(FIVE_EACH), context(), RetrievalSettings(k_test=15))
    assert output.metrics == pytest.approx(EXPECTED)
    images, texts = output.results[:3], output.results[3:]
    assert [r["rank"] for r in images] == TEXT_RANKS and [r["rank"] for r in texts] == IMAGE_RANKS
    assert images[1] == {"image_id": 391902, "rank": 3, "text_ids": [0, 1, 10, 5, 9, 8, 7, 6, 14, 13]}
    assert texts[0] == {"text_id": 0, "text": "t0", "rank": 2, "image_ids": [391902, 391909, 391895]}
    assert output.bad_images == 0 and output.name == "table[test]"


# Re-scoring: 3 images x 6 texts (2 each), k_test = 2. Unused ITM entries are 5.0: using one would
# change the orders below.
RESCORE_SIMILARITY = torch.tensor([
    [0.90, 0.10, 0.80, 0.20, 0.30, 0.40],
    [0.50, 0.60, 0.70, 0.05, 0.15, 0.25],
    [0.35, 0.45, 0.55, 0.65, 0.75, 0.85],
])
ITM = torch.full((3, 6), 5.0)
for (image, text), logit in {(0, 0): 0.0, (0, 2): 0.5, (1, 2): -1.0, (1, 1): 0.0, (2, 5): 0.0, (2, 4): 0.2,
                             (1, 0): 0.6, (2, 1): 0.3, (2, 3): 0.0, (0, 3): 0.0, (0, 4): 1.0, (0, 5): 0.0}.items():
    ITM[image, text] = logit


def test_itm_rescores_the_top_k_candidates_of_each_query():
    model = table_model(RESCORE_SIMILARITY, ITM)
    output = evaluate_retrieval(model, dataset([0, 0, 1, 1, 2, 2]), context(), RetrievalSettings(k_test=2))
    images, texts = output.results[:3], output.results[3:]
    # Image 0: ITC picks texts 0 (0.9) and 2 (0.8); ITM + ITC: 0.9 and 1.3 -> [2, 0], its text 0 second.
    # Image 1: texts 2 (0.7 - 1.0) and 1 (0.6 + 0.0) -> [1, 2]. Image 2: texts 5 (0.85), 4 (0.75 + 0.2) -> [4, 5].
    assert [r["text_ids"] for r in images] == [[2, 0], [1, 2], [4, 5]]
    assert [r["rank"] for r in images] == [1, 1, 0]
    # Text 0: images 0 (0.9) and 1 (0.5 + 0.6) -> [1, 0]. Text 1: images 1 (0.6), 2 (0.45 + 0.3) -> [2, 1],
    # its image 0 not among them: a miss. Text 2: 0 (0.8 + 0.5), 1 (0.7 - 1.0) -> [0, 1]. Text 3: 2 (0.65),
    # 0 (0.2) -> [2, 0], a miss. Text 4: 2 (0.95), 0 (0.3 + 1.0) -> [0, 2]. Text 5: 2 (0.85), 0 (0.4) -> [2, 0].
    ids = {391895: 0, 391902: 1, 391909: 2}
    assert [[ids[i] for i in r["image_ids"]] for r in texts] == [[1, 0], [2, 1], [0, 1], [2, 0], [0, 2], [2, 0]]
    assert [r["rank"] for r in texts] == [1, None, 1, None, 1, 0]
    assert output.metrics["txt_r1"] == pytest.approx(100 / 3) and output.metrics["txt_r5"] == 100.0
    assert output.metrics["img_r1"] == pytest.approx(100 / 6) and output.metrics["img_r10"] == pytest.approx(400 / 6)
    # Each pair of both directions' candidates is scored once: 6 image-query pairs + 6 more text-query pairs.
    pairs = model.connector.itm_pairs
    assert len(pairs) == len(set(pairs)) == 12 and (1, 0) in pairs and (0, 3) in pairs


def _run_ranks(world_size, model_for, data, settings):
    group = ThreadGroup(world_size)
    outputs: list = [None] * world_size
    errors: list = []

    def rank(index):
        try:
            ctx = context()
            ctx.group, ctx.thread_rank = group, index
            outputs[index] = evaluate_retrieval(model_for(index), data, ctx, settings)
        except BaseException as exc:  # noqa: BLE001 - re-raised below in the test's thread
            errors.append(exc)
            group.barrier.abort()

    threads = [threading.Thread(target=rank, args=(i,)) for i in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return outputs


def test_two_ranks_give_the_result_of_one_with_an_unreadable_image():
    generator = torch.Generator().manual_seed(0)
    similarity = torch.rand(7, 35, generator=generator) * 0.9 + 0.05
    itm = torch.randn(7, 35, generator=generator)
    txt2img = np.repeat(np.arange(7), 5)
    data = dataset(txt2img, bad={3})
    settings = RetrievalSettings(k_test=4, itm_batch_size=3, block_elements=100)
    single = evaluate_retrieval(table_model(similarity, itm), data, context(), settings)
    models = [table_model(similarity, itm) for _ in range(2)]
    both = _run_ranks(2, lambda rank: models[rank], data, settings)
    for output in both:
        assert output.metrics == single.metrics and output.results == single.results
        assert output.bad_images == single.bad_images == 1
    # The unreadable image (id 391916) and its five captions (15-19) are neither queries nor candidates.
    assert len(single.results) == 6 + 30
    assert all(391916 not in r.get("image_ids", []) and r.get("image_id") != 391916 for r in single.results)
    assert all(not set(r.get("text_ids", [])) & set(range(15, 20)) for r in single.results)
    # Every image's pairs were scored by the rank that encoded it: ranks 0 and 1 own even and odd images.
    assert {i % 2 for i, _ in models[0].connector.itm_pairs} == {0}
    assert {i % 2 for i, _ in models[1].connector.itm_pairs} == {1}
    assert sorted(models[0].connector.itm_pairs + models[1].connector.itm_pairs) == sorted(
        table_model_pairs(similarity, itm, data, settings))
    assert single.metrics["r_mean"] > 0


def table_model_pairs(similarity, itm, data, settings):
    model = table_model(similarity, itm)
    evaluate_retrieval(model, data, context(), settings)
    return model.connector.itm_pairs


def test_blocks_of_the_similarity_computation_do_not_change_the_result():
    generator = torch.Generator().manual_seed(1)
    similarity = torch.rand(6, 30, generator=generator) * 0.9 + 0.05
    itm = torch.randn(6, 30, generator=generator)
    data = dataset(np.repeat(np.arange(6), 5))
    whole = evaluate_retrieval(table_model(similarity, itm), data, context(), RetrievalSettings(k_test=5))
    blocks = evaluate_retrieval(table_model(similarity, itm), data, context(),
                                RetrievalSettings(k_test=5, block_elements=1, text_batch_size=4))
    assert blocks.results == whole.results and blocks.metrics == whole.metrics


def test_max_images_evaluates_the_first_images_and_their_texts():
    model = table_model(SIMILARITY, torch.zeros(3, 15))
    output = evaluate_retrieval(model, dataset(FIVE_EACH), context(max_images=2), RetrievalSettings(k_test=15))
    assert [r.get("image_id") for r in output.results[:2]] == [391895, 391902]
    assert [r["text_id"] for r in output.results[2:]] == list(range(10))
    # Image 1 without image 2's texts: texts 0 and 1 still come first -> rank 2.
    assert [r["rank"] for r in output.results[:2]] == [0, 2]


def test_model_mode_is_restored():
    model = table_model(SIMILARITY, torch.zeros(3, 15))
    model.train()
    evaluate_retrieval(model, dataset(FIVE_EACH), context(), RetrievalSettings(k_test=3))
    assert model.training
