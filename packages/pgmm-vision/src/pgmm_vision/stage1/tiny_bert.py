"""A random-weight tiny BERT in exactly the bert-base-uncased directory layout, for demos and tests.

Stage 1 starts its Q-Former from a BERT checkpoint directory (``config.json``, ``vocab.txt``,
``model.safetensors``) and tokenizes captions with that directory's WordPiece vocabulary. The
tiny CPU demo cannot download bert-base-uncased, so it writes a small one: BERT's special tokens,
every lowercase letter and digit (alone and as a ``##`` continuation, so any English word
tokenizes without ``[UNK]``), and whole words for caption-like English. The weights are
``BertForMaskedLM``'s random initialisation (seeded), saved as transformers saves them, so the
same loader reads this directory and a real download.

    python -m pgmm_vision.stage1.tiny_bert OUT_DIR [--hidden 64 --layers 2 --heads 4 --intermediate 128]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import string
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
COMPLETE_MARKER = "model.safetensors"  # written last: a directory holding it is complete

WORDS = (
    "a an the of in on at to with and or is are there this that it its image picture photo",
    "top bottom left right center middle corner side above below next near",
    "red green blue yellow purple orange white black pink brown gray grey",
    "circle square triangle star cross diamond rectangle ring shape shapes",
    "small large big tiny one two three man woman person people dog cat bike street table",
    "sitting standing riding playing flying plate food ball grass beach sky city wooden",
)


@dataclass(frozen=True)
class TinyBertSpec:
    """Sizes of the tiny BERT (the vocabulary is fixed: :func:`vocabulary`)."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    max_position_embeddings: int = 64
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({**asdict(self), "vocab": vocabulary()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def vocabulary() -> list[str]:
    """Special tokens, punctuation, letters and digits (whole and ``##``), then the caption words."""
    tokens = list(SPECIAL_TOKENS)
    pieces = list(string.ascii_lowercase + string.digits)
    tokens += list(".,!?'\"-:;()")
    tokens += pieces + [f"##{p}" for p in pieces]
    for line in WORDS:
        tokens += [w for w in line.split() if w not in tokens]
    return tokens


def bert_config(spec: TinyBertSpec, vocab_size: int) -> dict[str, object]:
    """bert-base-uncased's ``config.json`` with the tiny sizes."""
    return {
        "architectures": ["BertForMaskedLM"], "model_type": "bert", "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": spec.hidden_size,
        "initializer_range": 0.02, "intermediate_size": spec.intermediate_size, "layer_norm_eps": 1e-12,
        "max_position_embeddings": spec.max_position_embeddings, "num_attention_heads": spec.num_heads,
        "num_hidden_layers": spec.num_layers, "pad_token_id": 0, "position_embedding_type": "absolute",
        "type_vocab_size": 2, "vocab_size": vocab_size,
    }


def write_tiny_bert(out_dir: str | Path, spec: TinyBertSpec = TinyBertSpec()) -> Path:
    """Write ``config.json``, ``vocab.txt``, ``tokenizer_config.json`` and ``model.safetensors``."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertForMaskedLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokens = vocabulary()
    (out / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}) + "\n", encoding="utf-8")
    config = bert_config(spec, len(tokens))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    torch.manual_seed(spec.seed)
    model = BertForMaskedLM(BertConfig(**config))
    # as transformers saves it: the LM decoder is tied to the word embeddings and not stored
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("cls.predictions.decoder.")}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def ensure_tiny_bert(spec: TinyBertSpec = TinyBertSpec(), path: str | Path | None = None) -> Path:
    """The tiny BERT directory at ``path`` (default: the pgmm cache), created once, atomically
    (:func:`pgmm_core.files.make_directory_once`: several ranks may ask at the same time)."""
    from pgmm_core.files import cache_dir, make_directory_once

    target = Path(path).expanduser() if path else cache_dir() / f"tiny-bert-{spec.key()}"
    if not (target / COMPLETE_MARKER).is_file():
        logger.info("creating the tiny BERT once in %s (later runs reuse it; PGMM_CACHE_DIR moves the cache)",
                    target)
        make_directory_once(target, lambda scratch: write_tiny_bert(scratch, spec), marker=COMPLETE_MARKER)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgmm_vision.stage1.tiny_bert",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=128)
    args = parser.parse_args(argv)
    spec = TinyBertSpec(args.hidden, args.layers, args.heads, args.intermediate)
    print(write_tiny_bert(args.out_dir, spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
