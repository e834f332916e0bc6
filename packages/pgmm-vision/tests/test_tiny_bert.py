"""The tiny BERT is a bert-base-uncased directory in miniature: transformers reads it as it reads the
real download, its vocabulary spells any lowercase word without [UNK], and it is created once."""

from __future__ import annotations

from pgmm_vision.stage1.tiny_bert import TinyBertSpec, ensure_tiny_bert, vocabulary


def test_tiny_bert_reads_like_bert_base_uncased(tmp_path):
    from safetensors import safe_open
    from transformers import BertForMaskedLM, BertTokenizer

    spec = TinyBertSpec(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=48)
    path = ensure_tiny_bert(spec, tmp_path / "bert")
    tokenizer = BertTokenizer.from_pretrained(str(path), local_files_only=True)
    tokens = tokenizer.tokenize("A Zebra sits on the TOP left, quietly")
    assert "[UNK]" not in tokens and tokens[:2] == ["a", "z"]  # lower-cased, spelled from letters
    assert tokenizer.convert_tokens_to_ids(["[PAD]", "[CLS]", "[SEP]"]) == [0, 2, 3]
    with safe_open(str(path / "model.safetensors"), "pt") as weights:
        keys = set(weights.keys())
    assert {"bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.attention.self.query.weight",
            "cls.predictions.transform.dense.weight", "cls.predictions.bias"} <= keys
    model = BertForMaskedLM.from_pretrained(str(path), local_files_only=True)
    assert model.config.vocab_size == len(vocabulary()) and model.config.hidden_size == 32
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_bert(spec, tmp_path / "bert") == path  # reused, not rewritten
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_connector_starts_from_the_tiny_bert_of_its_own_sizes(tmp_path):
    import pytest

    from pgmm_core.errors import ConfigError
    from pgmm_core.plugins import PluginHost
    from pgmm_core.testing import tiny_config
    from pgmm_core.config.loading import validate_config
    from pgmm_core.model import build_model

    data = tiny_config(tmp_path / "run")
    data["model"]["connector"].update({"text_side": True, "tiny_bert": True, "max_position_embeddings": 40})
    config = validate_config(data, PluginHost())
    model = build_model(config, {"vision", "connector"})
    connector = model.connector
    assert len(connector.tokenizer) == len(vocabulary()) + 1  # + [DEC]
    assert "[UNK]" not in connector.tokenizer.tokenize("a purple zigzag at the bottom right")
    data["model"]["connector"]["bert_init"] = str(tmp_path)
    with pytest.raises(ConfigError, match="bert_init and tiny_bert both given"):
        validate_config(data, PluginHost())
