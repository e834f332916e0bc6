"""Ranks and recall of image-text retrieval, as LAVIS' ``RetrievalTask._report_metrics``.

A query's rank is the 0-based position of its first correct candidate once the candidates are sorted
by score, best first: for image->text, any of the image's captions; for text->image, the text's
image. R@K is the percentage of queries ranked below K. Candidates are sorted stably, so equal scores
keep the candidates' order (LAVIS sorts with ``np.argsort``, whose order among ties is arbitrary).
"""

from __future__ import annotations

import math

import torch

RECALL_AT = (1, 5, 10)


def rank_candidates(candidates: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``candidates`` (n x k ids) reordered by ``scores`` (n x k), best first."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return candidates.gather(1, order)


def rank_all(scores: torch.Tensor) -> torch.Tensor:
    """Every column id of a full score matrix (queries x candidates), best first per row."""
    columns = torch.arange(scores.shape[1]).expand(scores.shape[0], -1)
    return rank_candidates(columns, scores)


def first_hit(hits: torch.Tensor) -> torch.Tensor:
    """Per row of a boolean matrix (ranked candidates are correct or not): the position of the first
    correct one as a float, ``inf`` when none of the ranked candidates is correct."""
    if hits.shape[1] == 0:
        return torch.full((hits.shape[0],), math.inf)
    first = hits.float().argmax(dim=1).float()  # argmax gives the first of equal maxima
    return torch.where(hits.any(dim=1), first, torch.full_like(first, math.inf))


def text_ranks(ranked_texts: torch.Tensor, images: torch.Tensor, txt2img: torch.Tensor) -> torch.Tensor:
    """Image->text ranks: row ``r`` ranks texts for image ``images[r]``; correct texts belong to it."""
    return first_hit(txt2img[ranked_texts] == images[:, None])


def image_ranks(ranked_images: torch.Tensor, texts: torch.Tensor, txt2img: torch.Tensor) -> torch.Tensor:
    """Text->image ranks: row ``r`` ranks images for text ``texts[r]``; the correct one is its image."""
    return first_hit(ranked_images == txt2img[texts][:, None])


def recall_at(ranks: torch.Tensor, k: int) -> float:
    """Percentage of queries whose first correct candidate is among the top ``k``."""
    return 100.0 * float((ranks < k).sum()) / max(int(ranks.numel()), 1)


def retrieval_metrics(text_ranks_of_images: torch.Tensor, image_ranks_of_texts: torch.Tensor) -> dict[str, float]:
    """LAVIS' metrics: ``txt_r1/5/10`` (image->text), ``img_r1/5/10`` (text->image), their means
    ``txt_r_mean``/``img_r_mean``, ``r_mean`` (mean of both), and ``agg_metrics`` (LAVIS' value for
    picking the best checkpoint: ``txt_r_mean``), all in percent."""
    metrics: dict[str, float] = {}
    for prefix, ranks in (("txt", text_ranks_of_images), ("img", image_ranks_of_texts)):
        values = [recall_at(ranks, k) for k in RECALL_AT]
        metrics.update({f"{prefix}_r{k}": v for k, v in zip(RECALL_AT, values)})
        metrics[f"{prefix}_r_mean"] = sum(values) / len(values)
    metrics["r_mean"] = (metrics["txt_r_mean"] + metrics["img_r_mean"]) / 2
    metrics["agg_metrics"] = metrics["txt_r_mean"]
    return metrics
