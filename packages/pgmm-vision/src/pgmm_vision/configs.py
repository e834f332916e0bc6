"""Config models of pgmm-vision's components (pydantic only: importing this never imports torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from pgmm_core.config.files import RequiredPath
from pgmm_core.config.sections import ComponentConfig
from pgmm_core.preprocessing import INTERPOLATIONS, ImageSpec, clip_spec

Precision = Literal["fp32", "bf16", "fp16"]
Interpolation = Literal[INTERPOLATIONS]  # type: ignore[valid-type]


class EvaViTGConfig(ComponentConfig):
    """EVA-ViT-g as LAVIS builds it, on timm's ``Eva``.

    The architecture fields default to EVA-ViT-g (depth 39 of EVA-CLIP-g's 40, 1408 wide, 16 heads,
    MLP 6144, patch 14). Smaller values build an EVA tower of the same design, for tests and demos.
    """

    type: Literal["eva_vit_g"] = "eva_vit_g"
    image_size: int = Field(224, gt=0, description="Input size; pos_embed is resampled from the checkpoint's grid.")
    checkpoint: str | None = Field(
        None,
        description="eva_vit_g.pth (flat LAVIS state dict), a BLIP-2 .pth with visual_encoder.* keys, or a "
        "transformers BLIP-2 file/directory (vision_model.*). Without one the tower is randomly initialised.",
    )
    freeze: bool = Field(True, description="Frozen: no gradients, eval mode that model.train() cannot undo, "
                         "forward under torch.no_grad.")
    precision: Precision | None = Field(
        None, description="Storage dtype of the frozen tower (fp16/bf16 halve its memory); default: the "
        "device precision policy's (fp32 unless device.precision says otherwise)."
    )
    grad_checkpointing: bool = Field(False, description="Recompute blocks in backward (trainable tower only).")
    fused_attention: bool = Field(
        True, description="timm's fused SDPA attention; false gives LAVIS' explicit softmax bit for bit."
    )
    patch_size: int = Field(14, gt=0)
    embed_dim: int = Field(1408, gt=0)
    depth: int = Field(39, gt=0)
    num_heads: int = Field(16, gt=0)
    mlp_dim: int = Field(6144, gt=0)
    drop_path_rate: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _check_shapes(self) -> EvaViTGConfig:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        _check_precision(self.precision, self.freeze)
        return self

    def image_spec(self) -> ImageSpec:
        """LAVIS' preprocessing (CLIP mean/std, bicubic resize, no crop): EVA-CLIP was trained with it."""
        return clip_spec(self.image_size)


    def required_paths(self) -> list[RequiredPath]:
        """What ``validate`` checks exists (:mod:`pgmm_core.config.files`)."""
        if not self.checkpoint:
            return []
        return [RequiredPath(Path(self.checkpoint).expanduser(), "path",
                             "EVA-ViT-g weights: eva_vit_g.pth of the LAVIS release", "checkpoint")]

def _check_precision(precision: str | None, freeze: bool) -> None:
    if precision not in (None, "fp32") and not freeze:
        raise ValueError("a trainable tower must keep precision fp32 (use device.precision for autocast)")


