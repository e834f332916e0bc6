"""Strategies: how training is spread over processes (a component kind, ``strategy`` in the config).

A strategy owns everything that depends on how many processes train one model and how they share
it: the process group, wrapping the model, gradient sync during accumulation, backward, clipping
and the global gradient norm, the optimizer step, the trainable and optimizer state of checkpoints,
and which share of the data each rank reads. The trainer calls only :class:`~pgmm_core.strategies.
base.Strategy`; nothing outside this package touches ``torch.nn.parallel``.

Built-ins: ``single`` (one process), ``ddp`` (DistributedDataParallel under torchrun), ``fsdp2``
(``fully_shard`` per block under torchrun, :mod:`~pgmm_core.strategies.fsdp2`) and ``auto``
(``ddp`` under torchrun with more than one process, else ``single``; the default).
"""
