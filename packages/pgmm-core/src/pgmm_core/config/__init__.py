"""pgmm configuration: fixed sections, plugin-assembled component slots, loading and messages."""

from pgmm_core.config.loading import (
    apply_overrides,
    config_to_json,
    demo_config_text,
    load_config,
    read_json_file,
    validate_config,
)
from pgmm_core.config.sections import (
    ComponentConfig,
    DataSection,
    EvalSection,
    GenerationSection,
    ModelSection,
    StrictModel,
    TrainSection,
)

__all__ = [
    "ComponentConfig",
    "DataSection",
    "EvalSection",
    "GenerationSection",
    "ModelSection",
    "StrictModel",
    "TrainSection",
    "apply_overrides",
    "config_to_json",
    "demo_config_text",
    "load_config",
    "read_json_file",
    "validate_config",
]
