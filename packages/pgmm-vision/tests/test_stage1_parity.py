"""The stage-1 losses (ITC, ITM, ITG) and their gradients against LAVIS' own ``Blip2Qformer.forward``.

Goldens: tests/data/stage1_* (see the README there). Tolerances: 1e-5 for the small case (LAVIS
itself differs from an fp64 rerun by up to 1.2e-6), 1e-4 at full size (2.9e-6).
"""

from __future__ import annotations

import os

import pytest
import torch

from pgmm_vision.stage1 import parity

LOSS_KEYS = {f"{variant}.{kind}_{loss}" for variant in ("imgid", "noid") for kind in ("loss", "grad")
             for loss in ("itc", "itm", "itg")}


def test_small_case_matches_lavis_through_the_objective():
    result = parity.run_stage1_small()
    assert set(result.errors) == LOSS_KEYS | {"input_ids", "attention_mask", "truncated_count",
                                              "imgid.itm_weights", "noid.itm_weights"}
    # LAVIS' tokenization: the third caption (23 tokens) cut to 16, [SEP] kept, counted
    assert result.errors["input_ids"] == result.errors["attention_mask"] == result.errors["truncated_count"] == 0
    for name, error in result.errors.items():
        assert error <= 1e-5, (name, error)
    for variant in ("imgid", "noid"):  # ITM equal given LAVIS' negative indices
        assert result.errors[f"{variant}.loss_itm"] <= 1e-6 and result.errors[f"{variant}.loss_itg"] <= 1e-6


def test_image_ids_change_itc_and_itm_as_in_lavis(small_io):
    """The goldens differ between the variants where LAVIS' image-id branch differs (so the test
    above would notice a pgmm that ignored image ids), and the excluded pairs are exactly zero."""
    from safetensors.torch import load_file

    io = load_file(str(parity._data_dir(None) / "stage1_small_io.safetensors"))
    assert io["imgid.loss_itc"] != io["noid.loss_itc"]
    # pairs 1 and 2 show image 11: neither is the other's negative with image ids, both may be without
    assert io["imgid.weights_t2i"][1, 2] == 0 and io["imgid.weights_t2i"][2, 1] == 0
    assert io["noid.weights_t2i"][1, 2] > 0 and torch.all(io["noid.weights_t2i"].diagonal() == 0)


@pytest.mark.slow
def test_full_size_matches_lavis():
    """EVA-ViT-g width (257 x 1408 features), 12-layer bert-base Q-Former, 32 queries, 4 pairs."""
    result = parity.run_stage1_full()
    assert result.passed, result.summary()
    assert result.errors["vision_out_first8"] == 0.0
    for loss in ("itc", "itm", "itg"):
        assert result.errors[f"loss_{loss}"] <= 1e-5 and result.errors[f"grad_{loss}"] <= 1e-4


def _uneven_losses(rows, collectives=None):
    """ITC + ITM of the small case's pairs ``rows`` (image ids used, LAVIS' negatives of those rows),
    times the number of pairs, and its gradients to the pairs' features and to the query tokens."""
    from safetensors.torch import load_file

    from pgmm_vision.stage1.configs import QFormerPretrainConfig
    from pgmm_vision.stage1.losses import Negatives
    from pgmm_vision.stage1.objective import QFormerPretrainObjective, collate_pairs

    model, meta = parity.small_model()
    io = load_file(str(parity._data_dir(None) / "stage1_small_io.safetensors"))
    features = io["vision_out"][rows].clone().requires_grad_(True)
    batch = collate_pairs([{"image": features[i], "image_id": meta["image_ids"][row], "caption": meta["captions"][row]}
                     for i, row in enumerate(rows)])
    batch.images = features
    objective = QFormerPretrainObjective(QFormerPretrainConfig(itg=0.0))
    objective.collectives = collectives
    objective.sampler = parity.forced(Negatives(io["imgid.neg_image_idx"][rows], io["imgid.neg_text_idx"][rows]))
    total = objective.loss(model, batch).loss * len(rows)
    grad_features, grad_queries = torch.autograd.grad(total, [features, model.connector.query_tokens])
    return {"total": total.item(), "features": grad_features, "queries": grad_queries}


def _on_each_rank(store_file: str):
    """Both two-rank scenarios in one launch, over a strict fake HCCL (float64 or AVG would fail):
    LAVIS' two-rank goldens (2 + 2 pairs), then 3 + 1 pairs (as after an unreadable image)."""
    import torch
    import torch.distributed as dist

    from pgmm_ascend.backend import HCCL_RULES
    from pgmm_ascend.testing import fake_hccl
    from pgmm_core.devices.collectives import Collectives
    from pgmm_vision.stage1.parity import run_stage1_rank

    torch.set_num_threads(1)
    fake_hccl.register_fake_hccl()
    rank = int(os.environ["RANK"])
    dist.init_process_group("hccl", init_method=f"file://{store_file}", rank=rank,
                            world_size=int(os.environ["WORLD_SIZE"]))
    collectives = Collectives(HCCL_RULES, device=torch.device("cpu"))
    try:
        errors = run_stage1_rank(collectives)
        calls = dict(fake_hccl.calls)
        uneven = _uneven_losses([[0, 1, 2], [3]][rank], collectives)
        return {"errors": errors, "calls": calls, "uneven": uneven}
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    from pgmm_ascend.testing.ranks import run_ranks

    store = tmp_path_factory.mktemp("stage1-ranks") / "store"
    return run_ranks(_on_each_rank, 2, args=(str(store),), timeout=240)


def test_two_ranks_match_lavis_on_two_ranks(two_ranks):
    """Each rank's losses and gradients equal LAVIS' on that rank: ITC against all 4 pairs (features
    gathered without gradient), ITM negatives from the other rank (image embeddings gathered with
    gradient, its backward all-reduced), the same-image pair across ranks excluded."""
    for rank, result in enumerate(two_ranks):
        errors = result["errors"]
        assert set(errors) == {f"rank{rank}.{kind}_{loss}" for kind in ("loss", "grad")
                               for loss in ("itc", "itm", "itg")}
        for name, error in errors.items():
            assert error <= 1e-5, (name, error)
        assert result["calls"].get("allreduce", 0) >= 3  # ITM's gather backward, once per loss pass


def test_ranks_with_different_numbers_of_pairs_give_the_single_process_result(two_ranks):
    """ITC and ITM rows do not depend on how the global batch is split: 3 + 1 pairs on two ranks sum
    to the single-process losses, the features' gradients are its rows, the query tokens' sum to its."""
    single = _uneven_losses([0, 1, 2, 3])
    ranks = [result["uneven"] for result in two_ranks]
    assert sum(r["total"] for r in ranks) == pytest.approx(single["total"], rel=1e-6, abs=1e-6)
    features = torch.cat([r["features"] for r in ranks])
    assert (features - single["features"]).abs().max() <= 1e-6
    assert (ranks[0]["queries"] + ranks[1]["queries"] - single["queries"]).abs().max() <= 1e-6
