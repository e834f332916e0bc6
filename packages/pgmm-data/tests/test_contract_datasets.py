"""pgmm-data's datasets checked through the contract plugin authors use."""

from __future__ import annotations

import pytest

from pgmm_core.testing.contracts import DatasetContract


class TestSyntheticShapes(DatasetContract):
    component = "synthetic_shapes"
    distribution = "pgmm-data"
    config = {"num_samples": 12, "seed": 3}

    @pytest.mark.xfail(strict=True, raises=AttributeError,
                       reason="known defect: SyntheticShapes stores a lambda (self._caption), so it cannot be "
                              "pickled and DataLoader workers started by spawn/forkserver cannot receive it")
    def test_picklable(self, component_instance):
        super().test_picklable(component_instance)
