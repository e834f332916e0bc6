"""Config models of the example components: plain pydantic, so validating a config needs no torch.

They subclass :class:`~pgmm_core.config.sections.ComponentConfig` (unknown keys are errors), declare
``type`` as a one-value ``Literal`` (the discriminator of the config slot), and use JSON-native field
types only, because every run writes its resolved config to ``config.json``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pgmm_core.config.sections import ComponentConfig
from pgmm_core.preprocessing import ImageSpec


class CnnTokensConfig(ComponentConfig):
    """A timm CNN as the vision tower: its last feature map (B×C×h×w) becomes h·w tokens of width C."""

    type: Literal["cnn_tokens"] = "cnn_tokens"
    model_name: str = Field("convnext_tiny", min_length=1,
                            description="A timm CNN: resnet50, convnext_tiny, efficientnet_b0, ...")
    checkpoint: str | None = Field(
        None, description="Local weights (.safetensors, .pth or .bin) loaded by timm; nothing is downloaded. "
        "Without it the tower is randomly initialised.")
    image_size: int = Field(224, gt=0, description="Input size; the token grid is image_size / the CNN's stride.")
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra timm.create_model arguments, e.g. depths/dims of a ConvNeXt.")
    position_embedding: bool = Field(
        True, description="Add a fixed 2-D sin-cos position embedding to the tokens: the Q-Former's "
        "cross-attention has no notion of where a token came from.")
    freeze: bool = Field(True, description="Frozen: pgmm_core.build_model turns off its gradients and keeps it in "
                         "eval mode, runs it under no_grad, leaves it out of checkpoints and may store it in "
                         "bf16/fp16 (device.precision).")

    def image_spec(self) -> ImageSpec:
        """The CNN's preprocessing (timm's data config for model_name, at image_size) without building it:
        ``data check``, ``report`` and captioning read it from the config."""
        from pgmm_example_plugin.encoder import timm_image_spec

        return timm_image_spec(self)


class AttentionPoolConfig(ComponentConfig):
    """Learned query tokens that cross-attend once to the vision tokens (a one-layer resampler)."""

    type: Literal["attention_pool"] = "attention_pool"
    num_query_tokens: int = Field(32, gt=0, description="How many tokens the LLM receives per image.")
    hidden_size: int = Field(256, gt=0, description="Width of the query tokens (the projector maps it to the LLM).")
    num_heads: int = Field(4, gt=0, description="Attention heads; hidden_size must be divisible by it.")
    freeze: bool = Field(False, description="Frozen: pgmm_core.build_model freezes it (no gradients, eval mode). "
                                            "A connector usually trains.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> AttentionPoolConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        return self


class ImageFolderCaptionsConfig(ComponentConfig):
    """Images in a folder plus a JSON file mapping each image to one caption or a list of captions.

    ``captions.json``: ``{"beach.jpg": "a dog running on a beach", "cat.png": ["a cat", "a sleeping cat"]}``.
    For training every caption is one sample; for evaluation every image is one sample and its
    captions are the references. Use one folder per split.
    """

    type: Literal["image_folder_captions"] = "image_folder_captions"
    root: str = Field(..., min_length=1, description="The folder; paths in the captions file are relative to it.")
    captions_file: str = Field("captions.json", min_length=1, description="The captions file, inside root.")
    augment: bool = Field(True, description="Training split only: random resized crop and horizontal flip "
                                            "(LAVIS blip2_image_train). Evaluation always resizes.")
    max_words: int = Field(50, gt=0, description="Keep at most this many words of a caption (LAVIS blip_caption).")


class GradNormLogConfig(ComponentConfig):
    """``train.callbacks: [{"type": "grad_norm_log"}]``: gradient norms of the run, in ``grad_norms.jsonl``."""

    type: Literal["grad_norm_log"] = "grad_norm_log"
    every: int = Field(1, ge=1, description="Record the norms every this many optimizer steps.")
    warn_above: float | None = Field(None, gt=0, description="Log a warning when the global norm exceeds this.")
