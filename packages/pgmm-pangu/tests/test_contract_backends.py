"""pgmm-pangu's LLM backends checked through the contract plugin authors use."""

from __future__ import annotations

import pytest

from pgmm_core.testing.contracts import LLMBackendContract

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1,
        "vocab_size": 512}


class TestTinyOpenPangu(LLMBackendContract):
    component = "tiny_openpangu"
    distribution = "pgmm-pangu"
    config = TINY


class TestOpenPangu(LLMBackendContract):
    component = "openpangu"
    distribution = "pgmm-pangu"

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls, tmp_path_factory):
        from pgmm_pangu.make_tiny import TinySpec, write_tiny_checkpoint

        spec = TinySpec(**{k: v for k, v in TINY.items()})
        return {"path": str(write_tiny_checkpoint(tmp_path_factory.mktemp("openpangu"), spec))}


WORDS = "a red blue green circle square triangle in the top bottom left right center of image".split()


def write_gpt2_directory(directory):
    """A tiny GPT-2 (not Llama: the backend is for any transformers causal LM) with a word-level
    tokenizer, saved the way transformers saves models."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(0)

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials + WORDS)}
    words = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    config = GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=1, n_head=2, n_positions=128,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


class TestHfCausalLM(LLMBackendContract):
    component = "hf_causal_lm"
    distribution = "pgmm-pangu"

    @pytest.fixture(scope="class")
    @classmethod
    def component_fields(cls, tmp_path_factory):
        return {"path": str(write_gpt2_directory(tmp_path_factory.mktemp("gpt2")))}
