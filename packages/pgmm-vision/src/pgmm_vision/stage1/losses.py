"""The three stage-1 losses, computed as LAVIS' ``Blip2Qformer.forward`` (commit 506965b) computes them.

* **ITC** (image-text contrastive): an image's similarity to a caption is the *maximum* over its
  query tokens of ``image_feat · text_feat``, divided by the learnable ``temp``; each rank's images
  and captions are contrasted with the whole global batch (:class:`~.gather.GlobalBatch`, gathered
  features constant). Targets: the pair itself with label smoothing 0.1 — or, when image ids are
  used (LAVIS: samples carrying ``image_id``), every pair of the same image, ``0.9 * uniform over
  them + 0.1 / N``. Loss: the mean of image→text and text→image cross-entropies.
* **ITM** (image-text matching): for each caption one negative image, for each image one negative
  caption, drawn from ``softmax`` of the ITC similarities with same-image pairs excluded (set to
  -10000 before the softmax); the 2-way head classifies ``B`` positives and ``2B`` negatives (pos,
  neg image, neg text); the negative images keep their gradient back to the rank that owns them.
* **ITG** (image-grounded text generation): the connector's ``itg_loss`` (``[DEC]`` as BOS, causal
  text that sees all queries, label smoothing 0.1) over the batch's one query pass, whose outputs ITC
  uses too (LAVIS: the query pass's ``past_key_values``; the queries are not run again).

The functions take tensors (token ids, not strings), so parity tests can feed LAVIS' own ids and
its negative indices (:class:`Negatives`) and compare every number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pgmm_vision.stage1.gather import GlobalBatch
from pgmm_vision.stage1.text_side import QueryPass

ITC_LABEL_SMOOTHING = 0.1
EXCLUDED = -10000.0  # LAVIS' fill value for same-image pairs before the ITM softmax


@dataclass
class Negatives:
    """ITM negatives as indices into the global batch: ``image[b]`` for this rank's caption ``b``,
    ``text[b]`` for this rank's image ``b``."""

    image: torch.Tensor
    text: torch.Tensor


@dataclass
class Stage1Losses:
    """One micro-batch's unweighted losses and what ITM drew (the weights are its distributions)."""

    itc: torch.Tensor
    itm: torch.Tensor
    itg: torch.Tensor
    negatives: Negatives
    weights_t2i: torch.Tensor
    weights_i2t: torch.Tensor


NegativeSampler = Callable[[torch.Tensor, torch.Tensor], Negatives]


def draw_negatives(weights_t2i: torch.Tensor, weights_i2t: torch.Tensor,
                   generator: torch.Generator | None = None) -> Negatives:
    """One draw per row of each distribution (LAVIS: ``torch.multinomial(weights[b], 1)`` per row)."""
    image = torch.multinomial(weights_t2i.float(), 1, generator=generator).squeeze(1)
    text = torch.multinomial(weights_i2t.float(), 1, generator=generator).squeeze(1)
    return Negatives(image=image, text=text)