class TimmEncoderConfig(ComponentConfig):
    """Any timm model as the vision tower; its token features (``forward_features``) are used."""

    type: Literal["timm"] = "timm"
    model_name: str = Field(..., min_length=1, description="A timm model name, e.g. vit_base_patch16_224.")
    checkpoint: str | None = Field(
        None, description="Local weights file (.safetensors/.pth/.bin) in the model's timm layout; never downloaded.")
    image_size: int | None = Field(None, gt=0, description="Input size; default: the model's own.")
    image_mean: tuple[float, float, float] | None = Field(
        None, description="Normalisation mean (RGB); default: the model's pretrained config (timm's data config). "
        "Set it when the checkpoint was trained with other statistics than the architecture's default weights.")
    image_std: tuple[float, float, float] | None = Field(
        None, description="Normalisation std (RGB); default: the model's pretrained config.")
    interpolation: Interpolation | None = Field(None, description="Resize filter; default: the model's own.")
    crop_pct: float | None = Field(
        None, gt=0, le=1, description="Evaluation centre crop (1.0: resize only); default: the model's own.")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra timm.create_model arguments.")
    freeze: bool = True
    precision: Precision | None = None
    grad_checkpointing: bool = False

    @model_validator(mode="after")
    def _check_local_only(self) -> TimmEncoderConfig:
        if self.model_name.lower().startswith(("hf-hub:", "hf_hub:")):
            raise ValueError(
                f"'{self.model_name}' would make timm download the model from the Hugging Face Hub; pgmm "
                "never downloads weights: download the file, then give the architecture name as model_name "
                "and the file as checkpoint")
        pretrained = sorted(k for k in self.model_kwargs if k.startswith("pretrained") or k == "num_classes")
        if pretrained:
            raise ValueError(f"model_kwargs may not set {', '.join(pretrained)}: weights come only from "
                             "'checkpoint' (a local file) and the tower has no classifier")
        if self.image_std is not None and min(self.image_std) <= 0:
            raise ValueError(f"image_std must be positive, got {list(self.image_std)}")
        _check_precision(self.precision, self.freeze)
        return self

    def image_spec(self) -> ImageSpec:
        """timm's data config for ``model_name`` (its pretrained config; no weights, no model), with the
        fields set here winning: timm's rule, user arguments over the model's config over defaults."""
        from pgmm_vision.timm_encoder import timm_image_spec

        return timm_image_spec(self)


    def required_paths(self) -> list[RequiredPath]:
        """What ``validate`` checks exists (:mod:`pgmm_core.config.files`)."""
        if not self.checkpoint:
            return []
        return [RequiredPath(Path(self.checkpoint).expanduser(), "file", f"{self.model_name} weights", "checkpoint")]

BERT_URL = "https://huggingface.co/google-bert/bert-base-uncased"
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


