"""pgmm-data: caption datasets (COCO Karpathy, Visual Genome, JSONL, synthetic) and LAVIS processors."""

__version__ = "0.1.0"
