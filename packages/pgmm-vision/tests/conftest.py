"""Fixtures for pgmm-vision's tests: a plugin host, the LAVIS goldens, LAVIS-format files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pgmm_core.plugins import PluginHost

DATA = Path(__file__).parent / "data"
SMALL_CHECKPOINT = DATA / "small_blip2.pth"


@pytest.fixture(scope="session")
def host():
    return PluginHost(environ={})


@pytest.fixture(scope="session")
def small_meta():
    meta = json.loads((DATA / "small_case.json").read_text())
    meta["data_dir"] = str(DATA)
    return meta


@pytest.fixture(scope="session")
def small_io():
    from safetensors.torch import load_file

    return load_file(str(DATA / "small_io.safetensors"))


@pytest.fixture
def lavis_state():
    """The small case's LAVIS state dict (a fresh copy per test, safe to edit)."""
    return dict(torch.load(str(SMALL_CHECKPOINT), map_location="cpu", weights_only=True)["model"])


@pytest.fixture(scope="session")
def build(host):
    """``build(kind, config_dict, **context)``: a component through the registry, as build_model does."""

    def make(kind, data, **context):
        spec = host.registry(kind).get(data["type"])
        return spec.build(spec.config_model(**data), **context)

    return make


@pytest.fixture
def save_lavis(tmp_path):
    """``save_lavis(state, name="ckpt.pth", **extra)``: a file in LAVIS' ``_save_checkpoint`` layout,
    ``{"model": state_dict, ...}``."""

    def save(state, name="ckpt.pth", **extra):
        path = tmp_path / name
        torch.save({"model": state, **extra}, str(path))
        return path

    return save


@pytest.fixture(scope="session")
def small_checkpoint():
    return SMALL_CHECKPOINT


# --- stage 1: a tiny BERT directory in the bert-base-uncased layout -------------------------------------

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_WORDS = ("a an the of on in with and is are to at two dog dogs cat cats man woman people person red blue "
              "green white black small large big sitting standing running walking playing eating holding "
              "table field street grass water beach car bus train bike ball frisbee plate pizza food room "
              "kitchen bed window tree sky snow boy girl child group horse bird sheep cow shirt hat next near "
              "front top down up over under three young old ##s ##ing ##ed , .").split()


def write_bert_dir(root: Path, *, hidden: int, layers: int, heads: int, ffn: int, vocab_size: int,
                   max_positions: int, seed: int = 0) -> Path:
    """A BERT checkpoint directory as bert-base-uncased ships it (config.json, vocab.txt,
    model.safetensors written by transformers), at a small size; ``vocab_size`` words."""
    from transformers import BertConfig, BertForMaskedLM

    words = BERT_SPECIALS + BERT_WORDS
    words += [f"w{i}" for i in range(vocab_size - len(words))]
    assert len(words) == vocab_size
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    BertForMaskedLM(BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                               intermediate_size=ffn, vocab_size=vocab_size,
                               max_position_embeddings=max_positions)).save_pretrained(str(root))
    (root / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def bert_writer():
    """:func:`write_bert_dir`, for tests and contract classes (test modules cannot import conftest)."""
    return write_bert_dir


@pytest.fixture(scope="session")
def small_bert_dir(tmp_path_factory, small_meta):
    """A BERT of the small case's Q-Former size with 99 words: with [DEC], the 100 rows of
    small_blip2.pth's word embeddings."""
    q = small_meta["qformer"]
    return write_bert_dir(tmp_path_factory.mktemp("bert") / "bert-small", hidden=q["hidden_size"],
                          layers=q["num_layers"], heads=q["num_heads"], ffn=q["intermediate_size"],
                          vocab_size=99, max_positions=32)


@pytest.fixture(scope="session")
def text_side_config(small_meta, small_bert_dir):
    """``text_side_config(checkpoint=None, **fields)``: the small case's Q-Former with its text side."""
    from pgmm_vision.parity import component_configs

    def make(checkpoint=None, **fields):
        _, connector = component_configs(small_meta, checkpoint=str(checkpoint) if checkpoint else None)
        return {**connector, "text_side": True, "bert_init": str(small_bert_dir), "embed_dim": 16,
                "max_position_embeddings": 32, "max_text_len": 12, **fields}

    return make
