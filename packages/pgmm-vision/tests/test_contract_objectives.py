"""pgmm-vision's objective checked through the contract plugin authors use."""

from __future__ import annotations

import pytest

from pgmm_core.config.loading import validate_config
from pgmm_core.testing.contracts import ObjectiveContract


class TestQFormerPretrain(ObjectiveContract):
    """Stage 1 on the tiny EVA and text-side Q-Former, trained and evaluated on a small COCO
    retrieval tree (its train split has captions and image ids, its val split is a retrieval set)."""

    component = "qformer_pretrain"
    distribution = "pgmm-vision"

    @pytest.fixture(autouse=True)
    def _stage1(self, stage1_config):
        self.make_config = stage1_config

    def tiny_run_config(self, host, component_config, tmp_path):
        data = self.make_config(tmp_path / "run")
        data["objective"] = component_config.model_dump(mode="json")
        return validate_config(data, host, source="contract")
