"""LoRA adapters on the frozen LLM, through peft (``model.llm.lora``).

Adapters are put into transformers' ``LlamaForCausalLM`` *in place* with
``peft.inject_adapter_in_model`` rather than wrapping it in a ``PeftModel`` (``get_peft_model``):
the backend keeps driving the same model object (``get_decoder()``, ``get_output_embeddings()``,
``generate``), and parameter names only gain peft's own infixes
(``llm.model.model.layers.0.self_attn.q_proj.base_layer.weight`` for the frozen weight,
``….q_proj.lora_A.default.weight`` / ``lora_B`` for the adapter) instead of a
``base_model.model.`` prefix in front of every name. Freezing stays pgmm's: ``build_model`` froze
and fingerprinted the LLM before the adapters are added (:meth:`CausalLMBackend.add_adapters`), so
the frozen-weights fingerprint describes the base weights alone, exactly as without LoRA.

Adapter dtype: float32 always, whatever the LLM is stored in. Adapters are trained parameters, and
pgmm keeps every trained parameter in float32 for its optimizer (AdamW updates of a bf16 weight lose
most of their bits); under the bf16 policy the base stays bf16 and autocast runs the adapters' matmuls
in bf16, under the fp32 (Ascend) policy everything is float32. peft casts a layer's input to the
adapter's dtype and the sum back to the base layer's output dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from pgmm_core.errors import ConfigError

ADAPTER_NAME = "default"  # peft's; appears in parameter names (lora_A.default.weight)
ADAPTER_MARKERS = (".lora_A.", ".lora_B.")

logger = logging.getLogger(__name__)


class TrainingDropout(nn.Module):
    """Dropout that is active whenever gradients are enabled, whatever the module's mode.

    A frozen LLM stays in eval mode for good (``pgmm_core.components.freeze``), so ``nn.Dropout``
    inside it would never drop; its adapters still train, and dropout on their input is part of the
    LoRA recipe. Evaluation and generation run under ``no_grad``: no dropout there.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(x, self.p, training=torch.is_grad_enabled())

    def extra_repr(self) -> str:
        return f"p={self.p}"


def peft_config(settings: Any) -> Any:
    """``peft.LoraConfig`` from ``model.llm.lora`` (no bias adapters, plain LoRA initialisation:
    ``A`` Kaiming-uniform, ``B`` zero, so a fresh adapter changes nothing)."""
    from peft import LoraConfig

    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.target_modules), bias="none")


def add_lora(model: nn.Module, settings: Any) -> int:
    """Put adapters into ``model`` (in place); returns the number of adapter parameters.

    Only adapter parameters have ``requires_grad``; everything else keeps its flag (frozen).
    """
    from peft import inject_adapter_in_model

    try:
        inject_adapter_in_model(peft_config(settings), model, adapter_name=ADAPTER_NAME)
    except ValueError as exc:
        names = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ConfigError([
            f"model.llm.lora.target_modules: {list(settings.target_modules)} match no layer of the LLM "
            f"({exc}); its Linear layers are named {', '.join(names)}"
        ]) from None
    count = 0
    for name, param in model.named_parameters():
        if is_adapter_name(name):
            param.data = param.data.float()
            param.requires_grad_(True)
            count += param.numel()
    for layer in lora_layers(model):
        for key, dropout in list(layer.lora_dropout.items()):
            if isinstance(dropout, nn.Dropout):
                layer.lora_dropout[key] = TrainingDropout(dropout.p)
    logger.info("LoRA: %d adapted layers, %d adapter parameters (rank %d, alpha %g)",
                sum(1 for _ in lora_layers(model)), count, settings.rank, settings.alpha)
    return count


def is_adapter_name(name: str) -> bool:
    return any(marker in f".{name}" for marker in ADAPTER_MARKERS)


def lora_layers(model: nn.Module) -> Iterator[Any]:
    """peft's LoRA layers inside ``model``."""
    from peft.tuners.lora import LoraLayer

    return (module for module in model.modules() if isinstance(module, LoraLayer))


def has_lora(model: nn.Module) -> bool:
    return next(lora_layers(model), None) is not None


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (``W + alpha/r * B A``) and put the plain layer back,
    so that ``model``'s state dict has the original layout's names again. In place; returns ``model``.
    """
    from peft.tuners.lora import LoraLayer

    targets = [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    for name in targets:
        layer = model.get_submodule(name)
        layer.merge(safe_merge=True, adapter_names=[ADAPTER_NAME])  # refuses NaN/inf merged weights
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer.get_base_layer())
    return model
