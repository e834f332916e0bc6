"""Settings of the zero-shot retrieval evaluation (pydantic only: importing this never imports torch).

The stage-1 objective's config holds them in its ``retrieval`` field; :func:`pgmm_vision.stage1.
retrieval.evaluate_retrieval` receives them.
"""

from __future__ import annotations

from pydantic import Field

from pgmm_core.config.sections import StrictModel


class RetrievalSettings(StrictModel):
    """How image-text retrieval is evaluated (LAVIS ``compute_sim_matrix`` and its defaults)."""

    k_test: int = Field(
        128, ge=1, description="Candidates re-scored by ITM per query (LAVIS k_test: 128 for COCO and Flickr30k); "
        "a correct candidate outside them counts as a miss.")
    text_batch_size: int = Field(256, gt=0, description="Texts per text-encoder forward (LAVIS text_bs).")
    itm_batch_size: int = Field(128, gt=0, description="Image-text pairs per ITM forward.")
    block_elements: int = Field(
        1 << 26, gt=0, description="Most image-query-text similarities held at once (images x queries x texts "
        "of one block of the ITC similarity computation); bounds its memory.")
    listed: int = Field(10, ge=1, description="Candidates listed per query in results.json.")
