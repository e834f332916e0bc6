"""Collectives and checkpoint sanitising in one process (world size 1); multi-rank behaviour under
HCCL's rules is tested in pgmm-ascend against a strict fake HCCL across processes."""

from __future__ import annotations

import pytest
import torch

from pgmm_core.devices.collectives import GLOO_RULES, Collectives, DtypeRules, to_serializable
from pgmm_core.errors import PgmmError

STRICT = DtypeRules("strict", reduce_casts={torch.float64: torch.float32}, unsupported_ops=frozenset({"band"}))


def test_single_process_reductions_return_copies_with_the_input_dtype():
    values = torch.tensor([1.5, 2.5], dtype=torch.float64)
    for op in ("sum", "max", "avg"):
        out = Collectives(STRICT).all_reduce(values, op=op)
        assert out.dtype == torch.float64 and out.tolist() == [1.5, 2.5]
        assert out.data_ptr() != values.data_ptr()
    assert Collectives(STRICT).reduce_scatter(values).tolist() == [1.5, 2.5]


def test_average_of_integers_is_a_float_not_a_truncation():
    out = Collectives(GLOO_RULES).all_reduce(torch.tensor([3, 4]), op="avg")
    assert out.dtype == torch.get_default_dtype() and out.tolist() == [3.0, 4.0]


def test_ops_are_checked_even_without_a_process_group():
    with pytest.raises(PgmmError, match="reduce op BAND is not supported by the strict backend; use one of: sum"):
        Collectives(STRICT).all_reduce(torch.tensor([1]), op="band")
    with pytest.raises(PgmmError, match="unknown reduce op 'mean'"):
        Collectives(STRICT).all_reduce(torch.tensor([1.0]), op="mean")


def test_reduce_scalars_and_gathers_without_a_process_group():
    collectives = Collectives(STRICT)
    assert collectives.reduce_scalars({"loss": 2.5, "grad_norm": 1.0}) == {"grad_norm": 1.0, "loss": 2.5}
    assert collectives.reduce_scalars({}) == {}
    assert collectives.all_gather_object({"a": 1}) == [{"a": 1}]
    assert [t.tolist() for t in collectives.all_gather(torch.tensor([1, 2]))] == [[1, 2]]


def test_to_serializable_narrows_float64_and_keeps_the_structure():
    state = {"step": 3, "exp_avg": torch.ones(2, dtype=torch.float64), "ids": torch.tensor([1, 2]),
             "nested": [(torch.zeros(1, dtype=torch.float64), "name")], "half": torch.ones(1, dtype=torch.float16)}
    out = to_serializable(state)
    assert out["step"] == 3 and out["nested"][0][1] == "name"
    assert out["exp_avg"].dtype == torch.float32 and out["nested"][0][0].dtype == torch.float32
    assert out["ids"].dtype == torch.int64 and out["half"].dtype == torch.float16
    assert state["exp_avg"].dtype == torch.float64  # the input is left alone
    assert isinstance(out["nested"][0], tuple)


def test_backends_bind_their_collectives_to_the_device_they_set_up():
    from pgmm_core.devices.configs import CpuConfig
    from pgmm_core.devices.cpu import CpuBackend

    backend = CpuBackend(CpuConfig())
    assert backend.collectives.device is None
    backend.setup(0)
    assert backend.collectives.device == torch.device("cpu")


def test_all_gather_with_grad_is_the_input_itself_in_one_process():
    """With one process there is nothing to gather: the graph goes on through the input (the
    multi-rank forward and all-reduced backward are tested against LAVIS in pgmm-vision's
    test_stage1_parity, over a strict fake HCCL)."""
    x = torch.ones(2, 3, requires_grad=True)
    out = Collectives(STRICT).all_gather_with_grad(x)
    assert out is x
    (out * 2).sum().backward()
    assert x.grad.tolist() == [[2.0] * 3] * 2
