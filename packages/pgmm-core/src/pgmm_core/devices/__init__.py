"""Device backends: the small protocol the trainer uses instead of ``torch.cuda``.

Import :mod:`pgmm_core.devices.base` for the protocol (it imports torch); this package itself stays
import-cheap so that plugins can reference config models without pulling torch in.
"""
