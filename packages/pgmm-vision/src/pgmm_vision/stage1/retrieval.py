"""Zero-shot image-text retrieval: stage 1's evaluation (LAVIS ``compute_sim_matrix`` + ``_report_metrics``).

For a retrieval test set (``coco_retrieval``, ``flickr30k_retrieval``: images, ``texts``, ``txt2img``):

1. every image's query features and every text's feature (the connector's ``image_side`` and
   ``text_feature``), batched, each rank its share, text features gathered;
2. the ITC similarity of every pair (max over the queries), computed in blocks, keeping for each
   image its ``k_test`` best texts and for each text its ``k_test`` best images
   (:mod:`.retrieval_shards`);
3. those candidates re-scored as LAVIS does: score = ITM "match" logit (``itm_logits(...)[:, 1]``,
   averaged over the query positions) + ITC similarity; candidates outside the top ``k_test`` keep
   LAVIS' -100, i.e. they rank after every re-scored one;
4. ranks and LAVIS' recall metrics (:mod:`.retrieval_metrics`), and the best ``listed`` candidates of
   every query as results.

Sharding differs from LAVIS in one respect, to bound memory: LAVIS keeps every image's tower
output (5,000 x 257 x 1408 floats, 7 GB, on every rank) so that any rank can re-score any pair. Here
the rank that owns an image (the one that encoded it) re-scores every pair of that image, for both
directions, with the image's tower output recomputed in a second pass over its share of images
(one more tower forward per image, a few percent of the ITM work), so no rank holds more than one
batch of tower outputs; a pair in both directions' candidates is scored once. Text->image scores
are then gathered (text, candidate, score) and every rank ranks all queries the same way.

An unreadable image is counted (``EvalOutput.bad_images``) and left out with its captions, as
queries and as candidates.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from pgmm_core.objectives.base import EvalContext, EvalOutput
from pgmm_vision.stage1.retrieval_metrics import image_ranks, rank_candidates, retrieval_metrics, text_ranks
from pgmm_vision.stage1.retrieval_settings import RetrievalSettings
from pgmm_vision.stage1.retrieval_shards import (
    Candidates,
    collate_images,
    encode_texts,
    itc_candidates,
    merge_candidates,
    vision_embeds,
)

logger = logging.getLogger(__name__)


def evaluate_retrieval(model: Any, dataset: Any, context: EvalContext,
                       config: RetrievalSettings | None = None) -> EvalOutput:
    """Image->text and text->image retrieval of ``model`` on ``dataset``; the same result on every rank.

    ``model.connector`` offers ``tokenize``, ``text_feature``, ``image_side`` and ``itm_logits``
    (the Q-Former with its stage-1 text side); ``dataset`` is a retrieval test set (items
    ``{"image", "index", "image_id"}``, ``texts``, ``txt2img``). ``metrics``: LAVIS' ``txt_r1/5/10``,
    ``txt_r_mean``, ``img_r1/5/10``, ``img_r_mean``, ``r_mean``, ``agg_metrics`` (percent).
    ``results``: one record per image query then per text query with the ids of its best candidates.
    """
    evaluation = _Retrieval(model, dataset, context, config or RetrievalSettings())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return evaluation.run()
    finally:
        model.train(was_training)


class _Retrieval:
    """One evaluation: the state shared by its steps (see the module docstring for the steps)."""

    def __init__(self, model: Any, dataset: Any, context: EvalContext, settings: RetrievalSettings) -> None:
        self.model = model
        self.connector = model.connector
        self.dataset = dataset
        self.context = context
        self.settings = settings
        self.autocast = context.policy.autocast if context.policy is not None else _no_autocast
        limit = getattr(context.eval, "max_images", None)
        self.num_images = len(dataset) if limit is None else min(len(dataset), limit)
        self.name = getattr(dataset, "name", "dataset")
        self.image_ids: dict[int, int] = {}  # this rank's readable images: dataset index -> image id
        self.bad_reasons: list[tuple[int, str]] = []  # this rank's unreadable images: (index, reason)

    def run(self) -> EvalOutput:
        own_indices, own_features = self.encode_own_images()
        good, image_ids, bad = self.gather_images(own_indices)
        txt2img_all = torch.as_tensor(np.asarray(self.dataset.txt2img), dtype=torch.long)
        readable = torch.zeros(self.num_images + 1, dtype=torch.bool)
        readable[good] = True
        kept = txt2img_all.clamp(max=self.num_images)  # texts of images past max_images are out
        text_index = torch.nonzero(readable[kept]).flatten()  # dataset text ids evaluated
        if len(good) == 0 or len(text_index) == 0:
            reason = "no readable image" if len(good) == 0 else "no text"
            return EvalOutput(self.name, [], {"unavailable": {"r_mean": reason}}, bad)
        texts = [self.dataset.texts[int(j)] for j in text_index]
        txt2img = txt2img_all[text_index]
        table = encode_texts(self.connector, texts, self.context, self.settings.text_batch_size, self.autocast)
        if table.truncated:
            logger.info("%s: %d of %d captions were longer than the text limit and were cut (as LAVIS does)",
                        self.name, table.truncated, len(texts))
        k_texts, k_images = min(self.settings.k_test, len(texts)), min(self.settings.k_test, len(good))
        for_images, local_for_texts = itc_candidates(own_features, own_indices, table.features, k_texts, k_images,
                                                     self.settings.block_elements)
        del own_features
        for_texts = merge_candidates(self.context.gather(local_for_texts), k_images)
        text_scores, image_scores = self.rescore(own_indices, for_images, for_texts, table)
        listed = self.settings.listed
        ranked_texts = rank_candidates(for_images.ids, text_scores)
        image_queries = self.context.gather((own_indices.tolist(), text_ranks(ranked_texts, own_indices, txt2img),
                                             text_index[ranked_texts[:, :listed]].tolist()))
        ranked_images = rank_candidates(for_texts.ids, image_scores)
        ranks_of_texts = image_ranks(ranked_images, torch.arange(len(texts)), txt2img)
        ranks_of_images = torch.cat([part[1] for part in image_queries])
        metrics = retrieval_metrics(ranks_of_images, ranks_of_texts)
        results = self.results(image_queries, image_ids, text_index, texts, ranked_images[:, :listed], ranks_of_texts)
        logger.debug("retrieval on %s: %d images, %d texts, %d unreadable image(s): %s", self.name, len(good),
                     len(texts), bad, metrics)
        return EvalOutput(self.name, results, metrics, bad)

    # --- images -----------------------------------------------------------------------------------

    def batches(self) -> Iterable[Any]:
        return self.context.shard_loader(self.dataset, collate_images, max_items=self.num_images)

    def encode_own_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's readable images: dataset indices and query features (n x Q x D, float32)."""
        indices: list[int] = []
        features = []
        for batch in self.batches():
            self.bad_reasons += list(zip(batch.bad_indices, batch.bad))
            if len(batch) == 0:
                continue
            with self.autocast():
                embeds = vision_embeds(self.model, batch.images.to(self.context.device))
                _, feats = self.connector.image_side(embeds)
            features.append(feats.float())
            indices += batch.indices
            self.image_ids.update(zip(batch.indices, batch.image_ids))
        if not features:
            return torch.empty(0, dtype=torch.long), torch.empty(0, 1, 1, device=self.context.device)
        order = torch.as_tensor(indices, dtype=torch.long).argsort()  # (the shard comes in order already)
        return torch.as_tensor(indices, dtype=torch.long)[order], torch.cat(features)[order.to(self.context.device)]

    def gather_images(self, own_indices: torch.Tensor) -> tuple[torch.Tensor, dict[int, int], int]:
        """All ranks' readable image indices (sorted), their ids, and the number of unreadable ones."""
        parts = self.context.gather((own_indices.tolist(), self.image_ids, self.bad_reasons))
        good = sorted(i for part in parts for i in part[0])
        image_ids = {index: image_id for part in parts for index, image_id in part[1].items()}
        bad = [reason for part in parts for reason in part[2]]
        if bad:
            logger.warning("%s: %d unreadable image(s) left out with their captions, e.g. %s", self.name, len(bad),
                           bad[0][1])
        return torch.as_tensor(good, dtype=torch.long), image_ids, len(bad)

    # --- ITM re-scoring ---------------------------------------------------------------------------

    def rescore(self, own_indices: torch.Tensor, for_images: Candidates, for_texts: Candidates,
                table: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """ITM + ITC scores of this rank's image queries' candidates (n x k) and of every text query's
        candidates (T x k, gathered: each pair is scored by the rank that owns its image)."""
        num_texts = len(table.input_ids)
        row_of = torch.full((self.num_images + 1,), -1, dtype=torch.long)
        row_of[own_indices] = torch.arange(len(own_indices))
        count, k = for_images.ids.shape
        owned = row_of[for_texts.ids] >= 0  # text-query candidates whose image is ours
        text_of_entry = torch.arange(num_texts)[:, None].expand_as(for_texts.ids)
        rows = torch.cat([torch.arange(count).repeat_interleave(k), row_of[for_texts.ids[owned]]])
        texts = torch.cat([for_images.ids.flatten(), text_of_entry[owned]])
        sims = torch.cat([for_images.sims.flatten(), for_texts.sims[owned]])
        keys, inverse = torch.unique(rows * num_texts + texts, return_inverse=True)  # sorted by row
        pair_sims = torch.zeros(len(keys)).scatter_(0, inverse, sims)
        pair_scores = self.itm_scores(keys // num_texts, keys % num_texts, pair_sims, own_indices, table)
        scores = pair_scores[inverse]
        text_scores = scores[:count * k].view(count, k)
        positions = torch.nonzero(owned.flatten()).flatten()
        parts = self.context.gather((positions, scores[count * k:]))
        image_scores = torch.full((for_texts.ids.numel(),), -math.inf)
        for part_positions, part_scores in parts:
            image_scores[part_positions] = part_scores
        return text_scores, image_scores.view_as(for_texts.sims)

    def itm_scores(self, pair_rows: torch.Tensor, pair_texts: torch.Tensor, pair_sims: torch.Tensor,
                   own_indices: torch.Tensor, table: Any) -> torch.Tensor:
        """Second pass over this rank's images: each batch's tower output scores that batch's pairs
        (``pair_rows`` sorted); a pair whose image cannot be read this time keeps ``-inf``."""
        scores = torch.full((len(pair_rows),), -math.inf)
        if len(pair_rows) == 0:
            return scores
        device = self.context.device
        step = self.settings.itm_batch_size
        for batch in self.batches():
            indices = torch.as_tensor(batch.indices, dtype=torch.long)
            rows = torch.searchsorted(own_indices, indices).clamp(max=len(own_indices) - 1)
            valid = own_indices[rows] == indices  # read in the first pass too
            if not bool(valid.any()):
                continue
            position = torch.full((len(own_indices),), -1, dtype=torch.long)
            position[rows[valid]] = torch.nonzero(valid).flatten()
            low = int(torch.searchsorted(pair_rows, rows[valid].min()))
            high = int(torch.searchsorted(pair_rows, rows[valid].max(), right=True))
            with self.autocast():
                embeds = vision_embeds(self.model, batch.images.to(device))
            for start in range(low, high, step):
                chunk = torch.arange(start, min(start + step, high))
                chunk = chunk[position[pair_rows[chunk]] >= 0]
                if len(chunk) == 0:
                    continue
                image = embeds[position[pair_rows[chunk]].to(device)]
                text = pair_texts[chunk]
                with self.autocast():
                    logits = self.connector.itm_logits(image, table.input_ids[text].to(device),
                                                       table.attention_mask[text].to(device))
                scores[chunk] = logits[:, 1].float().cpu() + pair_sims[chunk]
        return scores

    # --- results ----------------------------------------------------------------------------------

    def results(self, image_queries: list[Any], image_ids: dict[int, int], text_index: torch.Tensor,
                texts: list[str], listed_images: torch.Tensor, ranks_of_texts: torch.Tensor) -> list[dict[str, Any]]:
        """JSON-native records: per image (dataset order) its best texts' ids (positions in the
        dataset's ``texts``), per text its best images' ids; ``rank``: the first correct candidate's
        0-based position, null when outside the re-scored ones."""
        by_index = {}
        for indices, ranks, listed in image_queries:
            for index, rank, best in zip(indices, ranks.tolist(), listed):
                by_index[index] = {"image_id": image_ids[index], "rank": _rank(rank), "text_ids": best}
        records = [by_index[index] for index in sorted(by_index)]
        for position, (dataset_text, text) in enumerate(zip(text_index.tolist(), texts)):
            records.append({"text_id": dataset_text, "text": text, "rank": _rank(float(ranks_of_texts[position])),
                            "image_ids": [image_ids[int(i)] for i in listed_images[position]]})
        return records


def _rank(value: float) -> int | None:
    return None if math.isinf(value) else int(value)


def _no_autocast() -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()
