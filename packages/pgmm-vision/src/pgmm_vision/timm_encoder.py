"""Any timm backbone as the vision tower, with weights from a local file only (never the hub)."""

from __future__ import annotations

import difflib
import logging

from pgmm_core.errors import ConfigError
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
    image_size = config.image_size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    return TimmTower(model, out_features=int(model.num_features), image_size=image_size,
                     frozen=config.freeze, precision=config.precision,
                     grad_checkpointing=config.grad_checkpointing)
