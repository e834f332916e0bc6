"""Write a random-weight tiny checkpoint in exactly the openPangu-Embedded release layout.

    python -m pgmm_pangu.make_tiny OUT_DIR [--layers 2 --hidden 64 --heads 4 --kv-heads 2
                                            --intermediate 160 --vocab-size 512 --vocab-from CORPUS]

With ``--pretrain-steps N`` the random model is first trained for N steps as a causal LM on the
corpus, so that it can stand in for a *pretrained* frozen LLM in demos. The directory holds what
the release holds: ``config.json`` (``model_type: PanguEmbedded``,
``bias: true``, ``auto_map``), two safetensors shards with ``model.safetensors.index.json``
(including the per-layer ``rotary_emb.inv_freq`` entries the release lists), a SentencePiece
``tokenizer.model`` trained on a caption corpus with openPangu's special tokens (``[unused0..33]``,
``<|User|>:``, ``<|Bot|>:``), ``tokenizer_config.json``, ``special_tokens_map.json`` and
``generation_config.json``. Tests and the demo load it through the same code as the real model.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

from pgmm_pangu.tokenizer import DEFAULT_CHAT_TEMPLATE

SPECIAL_SYMBOLS = ["<|User|>:", "<|Bot|>:"] + [f"[unused{i}]" for i in range(34)]
COMPLETE_MARKER = "model.safetensors.index.json"
FORMAT_VERSION = 3  # bump when the files written for a given TinySpec change

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TinySpec:
    hidden_size: int = 64
    intermediate_size: int = 160
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    vocab_size: int = 512
    seed: int = 0
    pretrain_steps: int = 0

    def key(self) -> str:
        """Cache key: the sizes plus the maker's format version (a changed maker never reuses old files)."""
        described = asdict(self) | {"format": FORMAT_VERSION}
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]


def default_corpus() -> list[str]:
    """Caption-like English sentences (objects, colours, sizes, places) plus a few Chinese lines."""
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "pink", "brown", "gray"]
    shapes = ["circle", "square", "triangle", "star", "cross", "diamond", "rectangle", "ring"]
    places = ["in the top left", "in the top right", "in the bottom left", "in the bottom right",
              "in the center", "at the top", "at the bottom", "on the left", "on the right"]
    sizes = ["small", "large", "big", "tiny"]
    lines = []
    for i, colour in enumerate(colours):
        for j, shape in enumerate(shapes):
            place = places[(i + j) % len(places)]
            size = sizes[(i * 3 + j) % len(sizes)]
            lines.append(f"a {size} {colour} {shape} {place}")
            lines.append(f"a {colour} {shape} {place} of the image")
            lines.append(f"there is a {colour} {shape} {place}")
    lines += [
        "a man riding a bike down a city street",
        "two dogs playing with a ball in the grass",
        "a plate of food with rice and vegetables",
        "a group of people standing on a beach",
        "a cat sitting on top of a wooden table",
        "an airplane flying in the blue sky",
        "一只猫坐在桌子上", "一个红色的圆形在图片的左上角", "你好，世界", "系统 用户 助手",
    ]
    return lines


def train_tokenizer(lines: list[str], vocab_size: int) -> bytes:
    """A BPE SentencePiece model with byte fallback and openPangu's special symbols as user pieces.

    No normaliser and no whitespace folding, like the Llama-family models openPangu's tokenizer
    follows: text round-trips exactly.
    """
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        user_defined_symbols=SPECIAL_SYMBOLS,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        hard_vocab_limit=False,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        num_threads=1,
        minloglevel=2,
    )
    return buffer.getvalue()


