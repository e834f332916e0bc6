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


# --- stage 1: the qformer_pretrain objective on the tiny model ---------------------------------------

STAGE1_TOWER = {"type": "eva_vit_g", "image_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2,
                "mlp_dim": 64}
STAGE1_QFORMER = {"type": "qformer", "num_query_tokens": 4, "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                  "intermediate_size": 64, "text_side": True, "max_text_len": 12, "embed_dim": 8,
                  "max_position_embeddings": 16}


@pytest.fixture(scope="session")
def stage1_files(tmp_path_factory):
    """A BERT directory at the tiny Q-Former's size and a small COCO retrieval tree (train and val)."""
    from pgmm_data.testing import write_coco_tree

    root = tmp_path_factory.mktemp("stage1")
    bert = write_bert_dir(root / "bert", hidden=32, layers=2, heads=2, ffn=64, vocab_size=99, max_positions=16)
    coco = write_coco_tree(root / "coco", train=4, val=3, test=1, size=(40, 32), ground_truth=False).root
    return {"bert": bert, "coco": coco}


@pytest.fixture(scope="session")
def stage1_config(stage1_files):
    """``stage1_config(output_dir, **objective)``: the tiny config (dict) with the ``qformer_pretrain``
    objective: a tiny EVA and the text-side Q-Former, no projector and no LLM, COCO retrieval data."""
    from pgmm_core.testing import tiny_config

    def make(output_dir, **objective):
        data = tiny_config(output_dir)
        data["model"] = {"vision": dict(STAGE1_TOWER),
                         "connector": {**STAGE1_QFORMER, "bert_init": str(stage1_files["bert"])}}
        coco = {"type": "coco_retrieval", "root": str(stage1_files["coco"])}
        data["data"].update(train=[coco], val=[dict(coco)], batch_size=4)
        data["objective"] = {"type": "qformer_pretrain", **objective}
        return data

    return make
