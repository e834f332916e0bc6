"""pgmm-pangu: the openPangu-Embedded LLM backend, its tokenizer, and a generic HF causal-LM backend."""

__version__ = "0.1.0"