def release_config(spec: TinySpec, vocab_size: int, eos_id: int) -> "OrderedDict[str, object]":
    """``config.json`` with the release's keys, in the release's order."""
    return OrderedDict([
        ("architectures", ["PanguEmbeddedForCausalLM"]),
        ("auto_map", {
            "AutoConfig": "configuration_openpangu_dense.PanguEmbeddedConfig",
            "AutoModel": "modeling_openpangu_dense.PanguEmbeddedModel",
            "AutoModelForCausalLM": "modeling_openpangu_dense.PanguEmbeddedForCausalLM",
        }),
        ("bias", True),
        ("attention_dropout", 0.0),
        ("bos_token_id", 1),
        ("pad_token_id", 0),
        ("eos_token_id", eos_id),
        ("hidden_act", "silu"),
        ("hidden_size", spec.hidden_size),
        ("initializer_range", 0.02),
        ("intermediate_size", spec.intermediate_size),
        ("max_position_embeddings", 32768),
        ("model_type", "PanguEmbedded"),
        ("num_attention_heads", spec.num_heads),
        ("num_hidden_layers", spec.num_layers),
        ("num_key_value_heads", spec.num_kv_heads),
        ("rms_norm_eps", 1e-05),
        ("rope_theta", 16000000.0),
        ("tie_word_embeddings", False),
        ("torch_dtype", "float32"),
        ("transformers_version", "4.53.2"),
        ("use_cache", True),
        ("vocab_size", vocab_size),
    ])


def tokenizer_config(added: dict[str, int]) -> dict[str, object]:
    decoder = {
        str(token_id): {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                        "single_word": False, "special": True}
        for content, token_id in sorted(added.items(), key=lambda kv: kv[1])
    }
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "add_prefix_space": True,
        "added_tokens_decoder": decoder,
        "auto_map": {"AutoTokenizer": ["tokenization_openpangu.PanguTokenizer", None]},
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "[unused10]",
        "legacy": True,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<unk>",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "PanguTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
        "chat_template": DEFAULT_CHAT_TEMPLATE,
    }


def _special_entry(content: str) -> dict[str, object]:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


