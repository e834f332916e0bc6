"""The fixed parts of a pgmm configuration.

Component slots (``model.vision``, ``data.train[]``, ``device``, ...) are added when the root model is
assembled from the installed plugins (:mod:`pgmm_core.config.assemble`); everything here is the same
for every installation. Defaults follow the LAVIS BLIP-2 stage-2 recipe.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictModel(BaseModel):
    """Base of every pgmm config model: unknown keys are errors, values are JSON-native."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


class ComponentConfig(StrictModel):
    """Base class for component configs contributed by plugins.

    Subclasses declare ``type: Literal["<name>"] = "<name>"`` and their own fields, using only
    JSON-native types (numbers, strings, lists, nested models): configs are written to and read from
    ``config.json`` in every run directory.
    """


MODEL_PARTS = frozenset({"vision", "connector", "projector", "llm"})
"""The parts :func:`pgmm_core.build_model` can build; an objective's ``parts`` is a subset."""


class ObjectiveConfig(ComponentConfig):
    """Base of objective configs. ``parts`` (a class attribute, not a config field) names the model
    parts the objective trains with: ``model.<part>`` must then be configured, and the others may be
    left out (an image-side objective such as Q-Former pretraining needs no ``model.llm``)."""

    parts: ClassVar[frozenset[str]] = MODEL_PARTS

    def config_problems(self, config: Any) -> list[str]:
        """Problems of the whole validated run config for this objective, one line each naming the
        config path (checked by ``validate`` and before training); none by default. Override it for
        checks that span sections, e.g. a batch size the loss cannot use."""
        return []


def objective_parts(config: Any) -> frozenset[str]:
    """The model parts the config's objective needs (all four for an objective config that does not
    extend :class:`ObjectiveConfig`)."""
    return frozenset(getattr(type(config.objective), "parts", MODEL_PARTS))


class ModelSection(StrictModel):
    """``model``: how the multimodal model is assembled (component slots are added at assembly)."""

    prompt: str = Field("", description="Text placed before every caption, in training and generation.")
    max_text_len: int = Field(32, gt=0, description="Caption tokens kept (LAVIS max_txt_len).")


class GenerationSection(StrictModel):
    """``eval.generation``: decoding settings, always passed explicitly to the LLM backend."""

    num_beams: int = Field(5, ge=1)
    max_new_tokens: int = Field(30, ge=1)
    min_new_tokens: int = Field(8, ge=0)
    do_sample: bool = False
    top_p: float = Field(0.9, gt=0, le=1)
    temperature: float = Field(1.0, gt=0)
    repetition_penalty: float = Field(1.0, gt=0)
    length_penalty: float = 1.0
    num_return_sequences: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check_lengths(self) -> GenerationSection:
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError("min_new_tokens must not exceed max_new_tokens")
        if self.num_return_sequences > self.num_beams and not self.do_sample:
            raise ValueError("num_return_sequences must not exceed num_beams for beam search")
        return self


class EvalSection(StrictModel):
    """``eval``: captioning evaluation on ``data.val`` / ``data.test``."""

    generation: GenerationSection = Field(default_factory=GenerationSection)
    max_images: int | None = Field(None, gt=0, description="Evaluate on at most this many images.")
    java: str = Field("java", description="Java executable for the PTB tokenizer and METEOR.")


class DataSection(StrictModel):
    """``data``: datasets are added at assembly (``train``, ``val``, ``test`` lists)."""

    batch_size: int = Field(16, gt=0, description="Per-device training batch size.")
    eval_batch_size: int | None = Field(None, gt=0)
    num_workers: int = Field(4, ge=0)
    train_weights: list[float] | None = Field(
        None, description="Sample train datasets by these weights instead of concatenating them."
    )
    max_bad_fraction: float = Field(
        0.01, ge=0, le=1, description="Stop when more than this fraction of images are unreadable."
    )

    @model_validator(mode="after")
    def _check_weights(self) -> DataSection:
        if self.train_weights is not None and any(w <= 0 for w in self.train_weights):
            raise ValueError("train_weights must all be positive")
        return self


class TrainSection(StrictModel):
    """``train``: the optimisation recipe and where the run lives."""

    epochs: int = Field(10, ge=1)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate (LAVIS init_lr).")
    min_lr: float = Field(1e-5, ge=0)
    warmup_lr: float = Field(1e-6, ge=0)
    warmup_steps: int = Field(2000, ge=0)
    schedule: Literal["linear_warmup_cosine", "cosine", "constant"] = Field(
        "linear_warmup_cosine",
        description="linear_warmup_cosine: LAVIS (warmup in epoch 0, cosine per epoch); "
        "cosine: warmup then cosine per step; constant: warmup then constant.",
    )
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    accum_steps: int = Field(1, ge=1)
    loss_normalization: Literal["mean", "token"] = Field(
        "mean",
        description="mean: each micro-batch's mean loss / accum_steps, averaged over ranks (LAVIS); "
        "token: the sum over every target token of the step / the step's target count over all "
        "micro-batches and ranks (long and short captions weigh by their length).",
    )
    grad_clip: float | None = Field(None, gt=0)
    max_nonfinite_steps: int = Field(
        10, ge=1,
        description="Stop after this many consecutive optimizer steps with a non-finite loss or gradient "
        "norm (each such step is skipped: no weight or optimizer-state change).",
    )
    seed: int = 42
    output_dir: str = Field("runs/stage2", min_length=1)
    log_every: int = Field(10, ge=1)
    eval_every: int | None = Field(None, ge=1, description="Evaluate every N steps (default: each epoch).")
    save_every: int | None = Field(None, ge=1, description="Checkpoint every N steps (default: each epoch).")
    keep_last: int = Field(2, ge=1)
    best_metric: str = Field(
        "CIDEr+Bleu_4",
        description="Sum of metric names (from the objective's evaluation) that picks the best checkpoint; "
        "when an evaluation lacks a metric it names, a warning names the metrics reported and no best "
        "checkpoint is tracked.",
    )
    best_mode: Literal["max", "min"] = Field(
        "max",
        description="max: the highest best_metric is best (scores such as CIDEr); min: the lowest is "
        "(errors and losses such as mse).",
    )
    tensorboard: bool = True
