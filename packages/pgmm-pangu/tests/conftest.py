"""Shared fixtures: the reference goldens, the golden tiny checkpoint, a make_tiny checkpoint.

The goldens (``data/``, see ``data/README.md``) were produced by the openPangu release's own code; the
SentencePiece model they used is the Mistral v1 ``tokenizer.model`` shipped inside the
``mistral-common`` wheel (a test dependency), read from there rather than copied into this repository.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import resources
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
MISTRAL_SP_SHA256 = "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"


def mistral_tokenizer_model() -> Path:
    try:
        path = Path(str(resources.files("mistral_common") / "data" / "tokenizer.model.v1"))
    except ModuleNotFoundError:
        pytest.fail("the tokenizer goldens need the `mistral-common` wheel: pip install 'pgmm-pangu[test]'")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == MISTRAL_SP_SHA256, f"{path} is not the SentencePiece model the goldens were made with"
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The release's tokenizer files around the Mistral SentencePiece model (as the goldens used)."""
    directory = tmp_path_factory.mktemp("pangu-tokenizer")
    shutil.copy(mistral_tokenizer_model(), directory / "tokenizer.model")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(DATA / "release" / name, directory / name)
    return directory


@pytest.fixture(scope="session")
def golden_model_dir(tmp_path_factory) -> Path:
    """``data/tiny_pangu_model`` completed with tokenizer files.

    Its config.json says ``eos_token_id: 2`` (``</s>``; the release's 45892 is beyond its 1000-token
    vocabulary) and the goldens generated with eos 2, so the tokenizer's EOS is set to ``</s>`` here
    to agree with it; everything else is the release's tokenizer_config.json.
    """
    directory = tmp_path_factory.mktemp("pangu-golden")
    for path in (DATA / "tiny_pangu_model").iterdir():
        shutil.copy(path, directory / path.name)
    shutil.copy(mistral_tokenizer_model(), directory / "tokenizer.model")
    tok_config = json.loads((DATA / "release" / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok_config["eos_token"] = "</s>"
    (directory / "tokenizer_config.json").write_text(json.dumps(tok_config, ensure_ascii=False), encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def goldens() -> dict:
    from safetensors.torch import load_file

    return load_file(str(DATA / "model_goldens.safetensors"))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A make_tiny checkpoint (own SentencePiece vocabulary, EOS ``[unused10]`` inside it)."""
    from pgmm_pangu.make_tiny import TinySpec, write_tiny_checkpoint

    spec = TinySpec(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1)
    return write_tiny_checkpoint(tmp_path_factory.mktemp("pangu-tiny"), spec)
