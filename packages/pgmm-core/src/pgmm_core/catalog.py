"""Which pip package provides which first-party component.

Used only for error messages: when a config names a component that is not installed, the message can
say ``pip install pgmm-ascend`` instead of just "unknown".
"""

from __future__ import annotations

FIRST_PARTY: dict[str, dict[str, str]] = {
    "vision": {"eva_vit_g": "pgmm-vision", "timm": "pgmm-vision"},
    "connector": {"qformer": "pgmm-vision"},
    "projector": {
        "linear": "pgmm-vision",
        "identity": "pgmm-vision",
        **{f"mlp{n}x_gelu": "pgmm-vision" for n in range(2, 7)},
    },
    "llm": {"openpangu": "pgmm-pangu", "tiny_openpangu": "pgmm-pangu", "hf_causal_lm": "pgmm-pangu"},
    "dataset": {
        "coco_caption": "pgmm-data",
        "vg_caption": "pgmm-data",
        "jsonl_captions": "pgmm-data",
        "synthetic_shapes": "pgmm-data",
    },
    "device": {"cpu": "pgmm-core", "cuda": "pgmm-core", "auto": "pgmm-core", "npu": "pgmm-ascend"},
    "callback": {"early_stopping": "pgmm-core"},
    "strategy": {"auto": "pgmm-core", "single": "pgmm-core", "ddp": "pgmm-core"},
}


def providing_package(kind: str, name: str) -> str | None:
    """The first-party distribution that provides ``kind:name``, if any."""
    return FIRST_PARTY.get(kind, {}).get(name)
