"""Any timm backbone as the vision tower, with weights from a local file only (never the hub)."""

from __future__ import annotations

import difflib
import logging
from typing import Any

from pgmm_core.errors import ConfigError
from pgmm_core.preprocessing import ImageSpec
from pgmm_vision.towers import TimmTower

logger = logging.getLogger(__name__)


def _check_name(name: str) -> None:
    """Refuse names timm would resolve over the network, and unknown names (with suggestions)."""
    import timm
    from timm.models import parse_model_name

    try:
        source, model_id = parse_model_name(name)
    except ValueError as exc:
        raise ConfigError([f"model.vision.model_name: {exc}"]) from None
    if source == "hf-hub":
        raise ConfigError([
            f"model.vision.model_name: '{name}' would make timm download the model from the Hugging Face Hub, "
            "and pgmm never downloads weights. Download the weights file yourself, then use the "
            f"architecture name (e.g. vit_base_patch16_224) with \"checkpoint\": \"/path/to/model.safetensors\""])
    if source is None and not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else " See timm.list_models()."
        raise ConfigError([f"model.vision.model_name: timm has no model '{name}'.{hint}"])


def _create(name: str, kwargs: dict):
    import timm

    try:
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except TypeError as exc:
        if "img_size" not in str(exc) or "img_size" not in kwargs:
            raise
    kwargs.pop("img_size")  # CNNs take any input size
    return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)


def _overrides(config) -> dict[str, Any]:
    """The config's preprocessing fields as timm's data-config arguments (unset ones left out)."""
    size = config.image_size
    given = {"input_size": (3, size, size) if size else None, "mean": config.image_mean, "std": config.image_std,
             "interpolation": config.interpolation, "crop_pct": config.crop_pct}
    return {k: v for k, v in given.items() if v is not None}


def timm_image_spec(config, model: Any = None) -> ImageSpec:
    """The tower's preprocessing from timm's own data config: ``resolve_model_data_config(model)`` for
    a built model, else ``resolve_data_config`` from the model name's pretrained config (cheap: no
    model, no weights). Non-square input sizes keep their width as the square side."""
    from timm.data import resolve_data_config, resolve_model_data_config
    from timm.models import get_pretrained_cfg

    args = _overrides(config)
    if model is not None:
        data = resolve_model_data_config(model, args=args)
    else:
        pretrained_cfg = get_pretrained_cfg(config.model_name)
        data = resolve_data_config(args=args, pretrained_cfg=pretrained_cfg.to_dict() if pretrained_cfg else None)
    return ImageSpec(size=int(data["input_size"][-1]), mean=tuple(data["mean"]), std=tuple(data["std"]),
                     interpolation=data["interpolation"], crop_pct=float(data["crop_pct"]))


def build_timm_encoder(config) -> TimmTower:
    _check_name(config.model_name)
    kwargs = dict(config.model_kwargs)
    if config.image_size is not None:
        kwargs.setdefault("img_size", config.image_size)  # ViTs size pos_embed by it
    try:
        model = _create(config.model_name, kwargs)
    except TypeError as exc:
        raise ConfigError([f"model.vision.model_kwargs: timm model '{config.model_name}' rejected "
                           f"{kwargs}: {exc}"]) from None
    if config.checkpoint:
        from pgmm_vision.checkpoints import load_timm_state, read_state_dict

        state = read_state_dict(config.checkpoint)
        logger.info(load_timm_state(model, state, config.checkpoint).summary())
    return TimmTower(model, out_features=int(model.num_features), image_spec=timm_image_spec(config, model),
                     frozen=config.freeze, precision=config.precision,
                     grad_checkpointing=config.grad_checkpointing)
