"""pgmm-pangu's plugin: registers its LLM backends (import-cheap)."""

from __future__ import annotations

from pgmm_core.hookspecs import hookimpl
from pgmm_pangu.configs import HfCausalLMConfig, OpenPanguConfig, TinyOpenPanguConfig


@hookimpl
def pgmm_register_llm_backends(registrar):
    registrar.add("openpangu", "pgmm_pangu.backend:build_openpangu", OpenPanguConfig,
                  description="openPangu-Embedded-7B release directory on transformers' Llama")
    registrar.add("tiny_openpangu", "pgmm_pangu.backend:build_tiny_openpangu", TinyOpenPanguConfig,
                  description="random tiny openPangu-layout checkpoint, created on first use (demos, tests)")
    registrar.add("hf_causal_lm", "pgmm_pangu.hf_backend:build_hf_causal_lm", HfCausalLMConfig,
                  description="any local transformers causal-LM directory")


@hookimpl
def pgmm_register_commands(registrar):
    registrar.add("export", help="write a run's LLM with its LoRA adapters merged, in the openPangu release layout",
                  configure="pgmm_pangu.command:configure", run="pgmm_pangu.command:run")
