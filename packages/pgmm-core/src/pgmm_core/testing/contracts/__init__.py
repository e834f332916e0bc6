"""Contract test suites that plugin authors subclass, one per component kind.

Each class is a pytest test class (collected once its subclass is named ``Test…``). It builds the
component through a real :class:`~pgmm_core.plugins.PluginHost` over the installed entry points and
checks registration, the config model, the import-cheap plugin module, construction on CPU, shapes
and dtypes, freezing and the protocol methods. See ``docs/plugins.md``.

Which suite belongs to which kind is the ``contract`` column of :data:`pgmm_core.kinds.KINDS`: a new
kind's suite is importable from here by its class name as soon as its row names it.
"""

from pgmm_core.kinds import KINDS
from pgmm_core.testing.contracts.base import ComponentContract

CONTRACTS = {kind.name: kind.load_contract() for kind in KINDS}
"""The contract of each component kind, as the kinds table names it."""

globals().update({contract.__name__: contract for contract in CONTRACTS.values()})

__all__ = ["CONTRACTS", "ComponentContract", *sorted(c.__name__ for c in CONTRACTS.values())]  # noqa: PLE0604

from pgmm_core.testing.contracts.vqa_dataset import ConversationDatasetContract, VqaDatasetContract  # noqa: E402

__all__ += ["ConversationDatasetContract", "VqaDatasetContract"]  # the other item formats of the dataset kind
