"""pgmm-core's own plugin: the cpu, cuda and auto device backends, the built-in callbacks and the
auto, single and ddp strategies.

Registered through the ``pgmm`` entry point like every third-party plugin. Import-cheap: config
models are plain pydantic, factories are dotted paths imported when a component is built.
"""

from __future__ import annotations

from pgmm_core.callbacks.configs import EarlyStoppingConfig
from pgmm_core.devices.configs import AutoDeviceConfig, CpuConfig, CudaConfig
from pgmm_core.hookspecs import hookimpl
from pgmm_core.strategies.configs import AutoStrategyConfig, DdpStrategyConfig, SingleStrategyConfig


@hookimpl
def pgmm_register_device_backends(registrar):
    registrar.add("cpu", "pgmm_core.devices.cpu:build_cpu", CpuConfig,
                  description="CPU with gloo for distributed runs")
    registrar.add("cuda", "pgmm_core.devices.cuda:build_cuda", CudaConfig,
                  description="NVIDIA GPUs with NCCL", probe="pgmm_core.devices.probes:cuda_probe")
    registrar.add("auto", "pgmm_core.devices.select:build_auto", AutoDeviceConfig,
                  description="PGMM_DEVICE if set, else the first available of npu, cuda, cpu")


@hookimpl
def pgmm_register_callbacks(registrar):
    registrar.add("early_stopping", "pgmm_core.callbacks.early_stopping:EarlyStopping",
                  EarlyStoppingConfig,
                  description="stop when an eval metric has not improved for `patience` evaluations")


@hookimpl
def pgmm_register_strategies(registrar):
    registrar.add("auto", "pgmm_core.strategies.auto:build_auto", AutoStrategyConfig,
                  description="ddp when torchrun started more than one process, else single")
    registrar.add("single", "pgmm_core.strategies.single:build_single", SingleStrategyConfig,
                  description="one process on one device")
    registrar.add("ddp", "pgmm_core.strategies.ddp:build_ddp", DdpStrategyConfig,
                  description="DistributedDataParallel over the processes torchrun started")