class QFormerConfig(ComponentConfig):
    """The BLIP-2 Q-Former (transformers' ``Blip2QFormerModel``): the query path, and with
    ``text_side`` also LAVIS' stage-1 text side and heads (:mod:`pgmm_vision.stage1`)."""

    type: Literal["qformer"] = "qformer"
    num_query_tokens: int = Field(32, gt=0)
    hidden_size: int = Field(768, gt=0)
    num_layers: int = Field(12, gt=0)
    num_heads: int = Field(12, gt=0)
    intermediate_size: int = Field(3072, gt=0)
    cross_attention_freq: int = Field(2, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    attention_dropout: float = Field(0.1, ge=0, lt=1)
    checkpoint: str | None = Field(
        None, description="blip2_pretrained.pth (LAVIS), a transformers BLIP-2 weight file or directory, or a "
        "pgmm checkpoint (a stage-1 run's checkpoint directory or model.safetensors); its ln_vision weights go "
        "to the model's ln_vision."
    )
    bert_init: str | None = Field(
        None, description="Initialise from a local bert-base checkpoint directory first (as LAVIS does for stage 1); "
        "with text_side also BERT's tokenizer (vocab.txt) and its embeddings, text FFN and LM head.")
    tiny_bert: bool = Field(
        False, description="Initialise from a random-weight tiny BERT of this Q-Former's own sizes (its tokenizer "
        "spells any lowercase word), created once in the pgmm cache: for demos and tests without a BERT download. "
        "Replaces bert_init.")
    text_side: bool = Field(
        False, description="Also build LAVIS' stage-1 text side: text embeddings, text FFN, LM head, vision_proj, "
        "text_proj, itm_head and temp (Q-Former pretraining). Needs BERT's tokenizer: bert_init, or a "
        "checkpoint directory that holds vocab.txt.")
    max_text_len: int = Field(32, gt=1, description="Text side: captions are padded/truncated to this many "
                              "tokens ([CLS] and [SEP] included), LAVIS' max_txt_len.")
    embed_dim: int = Field(256, gt=0, description="Text side: width of vision_proj/text_proj (ITC features).")
    max_position_embeddings: int = Field(512, gt=0, description="Text side: BERT's position embeddings.")
    freeze: bool = False
    grad_checkpointing: bool = Field(False, description="Recompute Q-Former layers in backward to save memory.")

    @model_validator(mode="after")
    def _check_heads(self) -> QFormerConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.text_side:
            if self.max_text_len > self.max_position_embeddings:
                raise ValueError(f"max_text_len {self.max_text_len} exceeds max_position_embeddings "
                                 f"{self.max_position_embeddings}")
            if not self.bert_directory_given and (not self.checkpoint or self.checkpoint.endswith(WEIGHT_SUFFIXES)):
                raise ValueError(
                    "text_side needs BERT's tokenizer (and, without a stage-1 checkpoint, BERT's weights): "
                    f"download bert-base-uncased from {BERT_URL} (config.json, vocab.txt, model.safetensors) "
                    "into one directory and set model.connector.bert_init to that directory")
        return self

    @model_validator(mode="after")
    def _one_bert(self) -> QFormerConfig:
        if self.tiny_bert and self.bert_init:
            raise ValueError("bert_init and tiny_bert both given: choose one BERT to start from")
        return self

    @property
    def bert_directory_given(self) -> bool:
        return bool(self.bert_init or self.tiny_bert)

    def bert_directory(self) -> Path | None:
        """The BERT directory to initialise from: ``bert_init``, or the tiny BERT (created on first use)."""
        if self.tiny_bert:
            from pgmm_vision.stage1.tiny_bert import TinyBertSpec, ensure_tiny_bert

            return ensure_tiny_bert(TinyBertSpec(
                hidden_size=self.hidden_size, num_layers=self.num_layers, num_heads=self.num_heads,
                intermediate_size=self.intermediate_size,
                max_position_embeddings=self.max_position_embeddings))
        return Path(self.bert_init).expanduser() if self.bert_init else None

    def tokenizer_dir(self) -> Path | None:
        """Where the text side's ``vocab.txt`` is read: the BERT directory, else a checkpoint directory."""
        if not self.text_side:
            return None
        return self.bert_directory() or Path(self.checkpoint or "").expanduser()

    def required_paths(self) -> list[RequiredPath]:
        """What ``validate`` checks exists (:mod:`pgmm_core.config.files`)."""
        paths = []
        if self.checkpoint:
            paths.append(RequiredPath(Path(self.checkpoint).expanduser(), "path",
                                      "Q-Former weights: blip2_pretrained.pth of LAVIS", "checkpoint"))
        if self.bert_init:
            root = Path(self.bert_init).expanduser()
            paths.append(RequiredPath(root, "directory", f"a bert-base-uncased checkpoint ({BERT_URL})", "bert_init"))
            if not (root / "pytorch_model.bin").is_file() and not (root / "model.safetensors.index.json").is_file():
                paths.append(RequiredPath(root / "model.safetensors", "file", f"BERT's weights ({BERT_URL})",
                                          "bert_init"))
        tokenizer = None if self.tiny_bert else self.tokenizer_dir()  # the tiny BERT is made on first use
        if tokenizer is not None:
            field = "bert_init" if self.bert_init else "checkpoint"
            paths.append(RequiredPath(tokenizer / "vocab.txt", "file", f"BERT's tokenizer ({BERT_URL})", field))
        return paths


class LinearProjectorConfig(ComponentConfig):
    type: Literal["linear"] = "linear"


MLP_GELU_NAMES = ("mlp2x_gelu", "mlp3x_gelu", "mlp4x_gelu", "mlp5x_gelu", "mlp6x_gelu")


class MlpGeluProjectorConfig(ComponentConfig):
    """LLaVA's ``mlp{N}x_gelu``: N Linear layers with GELU between them; ``mlp2x_gelu`` is the seed's."""

    type: Literal["mlp2x_gelu", "mlp3x_gelu", "mlp4x_gelu", "mlp5x_gelu", "mlp6x_gelu"] = "mlp2x_gelu"

    @property
    def depth(self) -> int:
        return int(self.type[3:].split("x", 1)[0])


class IdentityProjectorConfig(ComponentConfig):
    type: Literal["identity"] = "identity"
