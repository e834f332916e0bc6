"""pgmm-core's own components (device backends, callbacks, the caption objective) checked through the contracts."""

from __future__ import annotations

import os

from pgmm_core.testing.contracts import CallbackContract, DeviceBackendContract, ObjectiveContract, StrategyContract


class TestCpuBackend(DeviceBackendContract):
    component = "cpu"
    distribution = "pgmm-core"
    config = {"threads": 2}


class TestCudaBackend(DeviceBackendContract):
    component = "cuda"
    distribution = "pgmm-core"


class TestAutoBackend(DeviceBackendContract):
    """``auto`` is resolved by select_device_backend (what the trainer calls), never built directly."""

    component = "auto"
    distribution = "pgmm-core"

    def build(self, host, config):
        from pgmm_core.devices.select import select_device_backend

        previous = os.environ.pop("PGMM_DEVICE", None)
        try:
            return select_device_backend(config, host)
        finally:
            if previous is not None:
                os.environ["PGMM_DEVICE"] = previous


class TestEarlyStopping(CallbackContract):
    component = "early_stopping"
    distribution = "pgmm-core"
    config = {"metric": "CIDEr", "patience": 2}


class TestCaptionObjective(ObjectiveContract):
    component = "caption"
    distribution = "pgmm-core"


class TestAutoStrategy(StrategyContract):
    """In a one-process launch ``auto`` is ``single``."""

    component = "auto"
    distribution = "pgmm-core"


class TestSingleStrategy(StrategyContract):
    component = "single"
    distribution = "pgmm-core"


class TestDdpStrategy(StrategyContract):
    """DistributedDataParallel over a one-process gloo group."""

    component = "ddp"
    distribution = "pgmm-core"
    config = {"find_unused_parameters": False}


class TestFsdp2Strategy(StrategyContract):
    """FSDP2 over a one-process gloo group: parameters become (one-shard) DTensors."""

    component = "fsdp2"
    distribution = "pgmm-core"
    config = {"reshard_after_forward": True, "trainable": "shard"}


class TestFsdp2ReplicatedTrainableStrategy(StrategyContract):
    """FSDP2 with the trainable parts replicated (a one-process replicate × shard mesh)."""

    component = "fsdp2"
    distribution = "pgmm-core"
    config = {"reshard_after_forward": False, "trainable": "replicate"}


class TestVqaObjective(ObjectiveContract):
    """VQA on the synthetic shapes' questions (weighted distinct answers in train, ten in val)."""

    component = "vqa"
    distribution = "pgmm-core"
    config = {"generation": {"num_beams": 2, "max_new_tokens": 3, "min_new_tokens": 1}}

    def tiny_sections(self):
        return {"data": {"train": [{"type": "synthetic_shapes_vqa", "num_samples": 8, "seed": 0}],
                         "val": [{"type": "synthetic_shapes_vqa", "num_samples": 2, "seed": 0}],
                         "batch_size": 4, "num_workers": 0}}


class TestInstructObjective(ObjectiveContract):
    """Instruction tuning on the synthetic shapes' conversations in openPangu's chat format."""

    component = "instruct"
    distribution = "pgmm-core"
    config = {"generation": {"num_beams": 1, "max_new_tokens": 4, "min_new_tokens": 1}}

    def tiny_sections(self):
        return {"data": {"train": [{"type": "synthetic_shapes_chat", "num_samples": 8, "seed": 0}],
                         "val": [{"type": "synthetic_shapes_chat", "num_samples": 2, "seed": 0}],
                         "batch_size": 4, "num_workers": 0}}
