"""pgmm-data's plugin: registers its datasets (import-cheap)."""

from __future__ import annotations

from pgmm_core.hookspecs import hookimpl
from pgmm_data.configs import SyntheticShapesConfig


@hookimpl
def pgmm_register_datasets(registrar):
    registrar.add("synthetic_shapes", "pgmm_data.synthetic:build_synthetic_shapes", SyntheticShapesConfig,
                  description="procedural coloured shapes with captions (deterministic, no files)")
