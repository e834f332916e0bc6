"""``webdataset_captions`` through the contract of datasets whose train split streams shards."""

from __future__ import annotations

import pytest

from pgmm_core.testing.contracts.dataset import ShardStreamDatasetContract
from pgmm_data.testing_shards import write_caption_shards


class TestWebdatasetCaptions(ShardStreamDatasetContract):
    component = "webdataset_captions"
    distribution = "pgmm-data"

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls, tmp_path_factory):
        shards = write_caption_shards(tmp_path_factory.mktemp("shards"), shards=2, per_shard=3, size=(48, 40))
        return {"shards": shards.pattern}
