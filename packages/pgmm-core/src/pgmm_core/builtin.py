"""pgmm-core's own plugin: the cpu, cuda and auto device backends, the built-in callbacks and the
``caption``, ``vqa`` and ``instruct`` objectives, and the auto, single, ddp and fsdp2 strategies.

``auto`` is the device kind's and the strategy kind's default, ``caption`` the objective kind's
(``default=True``): a config without a ``device``, ``strategy`` or ``objective`` section uses them.

Registered through the ``pgmm`` entry point like every third-party plugin. Import-cheap: config
models are plain pydantic, factories are dotted paths imported when a component is built.
"""

from __future__ import annotations

from pgmm_core.callbacks.configs import EarlyStoppingConfig
from pgmm_core.devices.configs import AutoDeviceConfig, CpuConfig, CudaConfig
from pgmm_core.hookspecs import hookimpl
from pgmm_core.objectives.configs import CaptionObjectiveConfig, InstructObjectiveConfig, VqaObjectiveConfig
from pgmm_core.strategies.configs import (
    AutoStrategyConfig,
    DdpStrategyConfig,
    Fsdp2StrategyConfig,
    SingleStrategyConfig,
)


@hookimpl
def pgmm_register_device_backends(registrar):
    registrar.add("cpu", "pgmm_core.devices.cpu:build_cpu", CpuConfig,
                  description="CPU with gloo for distributed runs")
    registrar.add("cuda", "pgmm_core.devices.cuda:build_cuda", CudaConfig,
                  description="NVIDIA GPUs with NCCL", probe="pgmm_core.devices.probes:cuda_probe")
    registrar.add("auto", "pgmm_core.devices.select:build_auto", AutoDeviceConfig, default=True,
                  description="PGMM_DEVICE if set, else the first available of npu, cuda, cpu")


@hookimpl
def pgmm_register_callbacks(registrar):
    registrar.add("early_stopping", "pgmm_core.callbacks.early_stopping:EarlyStopping",
                  EarlyStoppingConfig,
                  description="stop when an eval metric has not improved for `patience` evaluations")


@hookimpl
def pgmm_register_objectives(registrar):
    registrar.add("caption", "pgmm_core.objectives.caption:build_caption_objective", CaptionObjectiveConfig,
                  default=True,
                  description="BLIP-2 stage 2: captioning loss, evaluation by generated captions (CIDEr, BLEU, ...)")
    registrar.add("vqa", "pgmm_core.objectives.vqa:build_vqa_objective", VqaObjectiveConfig,
                  description="visual question answering: weighted answer loss, VQA accuracy of generated answers")
    registrar.add("instruct", "pgmm_core.objectives.instruct:build_instruct_objective", InstructObjectiveConfig,
                  description="visual instruction tuning: chat-template conversations, loss on assistant turns")


@hookimpl
def pgmm_register_strategies(registrar):
    registrar.add("auto", "pgmm_core.strategies.auto:build_auto", AutoStrategyConfig, default=True,
                  description="ddp when torchrun started more than one process, else single")
    registrar.add("single", "pgmm_core.strategies.single:build_single", SingleStrategyConfig,
                  description="one process on one device")
    registrar.add("ddp", "pgmm_core.strategies.ddp:build_ddp", DdpStrategyConfig,
                  description="DistributedDataParallel over the processes torchrun started")
    registrar.add("fsdp2", "pgmm_core.strategies.fsdp2:build_fsdp2", Fsdp2StrategyConfig,
                  description="FSDP2 (fully_shard): frozen towers and trainable parts sharded per block over the ranks")
