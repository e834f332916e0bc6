"""Test doubles for Ascend code on machines without NPUs, reusable by any package's tests.

* :mod:`~pgmm_ascend.testing.fake_hccl` — a strict ``"hccl"`` process-group backend on CPU (gloo
  underneath, HCCL's dtype and reduce-op rules on top) to run real multi-process collectives;
* :mod:`~pgmm_ascend.testing.fake_torch_npu` — a recording stand-in for the ``torch_npu`` module,
  to check which ``torch.npu`` calls setup makes (run it in a subprocess);
* :mod:`~pgmm_ascend.testing.hccl_cpu` — a ``hccl_cpu`` device backend: the CPU backend talking
  through the fake HCCL with HCCL's rules, so the whole trainer runs under HCCL's constraints;
* :mod:`~pgmm_ascend.testing.ranks` — run a function in fresh processes set up like torchrun.

What these prove and what they cannot is spelled out in each module; none of them replaces the
``@pytest.mark.npu`` tests on real hardware.
"""
