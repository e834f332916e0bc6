"""make_tiny writes a checkpoint in exactly the openPangu release layout, loadable by the backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from pgmm_pangu.backend import build_openpangu
from pgmm_pangu.configs import OpenPanguConfig
from pgmm_pangu.make_tiny import main

RELEASE = Path(__file__).parent / "data" / "release"


def read(directory: Path, name: str) -> dict:
    return json.loads((directory / name).read_text(encoding="utf-8"))


def test_files_and_keys_are_the_release_ones(tiny_dir):
    assert sorted(p.name for p in tiny_dir.iterdir()) == [
        "config.json", "generation_config.json", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "model.safetensors.index.json", "special_tokens_map.json",
        "tokenizer.model", "tokenizer_config.json"]
    config, release = read(tiny_dir, "config.json"), read(RELEASE, "config.json")
    assert list(config) == list(release)  # same keys, same order
    for key in ("architectures", "auto_map", "bias", "model_type", "hidden_act", "rope_theta", "rms_norm_eps"):
        assert config[key] == release[key]
    assert read(tiny_dir, "special_tokens_map.json") == read(RELEASE, "special_tokens_map.json")
    assert set(read(tiny_dir, "generation_config.json")) == set(read(RELEASE, "generation_config.json"))

    tok_config, release_tok = read(tiny_dir, "tokenizer_config.json"), read(RELEASE, "tokenizer_config.json")
    assert set(tok_config) == set(release_tok)
    assert {k: v for k, v in tok_config.items() if k != "added_tokens_decoder"} == \
        {k: v for k, v in release_tok.items() if k != "added_tokens_decoder"}
    contents = {entry["content"] for entry in tok_config["added_tokens_decoder"].values()}
    assert contents == {entry["content"] for entry in release_tok["added_tokens_decoder"].values()}
    eos_id = next(int(k) for k, v in tok_config["added_tokens_decoder"].items() if v["content"] == "[unused10]")
    assert config["eos_token_id"] == read(tiny_dir, "generation_config.json")["eos_token_id"] == eos_id


def test_index_lists_every_tensor_of_two_shards(tiny_dir):
    from safetensors import safe_open

    index = read(tiny_dir, "model.safetensors.index.json")
    assert set(index) == {"metadata", "weight_map"} and len(set(index["weight_map"].values())) == 2
    total, keys = 0, set()
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(str(tiny_dir / shard), framework="pt") as fh:
            assert fh.metadata() == {"format": "pt"}
            for key in fh.keys():
                assert index["weight_map"][key] == shard
                tensor = fh.get_tensor(key)
                total += tensor.numel() * tensor.element_size()
                keys.add(key)
    assert keys == set(index["weight_map"]) and index["metadata"]["total_size"] == total
    assert "model.layers.1.self_attn.rotary_emb.inv_freq" in keys  # listed by the release, ignored on load


def test_cli_with_corpus_and_sizes(tmp_path):
    corpus = tmp_path / "captions.txt"
    corpus.write_text("\n".join(["a zebra grazing near a giraffe", "一只斑马在吃草"] * 40), encoding="utf-8")
    assert main([str(tmp_path / "out"), "--layers", "1", "--hidden", "48", "--heads", "4", "--kv-heads", "2",
                 "--vocab-size", "400", "--vocab-from", str(corpus)]) == 0
    backend = build_openpangu(OpenPanguConfig(path=str(tmp_path / "out")))
    assert len(backend.model.model.layers) == 1 and backend.hidden_size == 48
    tok = backend.tokenizer
    assert tok.tokenize("zebra giraffe") == ["▁zebra", "▁giraffe"]  # learnt from the corpus
    assert tok.decode(tok.encode("一只斑马 [unused9]a zebra"), skip_special_tokens=True) == "一只斑马 [unused9]a zebra"
    assert backend.model.get_input_embeddings().weight.shape[0] == tok.vocab_size
    with torch.no_grad():
        assert backend.model(input_ids=torch.tensor([tok.encode("a zebra")])).logits.isfinite().all()


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "pgmm_pangu.make_tiny", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--vocab-from" in result.stdout and "--layers" in result.stdout


def test_first_creation_says_what_and_where(tmp_path, caplog):
    """The one-time creation (tokenizer + pretraining) is announced with its cache location, and a
    second call reuses the directory silently."""
    import logging

    from pgmm_pangu.make_tiny import TinySpec, ensure_tiny_checkpoint

    spec = TinySpec(hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                    vocab_size=512, pretrain_steps=2)
    with caplog.at_level(logging.INFO, logger="pgmm_pangu.make_tiny"):
        path = ensure_tiny_checkpoint(spec, str(tmp_path / "tiny"))
    messages = [r.getMessage() for r in caplog.records]
    assert any("creating the tiny openPangu checkpoint" in m and str(path) in m and "2 pretraining steps" in m
               for m in messages), messages
    assert any(m.startswith(f"tiny openPangu checkpoint ready in {path}") for m in messages), messages
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pgmm_pangu.make_tiny"):
        assert ensure_tiny_checkpoint(spec, str(tmp_path / "tiny")) == path
    assert not caplog.records