def same_image_mask(batch: GlobalBatch, local_keys: torch.Tensor | None,
                    global_keys: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """B×N: which pairs of the global batch show this rank's pair ``b``'s image (the pair itself
    always does; with image keys, every pair with the same key)."""
    if local_keys is not None and global_keys is not None:
        return local_keys.view(-1, 1) == global_keys.view(1, -1)
    mask = torch.zeros(batch.local_size, batch.total, dtype=torch.bool, device=device)
    mask[torch.arange(batch.local_size), batch.own_columns()] = True
    return mask


def itc_similarities(image_feats: torch.Tensor, text_feat: torch.Tensor, image_feats_all: torch.Tensor,
                     text_feat_all: torch.Tensor, temp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sim_i2t, sim_t2i)``, B×N each: max over query tokens, over ``temp`` (LAVIS' matmuls)."""
    sim_q2t = torch.matmul(image_feats.unsqueeze(1), text_feat_all.unsqueeze(-1)).squeeze(-1)  # B×N×Q
    sim_i2t = sim_q2t.max(-1).values / temp
    sim_t2q = torch.matmul(text_feat.unsqueeze(1).unsqueeze(1), image_feats_all.permute(0, 2, 1)).squeeze(2)
    sim_t2i = sim_t2q.max(-1).values / temp
    return sim_i2t, sim_t2i


def itc_loss(sim_i2t: torch.Tensor, sim_t2i: torch.Tensor, batch: GlobalBatch,
             same_image: torch.Tensor | None) -> torch.Tensor:
    """LAVIS' two branches: soft targets over same-image pairs when image ids are used, else
    cross-entropy to the pair itself, both with label smoothing 0.1."""
    if same_image is not None:
        positives = same_image.to(sim_i2t.dtype)
        targets = positives / positives.sum(1, keepdim=True)
        targets = (1 - ITC_LABEL_SMOOTHING) * targets + ITC_LABEL_SMOOTHING * torch.ones_like(targets) / targets.size(1)
        loss_t2i = -torch.sum(F.log_softmax(sim_t2i, dim=1) * targets, dim=1).mean()
        loss_i2t = -torch.sum(F.log_softmax(sim_i2t, dim=1) * targets, dim=1).mean()
        return (loss_t2i + loss_i2t) / 2
    targets = batch.own_columns().to(sim_i2t.device)
    return (F.cross_entropy(sim_i2t, targets, label_smoothing=ITC_LABEL_SMOOTHING)
            + F.cross_entropy(sim_t2i, targets, label_smoothing=ITC_LABEL_SMOOTHING)) / 2


def itm_weights(sim_i2t: torch.Tensor, sim_t2i: torch.Tensor,
                excluded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weights_t2i, weights_i2t)``: the hard-negative distributions, same-image pairs at zero."""
    with torch.no_grad():
        weights_t2i = F.softmax(sim_t2i.detach().masked_fill(excluded, EXCLUDED), dim=1)
        weights_i2t = F.softmax(sim_i2t.detach().masked_fill(excluded, EXCLUDED), dim=1)
    return weights_t2i, weights_i2t


def itm_loss(connector, vision_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             batch: GlobalBatch, negatives: Negatives) -> torch.Tensor:
    """Cross-entropy of the ITM head on ``[positives; (negative image, caption); (image, negative caption)]``."""
    ids_world = batch.constant(input_ids)
    mask_world = batch.constant(attention_mask)
    embeds_world = batch.with_grad(vision_embeds)
    image_index = negatives.image.to(vision_embeds.device)
    text_index = negatives.text.to(input_ids.device)
    ids_all = torch.cat([input_ids, input_ids, ids_world[text_index]], dim=0)
    mask_all = torch.cat([attention_mask, attention_mask, mask_world[text_index]], dim=0)
    embeds_all = torch.cat([vision_embeds, embeds_world[image_index], vision_embeds], dim=0)
    logits = connector.itm_logits(embeds_all, ids_all, mask_all)
    size = input_ids.shape[0]
    labels = torch.cat([torch.ones(size, dtype=torch.long), torch.zeros(2 * size, dtype=torch.long)]).to(logits.device)
    return F.cross_entropy(logits.float(), labels)


def stage1_losses(connector, vision_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  batch: GlobalBatch, image_keys: tuple[torch.Tensor, torch.Tensor] | None = None, *,
                  query: QueryPass | None = None, negatives: Negatives | None = None,
                  sampler: NegativeSampler = draw_negatives) -> Stage1Losses:
    """ITC, ITM and ITG of one micro-batch (``vision_embeds``: ``ln_vision`` of the tower's output).

    ``image_keys``: ``(local, global)`` image keys (:meth:`GlobalBatch.image_keys`) to treat pairs of
    one image as such; ``query``: the connector's query pass on ``vision_embeds`` when the caller has
    it already, else it is run here — once: ITC's image features and ITG's keys and values both come
    from it, as from LAVIS' query pass and its ``past_key_values``; ``negatives``: ITM's indices given
    instead of drawn (parity tests)."""
    if query is None:
        query = connector.query_pass(vision_embeds)
    image_feats = query.image_feats
    text_feat = connector.text_feature(input_ids, attention_mask)
    image_feats_all = batch.constant(image_feats)
    text_feat_all = batch.constant(text_feat)
    sim_i2t, sim_t2i = itc_similarities(image_feats, text_feat, image_feats_all, text_feat_all, connector.temp)
    local_keys, global_keys = image_keys if image_keys is not None else (None, None)
    same_image = same_image_mask(batch, local_keys, global_keys, sim_i2t.device)
    loss_itc = itc_loss(sim_i2t, sim_t2i, batch, same_image if image_keys is not None else None)
    weights_t2i, weights_i2t = itm_weights(sim_i2t, sim_t2i, same_image)
    if negatives is None:
        negatives = sampler(weights_t2i, weights_i2t)
    loss_itm = itm_loss(connector, vision_embeds, input_ids, attention_mask, batch, negatives)
    loss_itg = connector.itg_loss(query, input_ids, attention_mask)
    return Stage1Losses(itc=loss_itc, itm=loss_itm, itg=loss_itg, negatives=negatives,
                        weights_t2i=weights_t2i, weights_i2t=weights_i2t)
