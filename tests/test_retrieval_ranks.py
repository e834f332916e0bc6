"""The retrieval evaluation on two real ranks (processes, the strict fake HCCL) equals one rank.

Every rank returns the same results and metrics as a single-process evaluation, with the ranks'
features, candidates and scores crossing through the backend's collectives (HCCL's rules: no
float64 anywhere)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from pgmm_ascend.testing.ranks import run_ranks


def _inputs():
    from pgmm_vision.stage1.retrieval_settings import RetrievalSettings
    from pgmm_vision.stage1.retrieval_testing import TableDataset, table_model

    generator = torch.Generator().manual_seed(5)
    similarity = torch.rand(9, 45, generator=generator) * 0.9 + 0.05
    itm = torch.randn(9, 45, generator=generator)
    data = TableDataset(np.repeat(np.arange(9), 5), image_ids=[100 + i for i in range(9)], bad=frozenset({4}))
    return table_model(similarity, itm), data, RetrievalSettings(k_test=6, itm_batch_size=4, block_elements=200)


def _context(device, policy, collectives):
    from pgmm_core.objectives.base import EvalContext

    return EvalContext(device=device, policy=policy, collectives=collectives, batch_size=2, num_workers=0,
                       eval=SimpleNamespace(max_images=None))


def _evaluate_on_rank():
    from pgmm_ascend.testing.hccl_cpu import HcclCpuBackend, HcclCpuConfig
    from pgmm_core.strategies.configs import DdpStrategyConfig
    from pgmm_core.strategies.ddp import DdpStrategy
    from pgmm_vision.stage1.retrieval import evaluate_retrieval

    torch.set_num_threads(1)
    backend = HcclCpuBackend(HcclCpuConfig(type="hccl_cpu", threads=1))
    strategy = DdpStrategy(DdpStrategyConfig(), device_backend=backend)
    strategy.setup()
    try:
        model, data, settings = _inputs()
        context = _context(backend.device, backend.precision_policy(), backend.collectives)
        output = evaluate_retrieval(model, data, context, settings)
        return output.results, output.metrics, output.bad_images, sorted({i for i, _ in model.connector.itm_pairs})
    finally:
        strategy.teardown()


def test_two_processes_give_the_result_of_one():
    from pgmm_vision.stage1.retrieval import evaluate_retrieval

    from pgmm_core.devices.configs import CpuConfig
    from pgmm_core.devices.cpu import CpuBackend

    model, data, settings = _inputs()
    single = evaluate_retrieval(model, data, _context(torch.device("cpu"), None,
                                                      CpuBackend(CpuConfig(type="cpu")).collectives), settings)
    ranks = run_ranks(_evaluate_on_rank, 2, timeout=120)
    for results, metrics, bad, _ in ranks:
        assert results == single.results and metrics == single.metrics and bad == single.bad_images == 1
    # Each rank re-scored the pairs of its own images only: even indices on rank 0, odd on rank 1.
    assert ranks[0][3] == [0, 2, 6, 8] and ranks[1][3] == [1, 3, 5, 7]
