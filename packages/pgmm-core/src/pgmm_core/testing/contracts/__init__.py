"""Contract test suites that plugin authors subclass, one per component kind.

Each class is a pytest test class (collected once its subclass is named ``Test…``). It builds the
component through a real :class:`~pgmm_core.plugins.PluginHost` over the installed entry points and
checks registration, the config model, the import-cheap plugin module, construction on CPU, shapes
and dtypes, freezing and the protocol methods. See ``docs/plugins.md``.
"""

from pgmm_core.testing.contracts.base import ComponentContract
from pgmm_core.testing.contracts.callback import CallbackContract
from pgmm_core.testing.contracts.connector import ConnectorContract
from pgmm_core.testing.contracts.dataset import DatasetContract
from pgmm_core.testing.contracts.device import DeviceBackendContract
from pgmm_core.testing.contracts.llm import LLMBackendContract
from pgmm_core.testing.contracts.projector import ProjectorContract
from pgmm_core.testing.contracts.strategy import StrategyContract
from pgmm_core.testing.contracts.vision import VisionEncoderContract

CONTRACTS = {
    "vision": VisionEncoderContract,
    "connector": ConnectorContract,
    "projector": ProjectorContract,
    "llm": LLMBackendContract,
    "dataset": DatasetContract,
    "device": DeviceBackendContract,
    "callback": CallbackContract,
    "strategy": StrategyContract,
}
"""The contract of each component kind."""

__all__ = [
    "CONTRACTS",
    "CallbackContract",
    "ComponentContract",
    "ConnectorContract",
    "DatasetContract",
    "DeviceBackendContract",
    "LLMBackendContract",
    "ProjectorContract",
    "StrategyContract",
    "VisionEncoderContract",
]
