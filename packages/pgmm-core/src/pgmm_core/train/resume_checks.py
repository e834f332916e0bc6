"""What a resumed run says about what changed since its checkpoint was written."""

from __future__ import annotations

import json
from typing import Any

from pgmm_core import frozen_weights
from pgmm_core.config.loading import changed_paths, config_to_json
from pgmm_core.run_dir import RunDirectory


def changes_since_checkpoint(run_dir: RunDirectory, config: Any, frozen_prints: dict[str, Any]) -> list[str]:
    """Warnings for a resumed run, which continues with the config given now.

    A changed batch size or dataset changes the data order the checkpoint's position means, so the
    fields that differ from the run's own config are named (and the previous config is kept as
    ``config.previous.json``); frozen weights that differ from the run's record are named too.
    """
    warnings = []
    saved_path = run_dir.config
    if saved_path.is_file():
        before = json.loads(saved_path.read_text(encoding="utf-8"))
        changed = [p for p in changed_paths(before, json.loads(config_to_json(config)))
                   if p != "train.output_dir"]  # a run directory copied or moved elsewhere
        if changed:
            shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
            warnings.append(f"warning: resuming with a config that differs from the run's in {shown}; "
                            f"the previous one is kept as {run_dir.PREVIOUS_CONFIG}")
            run_dir.write_text(run_dir.previous_config, saved_path.read_text(encoding="utf-8"))
    changed_parts = frozen_weights.differing_parts(run_dir.root, frozen_prints)
    if changed_parts:
        warnings.append(f"warning: {frozen_weights.mismatch_warning(run_dir.root, changed_parts)}")
    return warnings
