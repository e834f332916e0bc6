"""EVA-ViT-g exactly as LAVIS builds it, expressed with timm's ``Eva`` (no hand-written ViT).

LAVIS' tower: patch 14, 1408 wide, 39 blocks (EVA-CLIP-g's last block dropped), 16 heads, MLP 6144
with exact GELU, pre-norm blocks (LayerNorm eps 1e-6), a bias-free fused qkv plus separate
``q_bias``/``v_bias``, absolute position embedding, no layer scale and no final norm; all tokens out.
timm's ``Eva`` with these settings has the same state-dict keys as LAVIS' module, and matches its
outputs bit for bit with ``fused_attention=false`` (to ~1e-6 with timm's fused SDPA attention).
"""

from __future__ import annotations

import logging
from functools import partial

from torch import nn

from pgmm_core.errors import PgmmError
from pgmm_vision.towers import TimmTower

logger = logging.getLogger(__name__)


def create_eva(config) -> nn.Module:
    from timm.layers import LayerNorm
    from timm.models.eva import Eva

    # timm takes int(embed_dim * mlp_ratio); nudge the ratio so that gives mlp_dim exactly
    # (6144/1408 is not representable; LAVIS writes 4.3637).
    mlp_ratio = config.mlp_dim / config.embed_dim + 1e-6
    model = Eva(
        img_size=config.image_size,
        patch_size=config.patch_size,
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        mlp_ratio=mlp_ratio,
        qkv_bias=True,
        qkv_fused=True,
        class_token=True,
        use_abs_pos_emb=True,
        use_rot_pos_emb=False,
        init_values=None,
        num_classes=0,
        use_fc_norm=False,
        use_post_transformer_norm=False,  # LAVIS' tower ends without a norm: ln_vision follows it
        drop_path_rate=config.drop_path_rate,
        norm_layer=partial(LayerNorm, eps=1e-6),
    )
    if model.blocks[0].mlp.fc1.out_features != config.mlp_dim:
        raise PgmmError(f"internal: EVA MLP width {model.blocks[0].mlp.fc1.out_features} != {config.mlp_dim}")
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = config.fused_attention
    return model


def sincos_pos_embed_(model: nn.Module) -> None:
    """Fixed 2-D sin-cos position embedding (MAE) for a tower built without weights.

    timm initialises ``pos_embed`` with std 0.02, far below the patch features, so an untrained
    tower (demos, tests) would barely encode where a patch is; the Q-Former's cross-attention has no
    positions of its own. A checkpoint, when given, replaces this.
    """
    import torch
    from timm.layers import build_sincos2d_pos_embed

    grid = list(model.patch_embed.grid_size)
    with torch.no_grad():
        model.pos_embed[0, 1:] = build_sincos2d_pos_embed(grid, dim=model.embed_dim).to(model.pos_embed.dtype)


def build_eva_vit_g(config) -> TimmTower:
    model = create_eva(config)
    if config.checkpoint:
        from pgmm_vision.checkpoints import load_vision_state, not_llm, read_state_dict

        state = read_state_dict(config.checkpoint, hint="eva", wanted=not_llm)
        logger.info(load_vision_state(model, state, config.checkpoint).summary())
        del state
    elif config.embed_dim % 4 == 0:
        sincos_pos_embed_(model)
    return TimmTower(model, out_features=config.embed_dim, image_spec=config.image_spec(),
                     frozen=config.freeze, precision=config.precision,
                     grad_checkpointing=config.grad_checkpointing)
