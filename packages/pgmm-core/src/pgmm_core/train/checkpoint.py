"""Training checkpoints: trainable weights in safetensors plus everything needed to resume exactly.

Layout of ``<output_dir>/checkpoints/step-000123/``:

``model.safetensors``   trainable parameters only (frozen towers are never repeated)
``trainer_state.pt``    optimizer, grad scaler, RNG states (loaded with ``weights_only=True``)
``meta.json``           step, epoch, data position, metrics, parameter shapes, and the size and
                        SHA-256 of the two files above — written last.

A checkpoint is written into a temporary sibling directory, every file fsynced, then renamed into
place; a process killed at any moment leaves either a complete checkpoint or an ignorable temporary
directory. Loading verifies sizes and hashes, so a truncated or altered file is detected, not loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from pgmm_core.errors import CheckpointError
from pgmm_core.files import atomic_write_text, usual_permissions  # noqa: F401  (re-exported)
from pgmm_core.run_dir import CHECKPOINT_DIR, RunDirectory, checkpoint_dir_name

logger = logging.getLogger(__name__)

STEP_DIR = CHECKPOINT_DIR
WEIGHTS = "model.safetensors"
STATE = "trainer_state.pt"
META = "meta.json"
FORMAT_VERSION = 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(root: Path, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any],
                    meta: dict[str, Any]) -> Path:
    """Write ``root/step-{step}`` atomically and return its path."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_dir_name(step)
    scratch = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in weights.items()}, str(scratch / WEIGHTS))
        torch.save(state, scratch / STATE)
        files = {}
        for name in (WEIGHTS, STATE):
            usual_permissions(scratch / name)
            _fsync_file(scratch / name)
            files[name] = {"size": (scratch / name).stat().st_size, "sha256": _sha256(scratch / name)}
        meta = {
            **meta,
            "format_version": FORMAT_VERSION,
            "step": step,
            "shapes": {k: list(v.shape) for k, v in weights.items()},
            "files": files,
        }
        (scratch / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _fsync_file(scratch / META)
        _fsync_dir(scratch)
        if final.exists():  # a re-save of the same step (e.g. resumed then saved at once)
            shutil.rmtree(final)
        usual_permissions(scratch, directory=True)
        os.rename(scratch, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return final


def update_meta(path: Path, **fields: Any) -> None:
    """Replace some of a saved checkpoint's ``meta.json`` fields (e.g. the metrics of an evaluation
    done after it was written). The weights and trainer state are untouched, so their recorded sizes
    and hashes stay valid; the file is replaced atomically, never left half-written."""
    meta_path = path / META
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta.update(fields)
    atomic_write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's metadata, after checking every file is complete; else :class:`CheckpointError`."""
    meta_path = path / META
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file; a checkpoint is a directory (checkpoints/step-NNNNNN)")
    if RunDirectory(path).checkpoints.is_dir():
        raise CheckpointError(f"{path} is a run directory; name one of its checkpoints/step-NNNNNN, "
                              "or continue the run with --resume auto")
    if not meta_path.is_file():
        raise CheckpointError(f"{path} is incomplete: {META} is missing (the run was probably killed while saving)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_path} is corrupt: {exc}") from None
    for name, expected in meta.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        size = file.stat().st_size
        if size != expected["size"]:
            raise CheckpointError(f"{file} is truncated or altered: {size} bytes, expected {expected['size']}")
        if _sha256(file) != expected["sha256"]:
            raise CheckpointError(f"{file} does not match its recorded SHA-256 (corrupt or altered)")
    return meta


def list_checkpoints(root: Path) -> list[Path]:
    """Step directories under ``root``, oldest first (temporary directories are not listed)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_complete(root: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that verifies; broken newer ones are reported and skipped."""
    for path in reversed(list_checkpoints(root)):
        try:
            return path, verify_checkpoint(path)
        except CheckpointError as exc:
            logger.warning("pgmm: skipping %s: %s", path.name, exc)
    return None


def load_checkpoint(path: Path, expected_shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Weights, trainer state and metadata of a verified checkpoint that fits this model."""
    from safetensors.torch import load_file

    meta = verify_checkpoint(path)
    problems = []
    saved = {k: tuple(v) for k, v in meta.get("shapes", {}).items()}
    for key in sorted(set(expected_shapes) | set(saved)):
        if key not in saved:
            problems.append(f"'{key}' is trainable in this model but absent from the checkpoint")
        elif key not in expected_shapes:
            problems.append(f"'{key}' is in the checkpoint but not trainable in this model")
        elif saved[key] != tuple(expected_shapes[key]):
            problems.append(f"'{key}': checkpoint {list(saved[key])}, model {list(expected_shapes[key])}")
    if problems:
        raise CheckpointError(
            f"{path} belongs to a different model shape:\n  " + "\n  ".join(problems[:10])
            + (f"\n  … and {len(problems) - 10} more" if len(problems) > 10 else "")
        )
    weights = load_file(str(path / WEIGHTS))
    state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    return weights, state, meta


def prune(root: Path, keep_last: int, protect: set[Path]) -> None:
    """Delete old checkpoints beyond the newest ``keep_last``, never those in ``protect``."""
    checkpoints = list_checkpoints(root)
    for path in checkpoints[: max(len(checkpoints) - keep_last, 0)]:
        if path.resolve() not in {p.resolve() for p in protect}:
            shutil.rmtree(path, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)
