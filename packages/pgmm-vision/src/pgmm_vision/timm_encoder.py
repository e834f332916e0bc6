"""Any timm backbone as the vision tower, with weights from a local file only (never the hub)."""

from __future__ import annotations

from pgmm_core.errors import PgmmError
from pgmm_vision.towers import TimmTower


def build_timm_encoder(config) -> TimmTower:
    import timm

    kwargs = dict(config.model_kwargs)
    if config.image_size is not None:
        kwargs.setdefault("img_size", config.image_size)
    try:
        model = timm.create_model(config.model_name, pretrained=False, num_classes=0, **kwargs)
    except RuntimeError as exc:  # timm raises RuntimeError for unknown model names
        raise PgmmError(f"timm cannot create '{config.model_name}': {exc}") from None
    except TypeError as exc:
        raise PgmmError(f"timm model '{config.model_name}' rejected model_kwargs {kwargs}: {exc}") from None
    if config.checkpoint:
        from pgmm_vision.checkpoints import load_timm_checkpoint

        load_timm_checkpoint(model, config.checkpoint)
    image_size = config.image_size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    return TimmTower(model, out_features=int(model.num_features), image_size=image_size,
                     frozen=config.freeze, precision=config.precision,
                     grad_checkpointing=config.grad_checkpointing)