def write_tiny_checkpoint(out_dir: str | Path, spec: TinySpec = TinySpec(), corpus: list[str] | None = None) -> Path:
    """Create the checkpoint directory (overwriting files of the same names)."""
    import sentencepiece as spm
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    from pgmm_pangu.checkpoint import llama_config_from_release

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_bytes = train_tokenizer(corpus or default_corpus(), spec.vocab_size)
    (out / "tokenizer.model").write_bytes(model_bytes)
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    added = {"<unk>": 0, "<s>": 1, "</s>": 2}
    added.update({symbol: sp.piece_to_id(symbol) for symbol in SPECIAL_SYMBOLS})
    vocab_size = sp.get_piece_size()
    config = release_config(spec, vocab_size, added["[unused10]"])
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(added), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    special_map = {"bos_token": _special_entry("<s>"), "eos_token": _special_entry("[unused10]"),
                   "pad_token": _special_entry("<unk>"), "unk_token": _special_entry("<unk>")}
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n", encoding="utf-8")
    generation = {"_from_model_config": True, "do_sample": True, "bos_token_id": 1, "pad_token_id": 0,
                  "eos_token_id": added["[unused10]"], "temperature": 1.0, "top_k": 0, "top_p": 0.8,
                  "transformers_version": "4.53.2"}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")

    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(spec.seed)
        model = LlamaForCausalLM(llama_config_from_release(dict(config)))
        with torch.no_grad():  # non-zero biases and norm weights, so that every parameter matters
            for name, param in model.named_parameters():
                if name.endswith(".bias"):
                    param.normal_(0.0, 0.02)
                elif "norm" in name:
                    param.normal_(1.0, 0.1)
        if spec.pretrain_steps:
            pretrain_on_corpus(model, out, corpus or default_corpus(), spec)
    finally:
        torch.random.set_rng_state(generator_state)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    head_dim = spec.hidden_size // spec.num_heads
    inv_freq = 1.0 / (16000000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    for layer in range(spec.num_layers):
        state[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
    keys = sorted(state)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    weight_map = {}
    total = 0
    for name, shard_keys in shards.items():
        save_file({k: state[k] for k in shard_keys}, str(out / name), metadata={"format": "pt"})
        for k in shard_keys:
            weight_map[k] = name
            total += state[k].numel() * state[k].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / COMPLETE_MARKER).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return out


def pretrain_on_corpus(model, directory: Path, corpus: list[str], spec: TinySpec) -> None:
    """Teach the tiny model the corpus as a causal LM, deterministically, with context to read.

    Stage 2 freezes the LLM and only learns to *condition* it on images through a few prefix
    tokens, which presumes a model that speaks the caption language and uses what precedes it (a
    large LLM does both). A tiny random model does neither, and one trained on bare sentences
    ignores any prefix: even ideal prefix embeddings then cannot steer the words that matter.
    So half of the sentences come with some of their own words, shuffled, before BOS
    (``square red left <s> a red square on the left </s>``), only the sentence being supervised.
    """
    import random

    import torch

    from pgmm_pangu.tokenizer import PanguTokenizer

    tokenizer = PanguTokenizer(directory)
    rng = random.Random(spec.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    from tqdm.auto import tqdm

    # a bar on a terminal only (tqdm's ``disable=None``): logs and test output stay clean
    for _ in tqdm(range(spec.pretrain_steps), desc="tiny openPangu: pretraining", unit="step",
                  disable=None, leave=False, dynamic_ncols=True):
        rows, starts = [], []
        for line in (corpus[rng.randrange(len(corpus))] for _ in range(32)):
            hint: list[int] = []
            if rng.random() < 0.5:
                words = line.split()
                rng.shuffle(words)
                hint = tokenizer.encode(" ".join(words[: rng.randint(1, len(words))]), add_bos=False)
            rows.append(hint + tokenizer.encode(line) + [tokenizer.eos_token_id])
            starts.append(len(hint) + 1)  # supervise the sentence after BOS, not the hint
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), length), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, (row, start) in enumerate(zip(rows, starts)):
            ids[i, : len(row)] = torch.tensor(row)
            labels[i, start : len(row)] = torch.tensor(row[start:])
            mask[i, : len(row)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()


def ensure_tiny_checkpoint(spec: TinySpec, path: str | None = None) -> Path:
    """The tiny checkpoint at ``path`` (default: the pgmm cache), created once, atomically
    (:func:`pgmm_core.files.make_directory_once`: several ranks may ask at the same time)."""
    from pgmm_core.files import cache_dir, make_directory_once

    target = Path(path).expanduser() if path else cache_dir() / f"tiny-openpangu-{spec.key()}"
    if (target / COMPLETE_MARKER).is_file():
        return target
    logger.info("creating the tiny openPangu checkpoint once (SentencePiece tokenizer, then %d pretraining "
                "steps; about a minute on 2 cores) in %s — later runs reuse it (PGMM_CACHE_DIR moves "
                "the cache)", spec.pretrain_steps, target)
    started = time.perf_counter()
    make_directory_once(target, lambda scratch: write_tiny_checkpoint(scratch, spec), marker=COMPLETE_MARKER)
    logger.info("tiny openPangu checkpoint ready in %s (%.0f s)", target, time.perf_counter() - started)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgmm_pangu.make_tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--layers", type=int, default=TinySpec.num_layers)
    parser.add_argument("--hidden", type=int, default=TinySpec.hidden_size)
    parser.add_argument("--intermediate", type=int, default=TinySpec.intermediate_size)
    parser.add_argument("--heads", type=int, default=TinySpec.num_heads)
    parser.add_argument("--kv-heads", type=int, default=TinySpec.num_kv_heads)
    parser.add_argument("--vocab-size", type=int, default=TinySpec.vocab_size)
    parser.add_argument("--vocab-from", help="text file, one sentence per line, to train the tokenizer on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-steps", type=int, default=0,
                        help="train the tiny LM on the corpus for this many steps (0: random weights)")
    args = parser.parse_args(argv)
    corpus = None
    if args.vocab_from:
        lines = Path(args.vocab_from).read_text(encoding="utf-8").splitlines()
        corpus = [line.strip() for line in lines if line.strip()]
    spec = TinySpec(args.hidden, args.intermediate, args.layers, args.heads, args.kv_heads, args.vocab_size,
                    args.seed, args.pretrain_steps)
    out = write_tiny_checkpoint(args.out_dir, spec, corpus)
    print(f"wrote tiny openPangu checkpoint to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
