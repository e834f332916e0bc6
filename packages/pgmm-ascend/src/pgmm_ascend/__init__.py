"""pgmm-ascend: the Ascend NPU device backend for pgmm (torch_npu, HCCL, fp32 policy)."""

__version__ = "0.1.0"
