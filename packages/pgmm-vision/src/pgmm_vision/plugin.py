"""pgmm-vision's plugin: registers its encoders, connector, projectors and the stage-1 objective (import-cheap)."""

from __future__ import annotations

from pgmm_core.hookspecs import hookimpl
from pgmm_vision.configs import (
    MLP_GELU_NAMES,
    EvaViTGConfig,
    IdentityProjectorConfig,
    LinearProjectorConfig,
    MlpGeluProjectorConfig,
    QFormerConfig,
    TimmEncoderConfig,
)
from pgmm_vision.stage1.configs import QFormerPretrainConfig


@hookimpl
def pgmm_register_vision_encoders(registrar):
    registrar.add("eva_vit_g", "pgmm_vision.eva:build_eva_vit_g", EvaViTGConfig,
                  description="EVA-ViT-g (LAVIS BLIP-2 tower) on timm's Eva")
    registrar.add("timm", "pgmm_vision.timm_encoder:build_timm_encoder", TimmEncoderConfig,
                  description="any timm backbone, weights from a local file")


@hookimpl
def pgmm_register_connectors(registrar):
    registrar.add("qformer", "pgmm_vision.qformer:build_qformer", QFormerConfig,
                  description="BLIP-2 Q-Former (transformers Blip2QFormerModel), LAVIS checkpoints")


@hookimpl
def pgmm_register_projectors(registrar):
    registrar.add("mlp2x_gelu", "pgmm_vision.projectors:build_mlp_gelu", MlpGeluProjectorConfig,
                  aliases=MLP_GELU_NAMES[1:], default=True,  # used when a config leaves model.projector out
                  description="Linear, GELU, Linear (mlpNx_gelu: N linears)")
    registrar.add("linear", "pgmm_vision.projectors:build_linear", LinearProjectorConfig,
                  description="one Linear layer")
    registrar.add("identity", "pgmm_vision.projectors:build_identity", IdentityProjectorConfig,
                  description="no projection (connector width must equal the LLM's)")


@hookimpl
def pgmm_register_objectives(registrar):
    registrar.add("qformer_pretrain", "pgmm_vision.stage1.objective:build_qformer_pretrain", QFormerPretrainConfig,
                  description="BLIP-2 stage 1: ITC + ITM + ITG on the tower and Q-Former (no LLM), retrieval eval")


@hookimpl
def pgmm_register_commands(registrar):
    registrar.add("convert", help="convert checkpoints between LAVIS, pgmm and transformers BLIP-2 layouts",
                  configure="pgmm_vision.command:configure", run="pgmm_vision.command:run")
